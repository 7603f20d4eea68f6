"""SAML 2.0 conformance leftovers (issue 12): IssueInstant age, UTC-only times, duplicate
attributes, the XML Encryption allow-list and required encryption.

Every response is built and signed with test keys by :class:`HostileIdp`, like the attack
corpus in test_saml_attacks.py; each refusal is checked through ``SamlFrontDoor.complete``,
so nothing here depends on how the checks are arranged inside.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from lxml import etree

from gateway.auth.base import LoginRequest
from gateway.auth.saml import SamlFrontDoor
from gateway.errors import NotFound, TokenValidationError
from gateway.identity import Identity
from gateway.settings import SamlIdpSettings
from gateway.store.memory import MemoryStore
from tests.support.saml_attacks import (
    DS,
    SAML,
    XENC,
    HostileIdp,
    encode,
    iso,
    make_keypair,
)

SP = "https://gateway.corp.example/saml/sp"
ACS = "https://gateway.corp.example/auth/corp/acs"
OAEP = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
GCM = "http://www.w3.org/2009/xmlenc11#aes256-gcm"
CBC = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"
RSA_1_5 = "http://www.w3.org/2001/04/xmlenc#rsa-1_5"


def _unsolicited(relay: str | None) -> LoginRequest:
    raise NotFound("no unsolicited responses in these tests")


class Door:
    """A SAML front door trusting the hostile IdP's test key; logins are SP-initiated."""

    def __init__(self, door: SamlFrontDoor, idp: HostileIdp, sp_cert_pem: str) -> None:
        self.door, self.idp, self.sp_cert_pem = door, idp, sp_cert_pem

    async def begin(self) -> tuple[str, str, str]:
        """(request id, RelayState, browser token) of a fresh login."""
        redirect = await self.door.begin(LoginRequest(app="lms"))
        query = parse_qs(urlsplit(redirect.url).query)
        xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15)
        return str(etree.fromstring(xml).get("ID")), query["RelayState"][0], redirect.browser_token

    async def sign_in(self, build: Callable[[str], etree._Element]) -> Identity:
        """Start a login, let ``build(request_id)`` make the response, post it."""
        rid, relay, browser = await self.begin()
        identity, _ = await self.door.complete(encode(build(rid)), relay, browser, _unsolicited)
        return identity

    async def refused(self, build: Callable[[str], etree._Element]) -> str:
        """Assert the response is refused as invalid; return the operator reason."""
        with pytest.raises(TokenValidationError) as info:
            await self.sign_in(build)
        return info.value.reason


async def make_door(tmp_path: Path, **settings: object) -> Door:
    idp = HostileIdp(SP, ACS)
    (tmp_path / "idp.xml").write_bytes(idp.metadata())
    sp = make_keypair("gateway sp")
    (tmp_path / "sp.key").write_text(sp.key_pem)
    (tmp_path / "sp.crt").write_text(sp.cert_pem)
    values: dict[str, object] = {
        "type": "saml",
        "sp_entity_id": SP,
        "metadata_file": str(tmp_path / "idp.xml"),
        "sp_key_file": str(tmp_path / "sp.key"),
        "sp_cert_file": str(tmp_path / "sp.crt"),
    }
    values.update(settings)
    door = SamlFrontDoor(
        "corp",
        SamlIdpSettings(**values),
        httpx.AsyncClient(),
        MemoryStore(),
        ACS,
        "https://gateway.corp.example/auth/corp/metadata",
    )
    await door.start()
    assert door.ready
    return Door(door, idp, sp.cert_pem)


@pytest.fixture
async def d(tmp_path: Path) -> Door:
    return await make_door(tmp_path)


def signed(
    d: Door, rid: str, edit: Callable[[etree._Element], None] = lambda a: None, **kw: object
) -> etree._Element:
    """A response carrying one assertion, ``edit``-ed before it is signed."""
    assertion = d.idp.assertion(in_response_to=rid, **kw)  # type: ignore[arg-type]
    edit(assertion)
    return d.idp.response(d.idp.sign(assertion), in_response_to=rid)


# --- IssueInstant age (SAML core 2.3.3, 3.2.2) -----------------------------------------------
# Defaults: max_issue_instant_age_seconds = 300, clock_skew_seconds = 60.


async def test_recent_issue_instants_accepted(d: Door) -> None:
    def build(rid: str) -> etree._Element:
        old = iso(time.time() - 330)  # older than max age, within max age + skew
        r = signed(d, rid, lambda a: a.set("IssueInstant", old))
        r.set("IssueInstant", old)
        return r

    assert (await d.sign_in(build)).subject == "alice@corp.example"
    assert (await d.sign_in(lambda rid: signed(d, rid))).subject == "alice@corp.example"


async def test_old_response_issue_instant_refused(d: Door) -> None:
    def build(rid: str) -> etree._Element:
        r = signed(d, rid)
        r.set("IssueInstant", iso(time.time() - 400))  # the Response is not signed here
        return r

    assert "Response IssueInstant is older" in await d.refused(build)


