"""IdP authority: an IdP vouches only for its own people.

Several IdPs may sign in to one app (two subsidiaries, a contractor IdP). Each of them signs
whatever it likes, so a valid signature only proves *which* IdP is speaking, not that the
person belongs to it. The e-mail address selects the LMS account (``match_by = "email"``), so
an IdP must not be able to assert an address in a domain another IdP owns: that would sign
its user in *as* the other IdP's employee.

:func:`vouch` is the one place this is enforced for sign-ins of both protocols; it runs in
``web/handlers.finish_login`` before any LMS call and before a session is issued. Subjects,
employee numbers, groups and roles are scoped by IdP elsewhere (``config_rules.check_rules`` refuses
ambiguous apps; ``policy.profile_for`` reads groups and roles only from trusted IdPs).
"""

from __future__ import annotations

from gateway.errors import IdpNotAuthoritative
from gateway.identity import Identity
from gateway.policy import normalise_email
from gateway.settings import OidcIdpSettings, SamlIdpSettings


def vouch(identity: Identity, idp: OidcIdpSettings | SamlIdpSettings) -> None:
    """Refuse ``identity`` unless its IdP (``idp``, its settings) is authoritative for it.

    With ``email_domains`` set, the e-mail's domain must be exactly one of them (compared
    lower-case; no suffix or subdomain matching: ``a@evil.example.com`` is not in
    ``example.com``) and an identity without a usable e-mail is refused. Without
    ``email_domains`` (allowed only for an IdP whose apps accept no other IdP) nothing is
    checked here. Raises :class:`IdpNotAuthoritative` (an AccessDenied, 403; the employee's
    page names no rule).
    """
    if not idp.email_domains:
        return
    email = normalise_email(identity.email)
    if email is None:
        raise IdpNotAuthoritative(
            f"IdP {identity.idp} sent no usable e-mail address and vouches only for "
            "e-mail domains (email_domains)"
        )
    domain = email.rpartition("@")[2]
    if domain not in idp.email_domains:
        # The domain is what the IdP asserted: printable (normalise_email refuses whitespace,
        # the front doors strip control characters) and capped, so it is safe in a log line.
        raise IdpNotAuthoritative(
            f"IdP {identity.idp} is not authoritative for e-mail domain {domain[:253]}"
        )
