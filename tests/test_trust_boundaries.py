"""The trust model end to end: an IdP vouches only for its own people.

Two IdPs on one app, through the real gateway over HTTP on 127.0.0.1 (the demo stack: demo
OpenID Provider for the company's ``@example.com`` people, demo SAML IdP for the subsidiary's
``@example.org`` people, the LMS simulators counting every call). The second IdP tries to
sign in *as* the first one's employee: by asserting their e-mail, their subject, their
employee number, or a group the app maps to a privileged role. Refusals must happen before
any LMS call; the ambiguous configurations are refused by check-config. Google and Entra
preset checks run against a hostile OpenID provider (tests.test_oidc_hostile's harness).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.auth.authority import vouch
from gateway.config import parse_settings
from gateway.errors import AccessDenied, ConfigError
from gateway.identity import Identity
from gateway.sandbox.demo import DemoStack, demo_config, start_demo
from gateway.sandbox.employees import DEMO_EMAIL_DOMAIN, DEMO_SAML_EMAIL_DOMAIN, find_employee
from gateway.settings import OidcIdpSettings
from tests.flows.agent import choose_employee, sign_in
from tests.test_oidc_hostile import Harness

ALICE = "emp-1001"  # Staff, Managers
OMAR = "emp-1004"  # Staff, Safety, Managers


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


@pytest.fixture
async def rogue() -> AsyncIterator[DemoStack]:
    """The demo, except that its SAML IdP asserts addresses in the OpenID Provider's domain
    (config unchanged: demo-saml is authoritative for example.org only)."""
    stack = await start_demo(0, saml_email_domain=DEMO_EMAIL_DOMAIN)
    try:
        yield stack
    finally:
        await stack.stop()


def lms_calls(stack: DemoStack) -> int:
    return stack.skyprep.calls.count() + stack.damstra.calls.count() + stack.litmos.calls.count()


# --- e-mail: the account selector --------------------------------------------------------------


@pytest.mark.parametrize("app", ["skyprep", "damstra", "litmos"])
async def test_second_idp_asserting_the_first_idps_email_is_refused_before_any_lms_call(
    rogue: DemoStack, app: str
) -> None:
    async with httpx.AsyncClient(timeout=20) as alice:
        page = await sign_in(alice, f"{rogue.gateway_url}/login/{app}?idp=demo-oidc", ALICE)
        assert page.status_code == 200, page.text[:400]
    before = lms_calls(rogue)

    async with httpx.AsyncClient(timeout=20) as attacker:
        page = await sign_in(attacker, f"{rogue.gateway_url}/login/{app}?idp=demo-saml", ALICE)
        assert page.status_code == 403
        assert "does not manage accounts with your e-mail address" in page.text
        assert "example.com" not in page.text  # the rule is not revealed
        assert lms_calls(rogue) == before  # refused before the LMS was asked anything
        # no session either: the next click goes back to an IdP, not into Alice's account
        assert attacker.cookies.get("gw_session") is None
        again = await attacker.get(f"{rogue.gateway_url}/login/{app}?idp=demo-saml")
        assert again.status_code == 303
        assert again.headers["location"].startswith(f"{rogue.saml_url}/sso?")
    assert lms_calls(rogue) == before


async def test_idp_initiated_response_with_a_foreign_domain_is_refused_too(
    rogue: DemoStack, browser: httpx.AsyncClient
) -> None:
    page = await browser.get(f"{rogue.saml_url}/idp-initiated")
    page = await choose_employee(browser, page, OMAR)
    # Refused at once: the confirmation page never shows an identity its IdP may not vouch for.
    assert "/confirm" not in page.url.path
    assert page.status_code == 403
    assert browser.cookies.get("gw_session") is None
    assert lms_calls(rogue) == 0 and not rogue.skyprep.users


# --- subject and employee number: equal values from two IdPs are two people -------------------


async def test_same_subject_from_the_second_idp_gets_its_own_account(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    employee = find_employee(ALICE)
    assert employee is not None
    page = await sign_in(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", ALICE)
    assert page.status_code == 200, page.text[:400]
    company = demo.skyprep.users[employee.email]
    async with httpx.AsyncClient(timeout=20) as other:
        # The SAML IdP issues the same subject (emp-1001) for its own Alice.
        page = await sign_in(other, f"{demo.gateway_url}/login/skyprep?idp=demo-saml", ALICE)
        assert page.status_code == 200, page.text[:400]
    subsidiary = employee.at_domain(DEMO_SAML_EMAIL_DOMAIN).email
    assert set(demo.skyprep.users) == {employee.email, subsidiary}
    assert demo.skyprep.users[employee.email] is company
    assert demo.skyprep.users[subsidiary].id != company.id


@pytest.mark.parametrize(
    ("key", "value"),
    [("username", "subject"), ("username", "employee_number"), ("match_by", "employee_number")],
)
def test_check_config_refuses_identifiers_the_other_idp_could_issue(key: str, value: str) -> None:
    config = demo_config(
        gateway="http://127.0.0.1:1",
        oidc="http://127.0.0.1:2",
        saml_metadata_file=__file__,  # any existing file: metadata is parsed at start-up
        skyprep="http://127.0.0.1:3",
        damstra="http://127.0.0.1:4",
        litmos="http://127.0.0.1:5",
        portal="http://127.0.0.1:6",
    )
    env = {
        "GATEWAY_SIGNING_KEY": "k" * 40,
        "DEMO_OIDC_SECRET": "s",
        "DEMO_SKYPREP_KEY": "a",
        "DEMO_DAMSTRA_KEY": "d",
        "DEMO_LITMOS_KEY": "l",
    }
    parse_settings(config, env)  # the demo as shipped is valid
    config["app"]["damstra"][key] = value
    with pytest.raises(ConfigError) as info:
        parse_settings(config, env)
    assert info.value.problems == [
        f"app.damstra.{key}: {value!r} is ambiguous for app 'damstra' with several IdPs "
        "(another IdP could issue the same value); use 'email'"
    ]


# --- groups and roles: only from the IdPs the app trusts for them -----------------------------


async def test_privileged_group_from_an_idp_not_trusted_for_roles_grants_nothing(
    demo: DemoStack,
) -> None:
    """litmos: role_map Managers -> Team_Leader, role_idps = [demo-oidc]. Omar is a Manager
    at both IdPs; only the company IdP's word makes him a Team_Leader."""
    employee = find_employee(OMAR)
    assert employee is not None
    levels = {}
    for idp in ("demo-oidc", "demo-saml"):
        async with httpx.AsyncClient(timeout=20) as client:
            page = await sign_in(client, f"{demo.gateway_url}/login/litmos?idp={idp}", OMAR)
            assert page.status_code == 200, page.text[:400]
    for user in demo.litmos.users.values():
        levels[user.Email.lower()] = user.AccessLevel
    assert levels == {
        employee.email: "Team_Leader",
        employee.at_domain(DEMO_SAML_EMAIL_DOMAIN).email: "Learner",
    }