async def test_old_assertion_issue_instant_refused(d: Door) -> None:
    # Validity windows are fresh: only the signed IssueInstant gives the age away.
    old = iso(time.time() - 400)
    reason = await d.refused(lambda rid: signed(d, rid, lambda a: a.set("IssueInstant", old)))
    assert "Assertion IssueInstant is older" in reason


@pytest.mark.parametrize("which", ["Response", "Assertion"])
async def test_issue_instant_from_the_future_refused(d: Door, which: str) -> None:
    future = iso(time.time() + 120)  # beyond the 60 s skew

    def build(rid: str) -> etree._Element:
        if which == "Assertion":
            return signed(d, rid, lambda a: a.set("IssueInstant", future))
        r = signed(d, rid)
        r.set("IssueInstant", future)
        return r

    assert f"{which} IssueInstant is in the future" in await d.refused(build)


async def test_max_issue_instant_age_is_configurable(tmp_path: Path) -> None:
    d = await make_door(tmp_path, max_issue_instant_age_seconds=30)
    old = iso(time.time() - 100)  # > 30 + 60
    assert "older" in await d.refused(
        lambda rid: signed(d, rid, lambda a: a.set("IssueInstant", old))
    )


# --- times are UTC (SAML core 1.3.3) ---------------------------------------------------------


def with_offset(value: str, hours: int) -> str:
    """The same instant written with a "+02:00"-style offset instead of "Z"."""
    moment = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.timezone(dt.timedelta(hours=hours))).isoformat()


# (where, attribute): "Response", "Assertion", or a path below the assertion.
TIME_ATTRIBUTES = [
    ("Response", "IssueInstant"),
    ("Assertion", "IssueInstant"),
    (f"{SAML}Conditions", "NotBefore"),
    (f"{SAML}Conditions", "NotOnOrAfter"),
    (f"{SAML}Subject/{SAML}SubjectConfirmation/{SAML}SubjectConfirmationData", "NotOnOrAfter"),
    (f"{SAML}AuthnStatement", "AuthnInstant"),
    (f"{SAML}AuthnStatement", "SessionNotOnOrAfter"),
]


def _time_element(assertion: etree._Element, path: str) -> etree._Element:
    return assertion if path == "Assertion" else assertion.find(path)


def _with_session_end(assertion: etree._Element) -> None:
    authn = assertion.find(f"{SAML}AuthnStatement")
    authn.set("SessionNotOnOrAfter", iso(time.time() + 3600))


@pytest.mark.parametrize(
    "path, attribute",
    TIME_ATTRIBUTES,
    ids=[f"{p.rsplit('}', 1)[-1]}-{a}" for p, a in TIME_ATTRIBUTES],
)
@pytest.mark.parametrize("hours", [2, -5])
async def test_time_with_zone_offset_refused(
    d: Door, path: str, attribute: str, hours: int
) -> None:
    def rewrite(element: etree._Element) -> None:
        element.set(attribute, with_offset(element.get(attribute), hours))

    def edit(assertion: etree._Element) -> None:
        _with_session_end(assertion)
        if path != "Response":
            rewrite(_time_element(assertion, path))

    def build(rid: str) -> etree._Element:
        r = signed(d, rid, edit)
        if path == "Response":
            rewrite(r)
        return r

    assert "not in UTC" in await d.refused(build)


async def test_utc_without_designator_and_fractions_accepted(d: Door) -> None:
    """Bare UTC (what 1.3.3 literally asks for) and "Z" with fractional seconds are fine."""

    def edit(assertion: etree._Element) -> None:
        _with_session_end(assertion)
        for path, attribute in TIME_ATTRIBUTES[1:]:
            element = _time_element(assertion, path)
            element.set(attribute, element.get(attribute).rstrip("Z"))
        assertion.set("IssueInstant", assertion.get("IssueInstant") + ".1234567")

    def build(rid: str) -> etree._Element:
        r = signed(d, rid, edit)
        r.set("IssueInstant", r.get("IssueInstant")[:-1] + ".25Z")
        return r

    assert (await d.sign_in(build)).subject == "alice@corp.example"


# --- attributes ------------------------------------------------------------------------------


async def test_duplicate_attribute_name_refused(d: Door) -> None:
    attrs = {"email": ["alice@corp.example"], "groups": ["staff"]}

    def twice(assertion: etree._Element) -> None:
        statement = assertion.find(f"{SAML}AttributeStatement")
        extra = etree.SubElement(statement, SAML + "Attribute", Name="groups")
        etree.SubElement(extra, SAML + "AttributeValue").text = "admins"

    assert "occurs more than once" in await d.refused(
        lambda rid: signed(d, rid, twice, attributes=attrs)
    )


async def test_duplicate_attribute_name_across_statements_refused(d: Door) -> None:
    def second_statement(assertion: etree._Element) -> None:
        statement = etree.SubElement(assertion, SAML + "AttributeStatement")
        extra = etree.SubElement(statement, SAML + "Attribute", Name="email")
        etree.SubElement(extra, SAML + "AttributeValue").text = "ceo@corp.example"

    assert "occurs more than once" in await d.refused(lambda rid: signed(d, rid, second_statement))


