"""Claim presets: what each IdP product's verified claims become as an Identity."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.auth.claims import map_identity, preset_for
from gateway.errors import AccessDenied, TokenValidationError
from gateway.settings import ClaimMapping, OidcIdpSettings


def settings(preset: str, overrides: dict[str, str] | None = None, **kw: Any) -> OidcIdpSettings:
    if preset == "google":
        kw.setdefault("hosted_domains", ("acme.example", "contoso.example"))
    return OidcIdpSettings(
        type="oidc", issuer="https://idp.example", client_id="c", preset=preset,  # type: ignore[arg-type]
        claims=ClaimMapping(**(overrides or {})), **kw,
    )


def identity(preset: str, claims: dict[str, Any], **overrides: str) -> Any:
    return map_identity("idp", claims, preset_for(settings(preset, overrides)))


ENTRA: dict[str, Any] = {
    "sub": "pairwise-per-app-XYZ", "oid": "6e1f5c4e-0000-4000-8000-000000000001",
    "tid": "tenant-id", "preferred_username": "ada@contoso.example", "name": "Ada Lovelace",
    "given_name": "Ada", "family_name": "Lovelace", "employeeid": "100042",
    "groups": ["0c1f-group-a", "0c1f-group-b"],
}


def test_entra_uses_oid_as_subject_and_no_email_from_preferred_username() -> None:
    person = identity("entra", ENTRA)
    assert person.subject == ENTRA["oid"]
    # Microsoft: preferred_username is mutable and not a verified address; never an e-mail
    # unless the operator opts in.
    assert person.email is None
    assert person.employee_number == "100042"
    assert person.groups == ("0c1f-group-a", "0c1f-group-b")


def entra_opted_in(claims: dict[str, Any]) -> Any:
    return map_identity("idp", claims, preset_for(settings(
        "entra", email_from_unverified_claims=True, email_domains=("contoso.example",))))


def test_entra_upn_only_token_has_no_email_unless_opted_in() -> None:
    claims = {k: v for k, v in ENTRA.items() if k != "preferred_username"}
    claims["upn"] = "ada@contoso.example"
    assert identity("entra", claims).email is None
    assert entra_opted_in(claims).email == "ada@contoso.example"
    assert entra_opted_in(ENTRA).email == "ada@contoso.example"
    # the verified-address claim still wins when both are present
    assert entra_opted_in({**ENTRA, "email": "ada.l@contoso.example"}).email == (
        "ada.l@contoso.example")


def test_entra_email_claim_preferred_over_preferred_username() -> None:
    person = identity("entra", {**ENTRA, "email": "ada.lovelace@contoso.example"})
    assert person.email == "ada.lovelace@contoso.example"


def test_entra_without_oid_refused_not_silently_keyed_by_sub() -> None:
    claims = {k: v for k, v in ENTRA.items() if k != "oid"}
    with pytest.raises(TokenValidationError, match="oid"):
        identity("entra", claims)


def test_entra_groups_overage_gives_no_groups() -> None:
    claims = {k: v for k, v in ENTRA.items() if k != "groups"}
    claims["_claim_names"] = {"groups": "src1"}
    assert identity("entra", claims).groups == ()


def test_entra_non_address_username_is_not_an_email() -> None:
    claims = {**ENTRA, "preferred_username": "CONTOSO\\ada"}
    assert entra_opted_in(claims).email is None


def test_google_requires_workspace_domain_and_verified_email() -> None:
    base = {"sub": "1099", "email": "ada@acme.example", "email_verified": True,
            "hd": "acme.example", "given_name": "Ada", "family_name": "L"}
    person = identity("google", base)
    assert (person.subject, person.email, person.groups) == ("1099", "ada@acme.example", ())
    with pytest.raises(AccessDenied, match="verified"):
        identity("google", {**base, "email_verified": None})
    with pytest.raises(AccessDenied, match="hd"):
        identity("google", {k: v for k, v in base.items() if k != "hd"})


@pytest.mark.parametrize("hd", ["evil.example", "acme.example.evil", "sub.acme.example",
                                "acme", "", 7, ["acme.example"]])
def test_google_other_workspace_tenant_refused(hd: Any) -> None:
    claims = {"sub": "1099", "email": "ada@acme.example", "email_verified": True, "hd": hd}
    with pytest.raises(AccessDenied, match=r"hd|Workspace"):
        identity("google", claims)


def test_google_hd_compared_case_insensitively_and_fails_closed_without_config() -> None:
    claims = {"sub": "1099", "email": "ada@acme.example", "email_verified": True,
              "hd": "ACME.Example"}
    assert identity("google", claims).email == "ada@acme.example"
    with pytest.raises(AccessDenied, match="hosted_domains"):
        map_identity("idp", claims, preset_for(settings("google", hosted_domains=())))


@pytest.mark.parametrize("preset", ["generic", "entra", "okta", "google", "keycloak"])
@pytest.mark.parametrize("flag", [False, "false", "False"])
def test_explicitly_unverified_email_refused_by_every_preset(preset: str, flag: Any) -> None:
    claims = {**ENTRA, "sub": "s", "hd": "contoso.example", "email": "ada@contoso.example",
              "email_verified": flag}
    # a clear refusal (the operator's log says why), not an identity quietly without e-mail
    with pytest.raises(AccessDenied, match="not verified"):
        identity(preset, claims)


def test_okta_employee_number_and_groups() -> None:
    person = identity("okta", {"sub": "00u1", "email": "a@b.example", "employeeNumber": 77,
                               "groups": ["Everyone", "LMS Learners"]})
    assert person.employee_number == "77" and person.groups == ("Everyone", "LMS Learners")


def test_keycloak_group_paths_passed_through() -> None:
    person = identity("keycloak", {"sub": "f:1", "email": "a@b.example", "email_verified": True,
                                   "groups": ["/staff", "/staff/eng"], "employee_number": "E9"})
    assert person.groups == ("/staff", "/staff/eng") and person.employee_number == "E9"


def test_operator_overrides_replace_preset_claims() -> None:
    claims = {"sub": "s", "upn": "ada@corp.example", "mail": "ada.l@corp.example",
              "roles": ["LMS.Admin"], "personnel_no": "P-1", "uid": "ada"}
    person = identity("generic", claims, email="mail", groups="roles",
                      employee_number="personnel_no", subject="uid")
    assert (person.subject, person.email, person.groups, person.employee_number) == (
        "ada", "ada.l@corp.example", ("LMS.Admin",), "P-1")


def test_hostile_claim_values_are_cleaned_or_dropped() -> None:
    claims = {
        "sub": "s", "email": "ada@example.com\r\nBcc: x@evil", "given_name": "Ada\x00\n",
        "family_name": {"nested": "object"}, "name": "A" * 5000,
        "groups": ["ok", 7, None, "ok", "tab\tgroup", ""], "employee_number": True,
    }
    person = identity("generic", claims)
    assert person.email is None
    assert person.given_name == "Ada" and person.family_name is None
    assert person.display_name is not None and len(person.display_name) == 256
    assert person.groups == ("ok", "tabgroup") and person.employee_number is None


@pytest.mark.parametrize("sub", [None, "", 42, "x" * 256, ["a"]])
def test_malformed_subject_refused(sub: Any) -> None:
    with pytest.raises(TokenValidationError, match="subject"):
        identity("generic", {"sub": sub})
