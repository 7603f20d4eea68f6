"""Claim presets per IdP product and the mapping of verified claims to an :class:`Identity`.

Each Identity field reads the first present claim of its preset's candidate list;
``[idp.<name>.claims]`` replaces the list of a field with the one claim it names.

Choices made per preset (vendor documentation is silent or ambiguous on some of them):

* **entra**: the subject is ``oid`` (the user's object id in the tenant), not ``sub``. Entra's
  ``sub`` is pairwise per app registration, so it changes when the app is re-registered, while
  ``oid`` stays the same and is what Graph/SCIM know the user by; it needs the ``profile``
  scope (in the default scopes). A token without ``oid`` is refused rather than falling back to
  ``sub``, which would give one employee two keys. E-mail is ``email`` only: Microsoft says
  ``preferred_username`` and ``upn`` are mutable, not verified addresses and not to be used
  for authorisation decisions ("ID token claims reference", Microsoft identity platform).
  With ``email_from_unverified_claims = true`` (config requires ``email_domains`` then, so
  the domain is still checked) ``preferred_username``, then ``upn``, are used when ``email``
  is absent and they look like an address. Groups are ``groups`` (object ids unless the
  app registration emits names); a "groups overage" token (too many groups, ``_claim_names``)
  carries none and is logged. The employee number is the optional claim ``employeeid``.
* **okta**: ``sub``, ``email``, ``groups`` (a groups claim configured on the authorization
  server), employee number from the ``employeeNumber`` profile attribute.
* **google** (Workspace): the e-mail must be verified (``email_verified`` true), and ``hd``
  (the Workspace domain) must be exactly one of ``hosted_domains`` (case-insensitive; config
  requires them). A personal account has no ``hd``; an account of any *other* Workspace
  tenant has its own: both are refused ("Validate an ID token", Google Identity, OpenID
  Connect: check ``hd`` to restrict access to members of your domain). Google emits no groups
  or employee number.
* **keycloak**: ``sub``, ``email``, ``groups`` (group membership mapper; full paths such as
  ``/staff`` are passed through as they are), ``employee_number`` user attribute mapper.
* **generic**: the standard claims plus ``groups`` and common employee-number spellings.

Whatever the preset, a token whose ``email_verified`` is explicitly false is refused
(AccessDenied) rather than mapped to an identity without an e-mail: the operator's log then
says why (OIDC Core 5.1: ``email_verified`` false means the address was not verified).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.errors import AccessDenied, TokenValidationError
from gateway.identity import Identity
from gateway.observability import log_event
from gateway.settings import OidcIdpSettings

log = logging.getLogger("gateway.auth.oidc")

_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f/\\]{1,253}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_GROUPS = 1000


@dataclass(frozen=True, slots=True)
class Preset:
    """Candidate claims per Identity field, first present wins."""

    subject: tuple[str, ...] = ("sub",)
    email: tuple[str, ...] = ("email",)
    given_name: tuple[str, ...] = ("given_name",)
    family_name: tuple[str, ...] = ("family_name",)
    display_name: tuple[str, ...] = ("name",)
    employee_number: tuple[str, ...] = ("employee_number", "employeeNumber", "employee_id")
    groups: tuple[str, ...] = ("groups",)
    # Tried after ``email`` only with email_from_unverified_claims (Entra's mutable names).
    unverified_email: tuple[str, ...] = ()
    # Google Workspace: only a verified address counts, and ``hd`` must be one of
    # ``hosted_domains`` (lower-case; empty refuses every account: fail closed).
    require_verified_email: bool = False
    require_hosted_domain: bool = False
    hosted_domains: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    "generic": Preset(),
    "entra": Preset(
        subject=("oid",),
        unverified_email=("preferred_username", "upn"),
        employee_number=("employeeid", "employeeId", "employee_id"),
    ),
    "okta": Preset(employee_number=("employeeNumber", "employee_number")),
    "google": Preset(
        employee_number=(), groups=(), require_verified_email=True, require_hosted_domain=True
    ),
    "keycloak": Preset(employee_number=("employee_number", "employeeNumber")),
}


def preset_for(settings: OidcIdpSettings) -> Preset:
    """The IdP's preset with the operator's ``claims`` overrides and trust settings applied.

    An explicit ``claims.email`` override is the operator's choice and replaces the list,
    unverified fallbacks included.
    """
    preset = PRESETS[settings.preset]
    changes: dict[str, Any] = {
        field: (claim,)
        for field in (
            "subject",
            "email",
            "given_name",
            "family_name",
            "display_name",
            "employee_number",
            "groups",
        )
        if (claim := getattr(settings.claims, field)) is not None
    }
    if settings.email_from_unverified_claims and "email" not in changes:
        changes["email"] = preset.email + preset.unverified_email
    if preset.require_hosted_domain:
        changes["hosted_domains"] = tuple(d.lower() for d in settings.hosted_domains)
    return replace(preset, **changes) if changes else preset


def _first(claims: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = claims.get(name)
        if value is not None and value != "":
            return value
    return None


def _text(value: Any, limit: int = 256) -> str | None:
    """A claim as a clean single-line string, or None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = _CONTROL.sub("", str(value)).strip()
    return text[:limit] or None


