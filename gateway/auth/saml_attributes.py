"""SAML attributes -> Identity, with presets for the common IdPs.

Each Identity field names candidate attributes in order; the first one present wins.
``[idp.<name>.attributes]`` overrides a field's candidates with one attribute name (matched
against ``Name`` first, then ``FriendlyName``). The subject is the NameID unless overridden.
"""

from __future__ import annotations

from gateway.auth.saml_checks import VerifiedAssertion
from gateway.errors import TokenValidationError
from gateway.identity import Identity
from gateway.settings import ClaimMapping

_CLAIMS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
_MS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/"
_OID_MAIL = "urn:oid:0.9.2342.19200300.100.1.3"
_OID_GIVEN = "urn:oid:2.5.4.42"
_OID_SN = "urn:oid:2.5.4.4"
_OID_DISPLAY = "urn:oid:2.16.840.1.113730.3.1.241"
_OID_EMPLOYEE = "urn:oid:2.16.840.1.113730.3.1.3"
_OID_MEMBER_OF = "urn:oid:1.3.6.1.4.1.5923.1.5.1.1"
_OID_EPPN = "urn:oid:1.3.6.1.4.1.5923.1.1.1.6"
_OID_UNIQUE_ID = "urn:oid:1.3.6.1.4.1.5923.1.1.1.13"

Preset = dict[str, tuple[str, ...]]

_GENERIC: Preset = {
    "email": ("email", "mail", "emailAddress", _OID_MAIL, _CLAIMS + "emailaddress"),
    "given_name": ("givenName", "firstName", "given_name", _OID_GIVEN, _CLAIMS + "givenname"),
    "family_name": ("sn", "surname", "lastName", "family_name", _OID_SN, _CLAIMS + "surname"),
    "display_name": ("displayName", "cn", "name", _OID_DISPLAY),
    "employee_number": ("employeeNumber", "employeeID", _OID_EMPLOYEE),
    "groups": ("groups", "memberOf", "isMemberOf", _OID_MEMBER_OF),
}
_ENTRA: Preset = {
    "email": (_CLAIMS + "emailaddress", _CLAIMS + "name"),
    "given_name": (_CLAIMS + "givenname",),
    "family_name": (_CLAIMS + "surname",),
    "display_name": ("http://schemas.microsoft.com/identity/claims/displayname",),
    "employee_number": (_CLAIMS + "employeeid", "employeeid"),
    "groups": (_MS + "groups", _MS + "role"),
}
_ADFS: Preset = {
    "email": (_CLAIMS + "emailaddress", _CLAIMS + "upn"),
    "given_name": (_CLAIMS + "givenname",),
    "family_name": (_CLAIMS + "surname",),
    "display_name": (_CLAIMS + "name", "http://schemas.xmlsoap.org/claims/CommonName"),
    "employee_number": (_CLAIMS + "employeeid", "employeeID"),
    "groups": ("http://schemas.xmlsoap.org/claims/Group", _MS + "role"),
}
_OKTA: Preset = {
    "email": ("email", "user.email"),
    "given_name": ("firstName", "user.firstName"),
    "family_name": ("lastName", "user.lastName"),
    "display_name": ("displayName", "user.displayName"),
    "employee_number": ("employeeNumber", "user.employeeNumber"),
    "groups": ("groups",),
}
_EDUPERSON: Preset = {
    "subject": (_OID_UNIQUE_ID, _OID_EPPN),
    "email": (_OID_MAIL, "mail"),
    "given_name": (_OID_GIVEN, "givenName"),
    "family_name": (_OID_SN, "sn"),
    "display_name": (_OID_DISPLAY, "displayName"),
    "employee_number": (_OID_EMPLOYEE, "employeeNumber"),
    "groups": (_OID_MEMBER_OF, "isMemberOf"),
}
PRESETS: dict[str, Preset] = {
    "generic": _GENERIC, "entra": _ENTRA, "adfs": _ADFS, "okta": _OKTA, "eduperson": _EDUPERSON,
}
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
EMAIL_FORMAT = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
_FIELDS = ("subject", "email", "given_name", "family_name", "display_name", "employee_number",
           "groups")
_MAX_VALUE = 1024
_MAX_GROUPS = 1000


def _values(assertion: VerifiedAssertion, names: tuple[str, ...]) -> tuple[str, ...]:
    for name in names:
        found = assertion.attributes.get(name) or assertion.friendly.get(name)
        if found:
            return tuple(v.strip() for v in found if v.strip())
    return ()


def _single(assertion: VerifiedAssertion, names: tuple[str, ...]) -> str | None:
    values = _values(assertion, names)
    if not values:
        return None
    if len(values[0]) > _MAX_VALUE:
        raise TokenValidationError("attribute value longer than 1024 characters")
    return values[0]


def to_identity(
    idp: str, assertion: VerifiedAssertion, preset: str, overrides: ClaimMapping
) -> Identity:
    """Normalise a verified assertion into an Identity."""
    table = dict(PRESETS[preset])
    for name in _FIELDS:
        override = getattr(overrides, name)
        if override:
            table[name] = (override,)
    subject = _single(assertion, table["subject"]) if "subject" in table else None
    if subject is None:
        if assertion.name_id_format == TRANSIENT:
            # A transient NameID changes on every sign-in; it cannot key an LMS account.
            raise TokenValidationError(
                "NameID is transient and no subject attribute was released"
            )
        subject = assertion.name_id
    email = _single(assertion, table["email"])
    if email is None and assertion.name_id_format == EMAIL_FORMAT:
        email = assertion.name_id
    groups = _values(assertion, table["groups"])
    if len(groups) > _MAX_GROUPS:
        raise TokenValidationError("more than 1000 group values")
    return Identity(
        idp=idp,
        subject=subject,
        email=email,
        given_name=_single(assertion, table["given_name"]),
        family_name=_single(assertion, table["family_name"]),
        display_name=_single(assertion, table["display_name"]),
        employee_number=_single(assertion, table["employee_number"]),
        groups=tuple(dict.fromkeys(groups)),
        idp_session=assertion.session_index,
        authenticated_at=assertion.authn_instant,
    )