# --- XML Encryption allow-list ---------------------------------------------------------------


def encrypted(d: Door, rid: str, **how: str) -> etree._Element:
    assertion = d.idp.sign(d.idp.assertion(in_response_to=rid))
    return d.idp.response(d.idp.encrypt(assertion, d.sp_cert_pem, **how), in_response_to=rid)


@pytest.mark.parametrize("key_transport", ["rsa-oaep-mgf1p", "rsa-oaep"])
@pytest.mark.parametrize("content", ["aes128-gcm", "aes192-gcm", "aes256-gcm"])
async def test_oaep_and_gcm_accepted(d: Door, key_transport: str, content: str) -> None:
    identity = await d.sign_in(
        lambda rid: encrypted(d, rid, key_transport=key_transport, content=content)
    )
    assert identity.email == "alice@corp.example"


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("content", ["aes128-gcm", "aes256-cbc"])
async def test_rsa_pkcs1_v15_key_transport_always_refused(
    tmp_path: Path, legacy: bool, content: str
) -> None:
    d = await make_door(tmp_path, allow_legacy_cbc_encryption=legacy)
    reason = await d.refused(
        lambda rid: encrypted(d, rid, key_transport="rsa-1_5", content=content)
    )
    assert "PKCS#1 v1.5" in reason


async def test_pkcs1_v15_refused_before_any_decryption(d: Door) -> None:
    """The EncryptedKey is garbage: a decrypting SP would say so (a padding oracle's first
    question); ours refuses on the algorithm name alone."""

    def build(rid: str) -> etree._Element:
        r = encrypted(d, rid, key_transport="rsa-1_5")
        r.find(f".//{XENC}EncryptedKey/{XENC}CipherData/{XENC}CipherValue").text = "AAAA"
        return r

    reason = await d.refused(build)
    assert "PKCS#1 v1.5" in reason and "decrypted" not in reason


@pytest.mark.parametrize("content", ["aes128-cbc", "aes192-cbc", "aes256-cbc"])
async def test_aes_cbc_refused_by_default_accepted_with_switch(
    tmp_path: Path, content: str
) -> None:
    d = await make_door(tmp_path)
    assert "AES-CBC" in await d.refused(lambda rid: encrypted(d, rid, content=content))
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    d = await make_door(legacy, allow_legacy_cbc_encryption=True)
    identity = await d.sign_in(lambda rid: encrypted(d, rid, content=content))
    assert identity.email == "alice@corp.example"


@pytest.mark.parametrize(
    "algorithm",
    [
        "http://www.w3.org/2001/04/xmlenc#tripledes-cbc",
        "http://www.w3.org/2001/04/xmlenc#kw-aes256",
    ],
)
async def test_other_algorithms_refused(d: Door, algorithm: str) -> None:
    def build(rid: str) -> etree._Element:
        r = encrypted(d, rid)
        element = "EncryptedData" if "tripledes" in algorithm else "EncryptedKey"
        r.find(f".//{XENC}{element}/{XENC}EncryptionMethod").set("Algorithm", algorithm)
        return r

    assert "not allowed" in await d.refused(build)


async def test_pkcs1_v15_key_hidden_in_nested_encrypted_key_refused(d: Door) -> None:
    """The outer EncryptedKey is RSA-OAEP; a second one, RSA PKCS#1 v1.5, hides in its KeyInfo
    (schema-valid: ds:KeyInfo takes any foreign element)."""

    def build(rid: str) -> etree._Element:
        r = encrypted(d, rid)
        outer = r.find(f".//{XENC}EncryptedKey")
        inner = etree.fromstring(etree.tostring(outer))
        inner.find(f"{XENC}EncryptionMethod").set("Algorithm", RSA_1_5)
        info = etree.Element(DS + "KeyInfo")
        info.append(inner)
        outer.find(f"{XENC}EncryptionMethod").addnext(info)
        return r

    assert "PKCS#1 v1.5" in await d.refused(build)


async def test_required_encryption_refuses_plaintext_assertion(tmp_path: Path) -> None:
    d = await make_door(tmp_path, require_encrypted_assertions=True)
    assert "not encrypted" in await d.refused(lambda rid: signed(d, rid))
    assert (await d.sign_in(lambda rid: encrypted(d, rid))).email == "alice@corp.example"


async def test_sp_metadata_advertises_the_allow_list(tmp_path: Path) -> None:
    strict = (await make_door(tmp_path)).door.sp_metadata().decode()
    assert GCM in strict and OAEP in strict
    assert CBC not in strict and RSA_1_5 not in strict
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    relaxed = (await make_door(legacy, allow_legacy_cbc_encryption=True)).door.sp_metadata()
    assert CBC in relaxed.decode() and RSA_1_5 not in relaxed.decode()