def _flag(value: Any) -> bool | None:
    """``email_verified`` as sent: a JSON boolean, or the strings some IdPs send (Cognito)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _email(claims: Mapping[str, Any], preset: Preset) -> str | None:
    verified = _flag(claims.get("email_verified"))
    # OIDC Core 5.1: email_verified false = the End-User's address was not verified; an
    # unverified address must not select an LMS account, and a clear refusal beats an
    # identity that quietly lacks an e-mail.
    if verified is False:
        raise AccessDenied("the IdP marked the e-mail address as not verified")
    if preset.require_verified_email and verified is not True:
        raise AccessDenied("the IdP did not mark the e-mail address as verified")
    for name in preset.email:
        value = claims.get(name)
        if isinstance(value, str) and _EMAIL.fullmatch(value.strip()):
            return value.strip()
    return None


def _groups(claims: Mapping[str, Any], preset: Preset, idp: str) -> tuple[str, ...]:
    value = _first(claims, preset.groups)
    if value is None:
        names = claims.get("_claim_names")
        if isinstance(names, dict) and "groups" in names:
            log_event(
                log,
                logging.WARNING,
                "groups_overage",
                idp=idp,
                reason="the IdP sent a groups reference instead of groups; none used",
            )
        return ()
    items = value if isinstance(value, list) else [value]
    groups = (_text(item) for item in items[:MAX_GROUPS] if isinstance(item, str))
    return tuple(dict.fromkeys(g for g in groups if g))


def missing_claims(claims: Mapping[str, Any], preset: Preset) -> bool:
    """True when a field the mapping reads has none of its candidate claims in ``claims``
    (the ID token): then userinfo may carry it."""
    fields = (
        preset.email,
        preset.given_name,
        preset.family_name,
        preset.employee_number,
        preset.groups,
    )
    return any(_first(claims, names) is None for names in fields)


def map_identity(idp: str, claims: Mapping[str, Any], preset: Preset) -> Identity:
    """Build the Identity from verified (ID token + userinfo) claims."""
    subject = _first(claims, preset.subject)
    if not isinstance(subject, str) or not subject.strip() or len(subject) > 255:
        raise TokenValidationError(
            f"subject claim {'/'.join(preset.subject)} is missing or malformed"
        )
    if preset.require_hosted_domain:
        hosted = _text(claims.get("hd"))
        if hosted is None:
            raise AccessDenied("Google account without hd claim (not a Workspace account)")
        # Exact match: any Workspace tenant has *an* hd; only ours may sign in.
        if hosted.lower() not in preset.hosted_domains:
            raise AccessDenied(f"Google Workspace domain {hosted[:253]} is not in hosted_domains")
    auth_time = claims.get("auth_time")
    return Identity(
        idp=idp,
        subject=subject,
        email=_email(claims, preset),
        given_name=_text(_first(claims, preset.given_name)),
        family_name=_text(_first(claims, preset.family_name)),
        display_name=_text(_first(claims, preset.display_name)),
        employee_number=_text(_first(claims, preset.employee_number), 64),
        groups=_groups(claims, preset, idp),
        idp_session=_text(claims.get("sid")),
        authenticated_at=auth_time if type(auth_time) is int else None,
    )
