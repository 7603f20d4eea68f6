"""Browser -> gateway -> LemonLDAP::NG (a second real IdP, independent of oidc-provider and
SimpleSAMLphp) -> gateway -> SkyPrep simulator, through each protocol it speaks:

* OpenID Connect: authorization code flow, RS256 ID token checked against the provider's JWKS,
  names and groups from the userinfo endpoint (LemonLDAP::NG puts no profile claims in the
  ID token unless told to).
* SAML 2.0: signed AuthnRequest (LemonLDAP::NG's metadata says WantAuthnRequestsSigned),
  HTTP-POST to the ACS, signed assertion; the SP is registered from the gateway's own
  /auth/{idp}/metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.flows.stack import GatewayUnderTest, gateway_with_skyprep
from tests.support.lemonldap import (
    DEMO_USERS,
    LemonLdap,
    portal_error,
    saml_post_of,
    sign_in,
)
from tests.support.lemonldap import lemonldap as lemonldap
from tests.support.saml_attacks import make_keypair

PE_SAML_SIGNATURE_ERROR = 57  # Lemonldap::NG::Portal::Main::Constants

# LemonLDAP::NG's Demo groups -> SkyPrep groups.
GROUP_MAP: dict[str, Any] = {"group_map": {"timelords": "Time Lords", "earthlings": "Earth"}}

IdpConfig = Callable[[str], dict[str, dict[str, Any]]]


def oidc_idp(llng: LemonLdap) -> IdpConfig:
    def build(gateway: str) -> dict[str, dict[str, Any]]:
        # Registered as an administrator would: exact redirect URI, new configuration.
        llng.allow_redirect_uri(f"{gateway}/auth/llng/callback")
        return {
            "llng": {
                "type": "oidc",
                "issuer": llng.issuer,
                "client_id": llng.client_id,
                "client_secret": {"env": "LLNG_SECRET"},
                "scopes": ["openid", "email", "profile", "groups"],
            }
        }

    return build


@pytest.fixture
def sp_keys(tmp_path: Path) -> tuple[str, str]:
    pair = make_keypair("gateway-llng-sp")
    key, cert = tmp_path / "sp.key", tmp_path / "sp.crt"
    key.write_text(pair.key_pem)
    cert.write_text(pair.cert_pem)
    return str(key), str(cert)


def saml_idp(llng: LemonLdap, sp_keys: tuple[str, str]) -> IdpConfig:
    def build(gateway: str) -> dict[str, dict[str, Any]]:
        return {
            "llng-saml": {
                "type": "saml",
                "sp_entity_id": f"{gateway}/auth/llng-saml/metadata",
                "metadata_url": llng.saml_metadata_url,
                "sp_key_file": sp_keys[0],
                "sp_cert_file": sp_keys[1],
                "sign_requests": True,
                "attributes": {"subject": "uid"},
            }
        }

    return build


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def register_sp(gateway: GatewayUnderTest, llng: LemonLdap, **options: Any) -> None:
    async with httpx.AsyncClient() as client:
        metadata = await client.get(f"{gateway.url}/auth/llng-saml/metadata")
    assert metadata.status_code == 200
    # In a thread: it waits for the portal to reload, and the gateway serves from this loop.
    await asyncio.to_thread(llng.register_sp, "gateway", metadata.content, **options)


def assert_landed_as(page: httpx.Response, gateway: GatewayUnderTest, login: str) -> None:
    """The employee sees the LMS landing page, and the LMS account carries what the IdP said."""
    person = DEMO_USERS[login]
    assert page.status_code == 200, page.text[:300]
    full_name = f"{person['given_name']} {person['family_name']}"
    assert full_name in page.text and person["email"] in page.text
    user = gateway.skyprep.users[person["email"]]
    assert (user.first_name, user.last_name) == (person["given_name"], person["family_name"])


# (LemonLDAP::NG RP options, gateway [idp] overrides): where the claims come from.
OIDC_CASES = {
    # LemonLDAP::NG's default: the ID token holds only sub/acr/azp; the rest is in userinfo.
    "claims-from-userinfo": ({"IDTokenForceClaims": 0}, {}),
    # Claims released in the ID token itself; the gateway never calls userinfo.
    "claims-in-id-token": ({"IDTokenForceClaims": 1}, {"userinfo": "never"}),
}


@pytest.mark.parametrize("case", list(OIDC_CASES))
async def test_openid_connect_sign_in_lands_in_skyprep(
    lemonldap: LemonLdap, browser: httpx.AsyncClient, case: str
) -> None:
    rp_options, gateway_options = OIDC_CASES[case]
    lemonldap.set_rp_options(**rp_options)

    def idp(gateway: str) -> dict[str, dict[str, Any]]:
        config = oidc_idp(lemonldap)(gateway)
        config["llng"].update(gateway_options)
        return config

    async with gateway_with_skyprep(
        idp, env={"LLNG_SECRET": lemonldap.client_secret}, app_overrides=GROUP_MAP
    ) as gateway:
        ready = await browser.get(f"{gateway.url}/readyz")
        assert ready.status_code == 200, ready.text
        start = await browser.get(f"{gateway.url}/login/skyprep")
        assert start.status_code == 303
        assert start.headers["location"].startswith(f"{lemonldap.issuer}/oauth2/authorize?")
        async with httpx.AsyncClient(timeout=30) as at_idp:
            answer = await sign_in(at_idp, start.headers["location"], "dwho")
        assert answer.is_redirect, f"portal error {portal_error(answer)}: {lemonldap.log_tail()}"
        callback = answer.headers["location"]
        assert callback.startswith(f"{gateway.url}/auth/llng/callback?"), lemonldap.log_tail()
        page = await browser.get(callback, follow_redirects=True)
        assert_landed_as(page, gateway, "dwho")
        assert "Time Lords" in page.text  # the "groups" claim, mapped by the app
        assert gateway.skyprep.users["dwho@badwolf.org"].user_groups == ["Time Lords"]
        # The callback URL replayed from another browser (a leaked code): refused, and no
        # further LMS call.
        calls = gateway.skyprep.calls.count()
        async with httpx.AsyncClient(timeout=30) as other:
            replay = await other.get(callback, follow_redirects=True)
        assert replay.status_code in (400, 401, 403)
        assert gateway.skyprep.calls.count() == calls


# (LemonLDAP::NG SP options, gateway [idp] overrides, signed in?)
SAML_CASES: dict[str, tuple[dict[str, Any], dict[str, Any], bool]] = {
    # A newly added SP with every option at LemonLDAP::NG's default: Lasso signs both the
    # Response and the Assertion (RSA-SHA256), NameID in the format the gateway asks for.
    "defaults": ({}, {}, True),
    # What the IdP's metadata promises (WantAuthnRequestsSigned): unsigned requests refused.
    "signed-requests-enforced": (
        {"CheckSSOMessageSignature": 1, "SignSSOMessage": 1, "NameIDFormat": "email"}, {}, True,
    ),
    # Lasso encrypts with AES-128-CBC whatever EncryptionMethod the SP's metadata lists:
    # accepted only where the operator allowed legacy CBC ...
    "encrypted-cbc-allowed": (
        {"EncryptionMode": "assertion"}, {"allow_legacy_cbc_encryption": True}, True,
    ),
    # ... and otherwise refused, before any LMS call.
    "encrypted-cbc-refused": ({"EncryptionMode": "assertion"}, {}, False),
}


@pytest.mark.parametrize("case", list(SAML_CASES))
async def test_saml_sign_in_lands_in_skyprep(
    lemonldap: LemonLdap,
    sp_keys: tuple[str, str],
    browser: httpx.AsyncClient,
    case: str,
) -> None:
    sp_options, gateway_options, lands = SAML_CASES[case]

    def idp(gateway: str) -> dict[str, dict[str, Any]]:
        config = saml_idp(lemonldap, sp_keys)(gateway)
        config["llng-saml"].update(gateway_options)
        return config

    async with gateway_with_skyprep(idp, app_overrides=GROUP_MAP) as gateway:
        await register_sp(gateway, lemonldap, **sp_options)
        start = await browser.get(f"{gateway.url}/login/skyprep")
        assert start.status_code == 303
        assert start.headers["location"].startswith(f"{lemonldap.base_url}/saml/singleSignOn?")
        async with httpx.AsyncClient(timeout=30) as at_idp:
            answer = await sign_in(at_idp, start.headers["location"], "rtyler")
        acs, fields = saml_post_of(answer)
        assert acs == f"{gateway.url}/auth/llng-saml/acs"
        page = await browser.post(acs, data=fields, follow_redirects=True)
        if not lands:
            assert page.status_code == 401, page.text[:300]
            assert gateway.skyprep.calls.count() == 0 and not gateway.skyprep.users
            return
        assert_landed_as(page, gateway, "rtyler")
        assert "Earth" in page.text
        assert gateway.skyprep.users["rtyler@badwolf.org"].user_groups == ["Earth"]
        # The same response posted from another browser (a captured response) is refused,
        # and no further LMS call. (In the same browser it would continue the session
        # already made: the gateway's Back/Reload behaviour.)
        calls = gateway.skyprep.calls.count()
        async with httpx.AsyncClient(timeout=30) as other:
            replay = await other.post(acs, data=fields, follow_redirects=True)
        assert replay.status_code in (400, 401)
        assert gateway.skyprep.calls.count() == calls


async def test_unsigned_request_is_refused_where_the_idp_enforces_signatures(
    lemonldap: LemonLdap, sp_keys: tuple[str, str], browser: httpx.AsyncClient
) -> None:
    """A gateway left at ``sign_requests = false`` against an IdP that checks: the employee
    is stopped at the IdP (its error page), and nothing reaches the LMS."""

    def idp(gateway: str) -> dict[str, dict[str, Any]]:
        config = saml_idp(lemonldap, sp_keys)(gateway)
        config["llng-saml"]["sign_requests"] = False
        return config

    async with gateway_with_skyprep(idp, app_overrides=GROUP_MAP) as gateway:
        await register_sp(gateway, lemonldap, CheckSSOMessageSignature=1)
        start = await browser.get(f"{gateway.url}/login/skyprep")
        async with httpx.AsyncClient(timeout=30) as at_idp:
            page = await sign_in(at_idp, start.headers["location"], "rtyler")
        assert page.status_code == 200 and "SAMLResponse" not in page.text
        assert portal_error(page) == PE_SAML_SIGNATURE_ERROR
        assert gateway.skyprep.calls.count() == 0
