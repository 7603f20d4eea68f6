"""SAML against a real IdP nobody here wrote: Debian's SimpleSAMLphp (see
tests/support/simplesamlphp.py), SP- and IdP-initiated, signed and signed+encrypted."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from gateway.auth.base import LoginRequest
from gateway.auth.saml import SamlFrontDoor
from gateway.auth.saml_xml import validate_schema
from gateway.errors import LoginStateError, NotFound, ReplayDetected, TokenValidationError
from gateway.settings import SamlIdpSettings
from gateway.store.memory import MemoryStore
from tests.support.saml_attacks import make_keypair
from tests.support.simplesamlphp import SimpleSamlPhp, drive_saml_login, simplesamlphp

__all__ = ["simplesamlphp"]  # the session fixture, imported so pytest finds it here

ACS = "https://gateway.test/auth/ssp/acs"


def resolver(relay: str | None) -> LoginRequest:
    if relay not in ("lms", None):
        raise NotFound("unknown app")
    return LoginRequest(app="lms")


async def make_door(
    ssp: SimpleSamlPhp, tmp_path: Path, *, encrypt: bool = False, sign_requests: bool = False,
    signed: str = "assertion", sign_response: bool = False, **extra: object,
) -> AsyncIterator[SamlFrontDoor]:
    keys = make_keypair("gateway sp")
    (tmp_path / "sp.key").write_text(keys.key_pem)
    (tmp_path / "sp.crt").write_text(keys.cert_pem)
    settings = SamlIdpSettings(
        type="saml", sp_entity_id=f"https://gateway.test/sp/{secrets.token_hex(4)}",
        metadata_url=ssp.metadata_url, sp_key_file=str(tmp_path / "sp.key"),
        sp_cert_file=str(tmp_path / "sp.crt"), sign_requests=sign_requests, signed=signed,
        name_id_format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent", **extra,
    )
    http = httpx.AsyncClient(timeout=10)
    door = SamlFrontDoor("ssp", settings, http, MemoryStore(), ACS,
                         "https://gateway.test/auth/ssp/metadata", dev_mode=True)
    await door.start()
    assert door.ready
    ssp.register_sp(door.sp_metadata(), encrypt_assertion=encrypt, sign_response=sign_response)
    try:
        yield door
    finally:
        await door.aclose()
        await http.aclose()


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


# SimpleSAMLphp 1.19 encrypts with RSA-OAEP + AES128-CBC (hard-coded in saml2's
# EncryptedAssertion), so its encrypted variant needs the legacy CBC switch.
@pytest.mark.parametrize("variant", [
    {}, {"encrypt": True, "allow_legacy_cbc_encryption": True}, {"sign_requests": True},
    {"signed": "both", "sign_response": True},
])
async def test_sp_initiated_login(simplesamlphp: SimpleSamlPhp, tmp_path: Path,
                                  browser: httpx.AsyncClient, variant: dict) -> None:
    async for door in make_door(simplesamlphp, tmp_path, **variant):
        redirect = await door.begin(LoginRequest(app="lms", target="/course/7"))
        response, relay = await drive_saml_login(browser, redirect.url, "alice", "alice-pass")
        if variant.get("encrypt"):
            assert b"EncryptedAssertion" in __import__("base64").b64decode(response)
        identity, login = await door.complete(response, relay, redirect.browser_token, resolver)
        assert identity.subject == "alice" and identity.email == "alice@corp.example"
        assert (identity.given_name, identity.family_name) == ("Alice", "Archer")
        assert identity.groups == ("staff", "trainers")
        assert login == LoginRequest(app="lms", target="/course/7")
        with pytest.raises(ReplayDetected):
            await door.complete(response, relay, redirect.browser_token, resolver)


async def test_cbc_encrypted_assertion_refused_without_legacy_switch(
    simplesamlphp: SimpleSamlPhp, tmp_path: Path, browser: httpx.AsyncClient
) -> None:
    async for door in make_door(simplesamlphp, tmp_path, encrypt=True):
        redirect = await door.begin(LoginRequest(app="lms"))
        response, relay = await drive_saml_login(browser, redirect.url, "alice", "alice-pass")
        with pytest.raises(TokenValidationError, match="AES-CBC"):
            await door.complete(response, relay, redirect.browser_token, resolver)


async def test_idp_initiated_login(simplesamlphp: SimpleSamlPhp, tmp_path: Path,
                                   browser: httpx.AsyncClient) -> None:
    async for door in make_door(simplesamlphp, tmp_path, allow_idp_initiated=True):
        url = simplesamlphp.idp_initiated_url(door.settings.sp_entity_id, "lms")
        response, relay = await drive_saml_login(browser, url, "bob", "bob-pass")
        assert relay == "lms"
        identity, login = await door.complete(response, relay, None, resolver)
        assert identity.email == "bob@corp.example" and login.app == "lms"


async def test_idp_initiated_refused_when_off(simplesamlphp: SimpleSamlPhp, tmp_path: Path,
                                              browser: httpx.AsyncClient) -> None:
    async for door in make_door(simplesamlphp, tmp_path):
        url = simplesamlphp.idp_initiated_url(door.settings.sp_entity_id, "lms")
        response, relay = await drive_saml_login(browser, url, "bob", "bob-pass")
        with pytest.raises(LoginStateError):
            await door.complete(response, relay, None, resolver)


async def test_metadata_file_and_schema_valid_sp_metadata(
    simplesamlphp: SimpleSamlPhp, tmp_path: Path
) -> None:
    settings = SamlIdpSettings(type="saml", sp_entity_id="https://gateway.test/sp",
                               metadata_file=str(simplesamlphp.metadata_file))
    async with httpx.AsyncClient() as http:
        door = SamlFrontDoor("ssp", settings, http, MemoryStore(), ACS, "https://x/metadata")
        await door.start()
        assert door.ready
    async for signed_door in make_door(simplesamlphp, tmp_path, sign_requests=True):
        for xml in (door.sp_metadata(), signed_door.sp_metadata()):
            root = etree.fromstring(xml)
            validate_schema(root, "saml-schema-metadata-2.0.xsd", "SP metadata")
        assert b'AuthnRequestsSigned="true"' in signed_door.sp_metadata()
        assert b'use="encryption"' in signed_door.sp_metadata()