# --- the vouch rule itself ----------------------------------------------------------------------


def idp(**kw: Any) -> OidcIdpSettings:
    return OidcIdpSettings(type="oidc", issuer="https://idp.example", client_id="c", **kw)


@pytest.mark.parametrize(
    "email",
    [
        "a@evil.example",
        "a@sub.example.com",  # no subdomain matching
        "a@example.com.evil.example",
        "a@example.com.",
        "a@ex\u0430mple.com",  # Cyrillic a
        None,
        "not an address",
        '"x@example.com"@evil.example',
    ],
)
def test_vouch_refuses_everything_outside_the_idps_domains(email: str | None) -> None:
    with pytest.raises(AccessDenied) as info:
        vouch(Identity(idp="corp", subject="s", email=email), idp(email_domains=("example.com",)))
    assert "IdP corp" in info.value.reason
    assert "domain" not in info.value.public


def test_vouch_accepts_the_idps_domains_in_any_case_and_idps_without_domains() -> None:
    own = idp(email_domains=("example.com", "example.net"))
    vouch(Identity(idp="corp", subject="s", email="Ada.L@EXAMPLE.net"), own)
    vouch(Identity(idp="corp", subject="s", email="x@anything.example"), idp())


# --- presets: Google tenants and Entra's unverified names --------------------------------------


async def test_google_token_from_another_workspace_tenant_is_refused() -> None:
    harness = Harness(preset="google", hosted_domains=("acme.example",))
    await harness.door.start()
    try:
        harness.idp.claims_patch = {"email_verified": True, "hd": "acme.example"}
        identity, _ = await harness.login()
        assert identity.email == "ada@example.com"
        # Any Workspace tenant sends an hd; a valid, well-signed token from another is refused.
        harness.idp.claims_patch = {"email_verified": True, "hd": "evil.example"}
        with pytest.raises(AccessDenied, match="not in hosted_domains"):
            await harness.login()
    finally:
        await harness.door.aclose()
        await harness.http.aclose()


@pytest.mark.parametrize("opted_in", [False, True])
async def test_entra_token_with_only_upn_has_an_email_only_when_opted_in(opted_in: bool) -> None:
    options: dict[str, Any] = {"preset": "entra", "userinfo": "never"}
    if opted_in:
        options.update(email_from_unverified_claims=True, email_domains=("contoso.example",))
    harness = Harness(**options)
    await harness.door.start()
    try:
        harness.idp.claims_patch = {"oid": "oid-1", "upn": "ada@contoso.example"}
        harness.idp.drop = {"email"}
        identity, _ = await harness.login()
        assert identity.email == ("ada@contoso.example" if opted_in else None)
        # and without an e-mail, an IdP with email_domains vouches for nobody
        if not opted_in:
            with pytest.raises(AccessDenied, match="no usable e-mail"):
                vouch(identity, idp(email_domains=("contoso.example",)))
    finally:
        await harness.door.aclose()
        await harness.http.aclose()
