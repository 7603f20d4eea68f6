"""Browser -> gateway -> SimpleSAMLphp (a real SAML IdP nobody here wrote) -> gateway ->
SkyPrep simulator: SP-initiated, IdP-initiated, signed and encrypted assertions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.flows.agent import forms_of
from tests.flows.stack import GatewayUnderTest, gateway_with_skyprep
from tests.support.saml_attacks import make_keypair
from tests.support.simplesamlphp import SimpleSamlPhp, drive_saml_login


@pytest.fixture
def sp_keys(tmp_path: Path) -> tuple[str, str]:
    pair = make_keypair("gateway-flow-sp")
    key, cert = tmp_path / "sp.key", tmp_path / "sp.crt"
    key.write_text(pair.key_pem)
    cert.write_text(pair.cert_pem)
    return str(key), str(cert)


def saml_idp(ssp: SimpleSamlPhp, sp_keys: tuple[str, str], **extra: object):  # type: ignore[no-untyped-def]
    def build(gateway: str) -> dict:
        return {
            "ssp": {
                "type": "saml",
                "sp_entity_id": f"{gateway}/auth/ssp/metadata",
                "metadata_url": ssp.metadata_url,
                "sp_key_file": sp_keys[0],
                "sp_cert_file": sp_keys[1],
                "attributes": {"subject": "uid"},
                **extra,
            }
        }

    return build


async def register(gateway: GatewayUnderTest, ssp: SimpleSamlPhp, **options: bool) -> None:
    async with httpx.AsyncClient() as client:
        metadata = await client.get(f"{gateway.url}/auth/ssp/metadata")
    assert metadata.status_code == 200
    assert metadata.headers["content-type"].startswith("application/samlmetadata+xml")
    ssp.register_sp(metadata.content, **options)


async def post_to_acs(
    browser: httpx.AsyncClient,
    gateway: GatewayUnderTest,
    saml_response: str,
    relay_state: str | None,
) -> httpx.Response:
    data = {"SAMLResponse": saml_response, **({"RelayState": relay_state} if relay_state else {})}
    return await browser.post(f"{gateway.url}/auth/ssp/acs", data=data, follow_redirects=True)


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.mark.parametrize("encrypt", [False, True], ids=["signed", "signed+encrypted"])
async def test_sp_initiated_sign_in_lands_in_skyprep(
    simplesamlphp: SimpleSamlPhp,
    sp_keys: tuple[str, str],
    browser: httpx.AsyncClient,
    encrypt: bool,
) -> None:
    # SimpleSAMLphp 1.19 encrypts with AES128-CBC only: the legacy switch is needed for it.
    idp = saml_idp(simplesamlphp, sp_keys, allow_legacy_cbc_encryption=encrypt)
    async with gateway_with_skyprep(idp) as gateway:
        await register(gateway, simplesamlphp, encrypt_assertion=encrypt)
        start = await browser.get(f"{gateway.url}/login/skyprep")
        assert start.status_code == 303 and start.headers["location"].startswith(
            simplesamlphp.sso_url
        )
        async with httpx.AsyncClient(timeout=30) as idp_browser:
            saml_response, relay_state = await drive_saml_login(
                idp_browser, start.headers["location"], "alice", "alice-pass"
            )
        page = await post_to_acs(browser, gateway, saml_response, relay_state)
        assert page.status_code == 200, page.text[:300]
        assert "Alice Archer" in page.text and "alice@corp.example" in page.text
        assert "Staff" in page.text and "Trainers" in page.text
        # the same response again is a replay: refused in another browser, with no LMS call
        calls = gateway.skyprep.calls.count()
        async with httpx.AsyncClient(timeout=30) as other_browser:
            replay = await post_to_acs(other_browser, gateway, saml_response, relay_state)
        assert replay.status_code in (400, 401)
        assert gateway.skyprep.calls.count() == calls
        # ... and in the browser that signed in (Back/Reload after landing), the assertion is
        # not used again: the browser carries on with its own session.
        form = {"SAMLResponse": saml_response}
        if relay_state:
            form["RelayState"] = relay_state
        again = await browser.post(f"{gateway.url}/auth/ssp/acs", data=form)
        assert again.status_code == 303 and again.headers["location"] == "/login/skyprep"


async def test_idp_initiated_only_when_enabled(
    simplesamlphp: SimpleSamlPhp,
    sp_keys: tuple[str, str],
    browser: httpx.AsyncClient,
) -> None:
    async with gateway_with_skyprep(saml_idp(simplesamlphp, sp_keys)) as gateway:
        await register(gateway, simplesamlphp)
        entity = f"{gateway.url}/auth/ssp/metadata"
        async with httpx.AsyncClient(timeout=30) as idp_browser:
            saml_response, relay_state = await drive_saml_login(
                idp_browser, simplesamlphp.idp_initiated_url(entity, "skyprep"), "bob", "bob-pass"
            )
        refused = await post_to_acs(browser, gateway, saml_response, relay_state)
        assert refused.status_code in (400, 401)
        assert gateway.skyprep.calls.count() == 0

    async with gateway_with_skyprep(
        saml_idp(simplesamlphp, sp_keys, allow_idp_initiated=True)
    ) as gateway:
        await register(gateway, simplesamlphp)
        entity = f"{gateway.url}/auth/ssp/metadata"
        async with httpx.AsyncClient(timeout=30) as idp_browser:
            saml_response, relay_state = await drive_saml_login(
                idp_browser, simplesamlphp.idp_initiated_url(entity, "skyprep"), "bob", "bob-pass"
            )
        page = await post_to_acs(browser, gateway, saml_response, relay_state)
        assert page.status_code == 200, page.text[:300]
        # Held until the person confirms (login CSRF): no LMS call before "Continue".
        assert "Continue to" in page.text and gateway.skyprep.calls.count() == 0
        (form,) = forms_of(page)
        page = await browser.post(
            form.action, data={**form.fields, "action": "continue"},
            headers={"Origin": gateway.url, "Sec-Fetch-Site": "same-origin"},
            follow_redirects=True,
        )
        assert "Bob Baker" in page.text
