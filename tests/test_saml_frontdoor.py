"""SAML front door: metadata loading and refresh, AuthnRequest shape and signature,
attribute presets, and that the SAMLResponse never reaches the log."""

from __future__ import annotations

import asyncio
import base64
import logging
import zlib
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

import gateway.auth.saml as saml_module
from gateway.auth.base import LoginRequest
from gateway.auth.confirm import SignInConfirmations
from gateway.auth.saml import SamlFrontDoor
from gateway.auth.saml_attributes import to_identity
from gateway.auth.saml_checks import VerifiedAssertion
from gateway.errors import GatewayError, LoginStateError, TokenValidationError
from gateway.identity import Identity
from gateway.settings import ClaimMapping, SamlIdpSettings
from gateway.store.memory import MemoryStore
from tests.support.saml_attacks import HostileIdp, encode, make_keypair
from tests.test_saml_attacks import ACS, SP, make_harness


def _door(http: httpx.AsyncClient, **kw: object) -> SamlFrontDoor:
    settings = SamlIdpSettings(type="saml", sp_entity_id=SP, **kw)
    return SamlFrontDoor("corp", settings, http, MemoryStore(), ACS, "https://gw/metadata")


async def test_metadata_url_refresh_keeps_last_good_copy(monkeypatch) -> None:
    idp = HostileIdp(SP, ACS)
    answers = [httpx.Response(200, content=idp.metadata()), httpx.Response(500),
               httpx.Response(200, content=b"<not-metadata/>")]
    rolled = HostileIdp(SP, ACS)
    rolled.keys = make_keypair("idp rollover")
    answers.append(httpx.Response(200, content=rolled.metadata()))
    served = asyncio.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        response = answers.pop(0) if len(answers) > 1 else answers[0]
        if len(answers) == 1:
            served.set()
        return response

    real_sleep = asyncio.sleep
    monkeypatch.setattr(saml_module.asyncio, "sleep", lambda _s: real_sleep(0))
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        door = _door(http, metadata_url="https://idp.test.example/metadata")
        await door.start()
        assert door.ready
        first = door._metadata
        await asyncio.wait_for(served.wait(), 5)
        for _ in range(5):
            await real_sleep(0)
        assert door.ready and door._metadata is not first
        assert door._metadata.certificates[0].split()[2][:20] == rolled.keys.cert_b64[:20]
        await door.aclose()


