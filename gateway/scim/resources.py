"""SCIM resources <-> the gateway's own types, and the discovery documents.

* An LMS account (:class:`LmsUser`) is shown as a SCIM ``User`` with the enterprise
  extension's ``employeeNumber``. Its SCIM ``id`` *is* the LMS user id: stable, reversible,
  and meaningful to an LMS administrator; nothing maps it anywhere else.
* A SCIM ``User`` sent by an IdP becomes an :class:`Identity` of that IdP, so the app's
  existing mapping (``policy.profile_for``) and trust rules apply as they do at sign-in.
* ``externalId`` is not kept: the LMS has no field for it and the gateway keeps no user
  database. A filter on it matches nothing (an IdP then matches by ``userName``).
"""

from __future__ import annotations

from typing import Any

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    Email,
    EnterpriseUser,
    ETag,
    Filter,
    Group,
    Meta,
    Name,
    Patch,
    Required,
    ResourceType,
    ResponseParameters,
    ScimPolicy,
    ServiceProviderConfig,
    Sort,
    User,
)

from gateway.connectors.base import LmsUser
from gateway.identity import Identity

ScimUser = User[EnterpriseUser]

# What the gateway tolerates from IdPs (their documented quirks): attributes it does not
# model (custom extensions, Okta's extra fields) are ignored, Entra's ``remove`` with a
# value and its ``replace`` on a filter that matches nothing are applied as Entra means them.
# PATCH op names are case-insensitive ("Replace") and "False"/"True" strings read as
# booleans in scim2-models itself.
POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)

MAX_PAGE = 100


def user_resource(user: LmsUser, base_url: str) -> Any:
    """The SCIM User for an LMS account (``base_url``: ``.../scim/v2/{app}``)."""
    resource = ScimUser(
        id=user.user_id,
        user_name=user.username,
        name=Name(given_name=user.first_name or None, family_name=user.last_name or None),
        display_name=" ".join(p for p in (user.first_name, user.last_name) if p) or None,
        emails=[Email(value=user.email, type=Email.Type.work, primary=True)]
        if user.email else None,
        active=user.active,
        meta=Meta(resource_type="User", location=f"{base_url}/Users/{user.user_id}"),
    )
    if user.employee_number:
        resource[EnterpriseUser] = EnterpriseUser(employee_number=user.employee_number)
    return resource


def dump(resource: Any, context: Context, params: Any = None) -> dict[str, Any]:
    """A resource as the JSON body of a response in ``context``; ``params``: the client's
    ``attributes``/``excludedAttributes`` (:func:`response_parameters`)."""
    result: dict[str, Any] = resource.model_dump(scim_ctx=context, scim_policy=POLICY,
                                                 response_parameters=params)
    return result


def response_parameters(query: Any) -> Any:
    """The ``attributes``/``excludedAttributes`` query parameters, validated against the
    User model by scim2-models (an unknown attribute is a 400), or None."""
    raw = {name: query.get(name) for name in ("attributes", "excludedAttributes")
           if query.get(name)}
    return ResponseParameters[ScimUser].model_validate(raw) if raw else None


def primary_email(resource: Any) -> str | None:
    """The address the IdP means: the primary (else the first) work address, else the
    primary or first of any type, else ``userName`` when it is an address."""
    emails = [e for e in (resource.emails or []) if e.value]
    work = [e for e in emails if e.type is not None and str(e.type).lower().endswith("work")]
    for group in (work, emails):
        chosen = next((e for e in group if e.primary), group[0] if group else None)
        if chosen is not None:
            return str(chosen.value)
    user_name = resource.user_name or ""
    return user_name if "@" in user_name else None


def identity_of(idp: str, resource: Any) -> Identity:
    """The Identity an IdP's SCIM User stands for. ``subject`` is the ``externalId`` when
    given (Okta sends its user id, the OIDC ``sub``; Entra can send ``objectId``, the
    ``oid`` its preset signs in with), else ``userName``; it only matters for apps whose
    ``username = "subject"``. SCIM carries no group memberships on a User."""
    name = resource.name
    extension = resource[EnterpriseUser]
    return Identity(
        idp=idp,
        subject=str(resource.external_id or resource.user_name or ""),
        email=primary_email(resource),
        given_name=(name.given_name if name else None),
        family_name=(name.family_name if name else None),
        display_name=resource.display_name,
        employee_number=(extension.employee_number if extension else None) or None,
    )


def service_provider_config(base_url: str) -> dict[str, Any]:
    """``/ServiceProviderConfig``: PATCH and filters yes; bulk, sort, ETags, password no."""
    config = ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_PAGE),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[
            AuthenticationScheme(
                type=AuthenticationScheme.Type.oauthbearertoken,
                name="Bearer credential",
                description="The IdP's SCIM credential (gateway scim-token), as "
                            "Authorization: Bearer <credential>",
                primary=True,
            )
        ],
        meta=Meta(resource_type="ServiceProviderConfig",
                  location=f"{base_url}/ServiceProviderConfig"),
    )
    return dump(config, Context.RESOURCE_QUERY_RESPONSE)


GROUPS_NOTE = (
    "Groups named in this app's group_map (by displayName or externalId) map to LMS groups "
    "(Damstra groups, Litmos teams, SkyPrep user groups); other groups are accepted and "
    "ignored. Listings and searches leave members out; GET /Groups/{id} reads them from "
    "the LMS. DELETE leaves the LMS group and its members as they are.")


def resource_types(base_url: str) -> list[dict[str, Any]]:
    """``/ResourceTypes``: User (with the enterprise extension) and Group."""
    result = []
    for model, name in ((ScimUser, "User"), (Group, "Group")):
        resource_type = ResourceType.from_resource(model)
        if model is Group:
            resource_type.description = GROUPS_NOTE
        resource_type.meta = Meta(resource_type="ResourceType",
                                  location=f"{base_url}/ResourceTypes/{name}")
        result.append(dump(resource_type, Context.RESOURCE_QUERY_RESPONSE))
    return result


def schemas(base_url: str) -> list[dict[str, Any]]:
    """``/Schemas``: the core User and Group schemas and the enterprise extension."""
    result = []
    for model in (User, EnterpriseUser, Group):
        schema = model.to_schema()
        for attribute in schema.attributes or []:
            if attribute.name == "emails":
                # Every LMS account needs an address: this service requires one, and its
                # value (a client building Users from this schema then sends one).
                attribute.required = Required.true
                for sub in attribute.sub_attributes or []:
                    if sub.name == "value":
                        sub.required = Required.true
        schema.meta = Meta(resource_type="Schema", location=f"{base_url}/Schemas/{schema.id}")
        result.append(dump(schema, Context.RESOURCE_QUERY_RESPONSE))
    return result
