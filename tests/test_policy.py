"""Access rules and mapping: Identity x App -> Profile | AccessDenied."""

from __future__ import annotations

import pytest

from gateway.errors import AccessDenied
from gateway.identity import Identity
from gateway.policy import profile_for
from gateway.settings import AppSettings


def app(**kw: object) -> AppSettings:
    return AppSettings(connector="skyprep", idps=("okta",), **kw)  # type: ignore[arg-type]


ADA = Identity(
    idp="okta",
    subject="u1",
    email="Ada@Example.COM",
    given_name="Ada",
    family_name="Lovelace",
    employee_number="E1",
    groups=("Staff", "Trainers", "Other"),
)


def test_profile_maps_groups_roles_and_names() -> None:
    profile = profile_for(
        "t",
        app(
            group_map={"Staff": "All staff", "Safety": "Safety"},
            role_map={"Trainers": "instructor"},
            default_role="learner",
        ),
        ADA,
    )
    assert profile.email == "Ada@example.com"
    assert (profile.first_name, profile.last_name) == ("Ada", "Lovelace")
    assert profile.groups == ("All staff",)  # unmapped groups are not sent
    assert profile.role == "instructor"
    assert profile.username == "Ada@example.com"


def test_default_role_and_username_choices() -> None:
    who = Identity(idp="okta", subject="u2", email="b@example.com", display_name="Bea Smith Jones")
    profile = profile_for("t", app(default_role="learner", username="subject"), who)
    assert profile.role == "learner" and profile.username == "u2"
    assert (profile.first_name, profile.last_name) == ("Bea", "Smith Jones")
    with pytest.raises(AccessDenied):
        profile_for("t", app(username="employee_number"), who)


@pytest.mark.parametrize(
    ("settings", "identity"),
    [
        (app(), Identity(idp="other", subject="x", email="a@example.com")),
        (
            app(allowed_email_domains=("example.com",)),
            Identity(idp="okta", subject="x", email="a@evil.com"),
        ),
        (
            app(allowed_email_domains=("example.com",)),
            Identity(idp="okta", subject="x", email="a@sub.example.com"),
        ),
        (
            app(required_groups=("Staff",)),
            Identity(idp="okta", subject="x", email="a@example.com", groups=("staff",)),
        ),
        (app(), Identity(idp="okta", subject="x", email=None)),
        (app(), Identity(idp="okta", subject="x", email="not an email")),
    ],
)
def test_denied(settings: AppSettings, identity: Identity) -> None:
    with pytest.raises(AccessDenied) as info:
        profile_for("t", settings, identity)
    assert "Contact your IT support" in info.value.public
    # the employee's page never names the rule that failed
    assert "group" not in info.value.public and "domain" not in info.value.public


def test_profile_digest_changes_with_content() -> None:
    a = profile_for("t", app(), ADA)
    renamed = Identity(
        idp="okta",
        subject="u1",
        email="Ada@Example.COM",
        given_name="Ada",
        family_name="Byron",
        employee_number="E1",
        groups=ADA.groups,
    )
    b = profile_for("t", app(), renamed)
    assert a.digest() != b.digest()
    assert a.digest() == profile_for("t", app(), ADA).digest()


# --- the trust model: groups and roles only from the IdPs the app trusts for them -----------


def two_idps(**kw: object) -> AppSettings:
    return AppSettings(connector="skyprep", idps=("okta", "partner"), **kw)  # type: ignore[arg-type]


def person(idp: str, *groups: str) -> Identity:
    return Identity(idp=idp, subject="s1", email=f"x@{idp}.example", groups=groups)


def test_groups_from_an_idp_not_trusted_for_groups_do_not_count() -> None:
    rules = two_idps(
        required_groups=("Staff",), group_map={"Staff": "All staff"}, group_idps=("okta",)
    )
    assert profile_for("t", rules, person("okta", "Staff")).groups == ("All staff",)
    # The partner IdP names a group the same way: it is not the app's "Staff".
    with pytest.raises(AccessDenied, match="required groups"):
        profile_for("t", rules, person("partner", "Staff"))
    mapped = two_idps(group_map={"Staff": "All staff"}, group_idps=("okta",))
    assert profile_for("t", mapped, person("partner", "Staff")).groups == ()


def test_role_map_applies_only_to_idps_trusted_for_roles() -> None:
    rules = two_idps(
        role_map={"Admins": "admin"},
        default_role="learner",
        group_idps=("okta", "partner"),
        role_idps=("okta",),
    )
    assert profile_for("t", rules, person("okta", "Admins")).role == "admin"
    assert profile_for("t", rules, person("partner", "Admins")).role == "learner"


def test_several_idps_without_group_or_role_idps_trust_nobody_for_them() -> None:
    rules = two_idps(group_map={"Staff": "All staff"}, role_map={"Admins": "admin"})
    profile = profile_for("t", rules, person("okta", "Staff", "Admins"))
    assert profile.groups == () and profile.role is None


def test_subject_username_refused_for_an_app_with_several_idps() -> None:
    with pytest.raises(AccessDenied, match="ambiguous"):
        profile_for("t", two_idps(username="subject"), person("partner"))


@pytest.mark.parametrize(
    "email",
    ['"a@evil.example"@example.com', "a@exa\x00mple.com", "a\x7f@example.com"],
)
def test_addresses_an_lms_could_read_differently_are_unusable(email: str) -> None:
    with pytest.raises(AccessDenied, match="usable e-mail"):
        profile_for("t", app(), Identity(idp="okta", subject="x", email=email))
