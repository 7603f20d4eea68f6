"""SCIM 2.0 service provider per app (``/scim/v2/{app}``): joiners, movers and leavers pushed
by an IdP, translated statelessly into the app's LMS connector calls (see ``service.py``).

Libraries: ``scim2-models`` does all the SCIM work here: resources and their validation,
the filter parser (``ScimFilter``), PATCH application (``PatchOp.patch``, case-insensitive op
names, string booleans) and ``ScimPolicy`` for Entra's documented quirks. ``scim2-filter-parser``
was not used: it transpiles filters to SQL, which a translator over LMS APIs cannot use, and it
would be a second grammar for what scim2-models already parses. ``scim2-tester`` runs the
conformance checks in the tests.
"""
