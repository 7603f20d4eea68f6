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