async def test_start_never_raises(tmp_path: Path) -> None:
    unavailable = httpx.MockTransport(lambda r: httpx.Response(503))
    async with httpx.AsyncClient(transport=unavailable) as http:
        door = _door(http, metadata_url="https://idp.test.example/metadata")
        await door.start()
        assert not door.ready
        await door.aclose()
        plain = _door(http, metadata_url="http://idp.test.example/metadata")  # no dev_mode
        await plain.start()
        assert not plain.ready
        await plain.aclose()
        (tmp_path / "bad.xml").write_bytes(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>")
        bad = _door(http, metadata_file=str(tmp_path / "bad.xml"))
        await bad.start()
        assert not bad.ready
        with pytest.raises(TokenValidationError):
            await bad.begin(LoginRequest(app="lms"))


async def test_signed_authn_request(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, sign_requests=True)
    redirect = await h.door.begin(LoginRequest(app="lms", target="/x"))
    assert redirect.url.startswith(h.idp.sso_url + "?SAMLRequest=")
    query = urlsplit(redirect.url).query
    params = parse_qs(query)
    xml = etree.fromstring(zlib.decompress(base64.b64decode(params["SAMLRequest"][0]), -15))
    assert xml.get("AssertionConsumerServiceURL") == ACS
    assert xml.get("Destination") == h.idp.sso_url
    assert "/x" not in params["RelayState"][0] and "lms" not in params["RelayState"][0]
    signed_part = query.split("&Signature=")[0].encode()
    cert = x509.load_pem_x509_certificate(h.sp_keys.cert_pem.encode())  # type: ignore[attr-defined]
    signature = base64.b64decode(unquote(query.split("&Signature=")[1]))
    cert.public_key().verify(signature, signed_part, padding.PKCS1v15(), hashes.SHA256())


def _assertion(attrs: dict[str, tuple[str, ...]], fmt: str | None = None) -> VerifiedAssertion:
    return VerifiedAssertion(assertion_id="_a", in_response_to=None, name_id="N-1",
                             name_id_format=fmt, session_index="s", authn_instant=1,
                             expires_at=2.0, attributes=attrs)


CLAIMS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"


@pytest.mark.parametrize("preset, attrs", [
    ("entra", {CLAIMS + "emailaddress": ("a@corp.example",), CLAIMS + "givenname": ("A",),
               CLAIMS + "surname": ("B",),
               "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups": ("g1", "g2")}),
    ("adfs", {CLAIMS + "upn": ("a@corp.example",), CLAIMS + "givenname": ("A",),
              CLAIMS + "surname": ("B",), "http://schemas.xmlsoap.org/claims/Group": ("g1", "g2")}),
    ("okta", {"email": ("a@corp.example",), "firstName": ("A",), "lastName": ("B",),
              "groups": ("g1", "g2")}),
    ("eduperson", {"urn:oid:0.9.2342.19200300.100.1.3": ("a@corp.example",),
                   "urn:oid:2.5.4.42": ("A",), "urn:oid:2.5.4.4": ("B",),
                   "urn:oid:1.3.6.1.4.1.5923.1.5.1.1": ("g1", "g2")}),
])
def test_presets(preset: str, attrs: dict) -> None:
    identity = to_identity("corp", _assertion(attrs), preset, ClaimMapping())
    assert (identity.email, identity.given_name, identity.family_name) == (
        "a@corp.example", "A", "B")
    assert identity.groups == ("g1", "g2") and identity.subject == "N-1"


def test_overrides_and_transient_subject() -> None:
    attrs = {"mailPrimary": ("x@corp.example",), "uid": ("u7",)}
    identity = to_identity("corp", _assertion(attrs, "urn:oasis:names:tc:SAML:2.0:nameid-format:"
                                              "transient"), "generic",
                           ClaimMapping(email="mailPrimary", subject="uid"))
    assert (identity.subject, identity.email) == ("u7", "x@corp.example")
    with pytest.raises(TokenValidationError):
        to_identity("corp", _assertion({}, "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"),
                    "generic", ClaimMapping())


async def test_saml_response_never_logged(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    h = await make_harness(tmp_path)
    redirect = await h.door.begin(LoginRequest(app="lms"))
    rid = etree.fromstring(zlib.decompress(base64.b64decode(
        parse_qs(urlsplit(redirect.url).query)["SAMLRequest"][0]), -15)).get("ID")
    relay = parse_qs(urlsplit(redirect.url).query)["RelayState"][0]
    good = encode(h.idp.signed_response(in_response_to=rid))
    await h.door.complete(good, relay, redirect.browser_token, lambda r: LoginRequest())
    with pytest.raises(GatewayError):
        await h.door.complete(good[:-8] + "AAAAAA==", relay, None, lambda r: LoginRequest())
    assert good[20:80] not in caplog.text


# --- login CSRF: the browser binding and held IdP-initiated sign-ins ---------------------------

def _request_id(url: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(url).query)
    xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15)
    return etree.fromstring(xml).get("ID"), query["RelayState"][0]


def _no_unsolicited(relay: str | None) -> LoginRequest:
    raise AssertionError("a solicited response must not reach the unsolicited resolver")


async def test_response_without_binding_cookie_is_refused_and_burns_the_request(
    tmp_path: Path,
) -> None:
    """An attacker's page auto-posts the attacker's fresh response to a victim's browser,
    which never started that login and so has no binding cookie."""
    h = await make_harness(tmp_path)
    redirect = await h.door.begin(LoginRequest(app="lms"))
    rid, relay = _request_id(redirect.url)
    with pytest.raises(LoginStateError) as info:
        await h.door.complete(encode(h.idp.signed_response(in_response_to=rid)), relay, None,
                              _no_unsolicited)
    assert "another browser" in info.value.public and "start again" in info.value.public
    # Consumed: not even the right browser (or a fresh response for it) gets it now.
    with pytest.raises(LoginStateError):
        await h.door.complete(encode(h.idp.signed_response(in_response_to=rid)), relay,
                              redirect.browser_token, _no_unsolicited)


async def test_response_with_foreign_binding_cookie_is_refused(tmp_path: Path) -> None:
    h = await make_harness(tmp_path)
    victim = await h.door.begin(LoginRequest(app="lms"))
    attacker = await h.door.begin(LoginRequest(app="lms"))
    rid, relay = _request_id(attacker.url)
    with pytest.raises(LoginStateError):
        await h.door.complete(encode(h.idp.signed_response(in_response_to=rid)), relay,
                              victim.browser_token, _no_unsolicited)


async def test_the_starting_browser_still_signs_in(tmp_path: Path) -> None:
    h = await make_harness(tmp_path)
    redirect = await h.door.begin(LoginRequest(app="lms", target="/course/1"))
    rid, relay = _request_id(redirect.url)
    identity, login = await h.door.complete(
        encode(h.idp.signed_response(in_response_to=rid)), relay, redirect.browser_token,
        _no_unsolicited)
    assert identity.subject == "alice@corp.example"
    assert login == LoginRequest(app="lms", target="/course/1")


async def test_held_sign_in_is_bound_to_its_browser_and_single_use(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, allow_idp_initiated=True)
    identity, login = await h.door.complete(encode(h.idp.signed_response()), "lms", None,
                                            lambda relay: LoginRequest(app="lms"))
    confirmations = h.door.confirmations
    browser = await confirmations.hold(identity, login)
    held = await confirmations.peek(browser)
    assert (held.identity, held.login) == (identity, login)
    assert await confirmations.peek(browser) == held  # showing the page again is fine
    for other in (None, "", "another-browser"):
        with pytest.raises(LoginStateError):
            await confirmations.take(other, held.csrf)
    taken = await confirmations.take(browser, held.csrf)
    assert taken.identity == identity and taken.identity.groups == identity.groups
    with pytest.raises(LoginStateError):  # replay
        await confirmations.take(browser, held.csrf)
    # A wrong CSRF token consumes it too: one guess, then start again.
    browser = await confirmations.hold(identity, login)
    with pytest.raises(LoginStateError):
        await confirmations.take(browser, "guess")
    with pytest.raises(LoginStateError):
        await confirmations.take(browser, held.csrf)
    browser = await confirmations.hold(identity, login)
    await confirmations.discard(browser)
    with pytest.raises(LoginStateError):
        await confirmations.peek(browser)


async def test_held_sign_in_expires(tmp_path: Path) -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    confirmations = SignInConfirmations(store, "saml:corp:confirm", ttl=300)
    identity = Identity(idp="corp", subject="s", email="a@corp.example", groups=("g",))
    browser = await confirmations.hold(identity, LoginRequest(app="lms"))
    held = await confirmations.peek(browser)
    now[0] += 301
    with pytest.raises(LoginStateError):
        await confirmations.take(browser, held.csrf)
    assert held.csrf not in repr(held)
