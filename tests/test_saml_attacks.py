"""The SAML attack corpus: every hostile response is refused, with the right error type, and
no Identity comes out of it. A correctly signed response is the positive control."""

from __future__ import annotations

import base64
import copy
import time
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from lxml import etree

from gateway.auth.base import LoginRequest
from gateway.auth.saml import SamlFrontDoor
from gateway.errors import (
    BadRequest,
    IdpRejected,
    LoginStateError,
    NotFound,
    ReplayDetected,
    TokenValidationError,
)
from gateway.observability import Metrics
from gateway.settings import SamlIdpSettings
from gateway.store.memory import MemoryStore
from tests.support.saml_attacks import (
    DS,
    SAML,
    SAMLP,
    HostileIdp,
    clone,
    encode,
    make_keypair,
)

SP = "https://gateway.corp.example/saml/sp"
ACS = "https://gateway.corp.example/auth/corp/acs"


class Harness:
    def __init__(self, door: SamlFrontDoor, idp: HostileIdp, store: MemoryStore, metrics: Metrics):
        self.door, self.idp, self.store, self.metrics = door, idp, store, metrics
        # The browser token of each login begun, by RelayState: posts default to the browser
        # that started the login, as a real one would (the binding cookie is required).
        self.browsers: dict[str, str] = {}

    async def begin(self) -> tuple[str, str, str]:
        """Start a login; returns (request id, RelayState, browser token)."""
        redirect = await self.door.begin(LoginRequest(app="lms"))
        query = parse_qs(urlsplit(redirect.url).query)
        xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15)
        request_id = etree.fromstring(xml).get("ID")
        self.browsers[query["RelayState"][0]] = redirect.browser_token
        return request_id, query["RelayState"][0], redirect.browser_token

    async def post(self, response: etree._Element | str, relay: str | None = None,
                   browser: str | None = None):
        body = response if isinstance(response, str) else encode(response)
        if browser is None and relay is not None:
            browser = self.browsers.get(relay)
        return await self.door.complete(body, relay, browser, unsolicited)


def unsolicited(relay: str | None) -> LoginRequest:
    if relay != "lms":
        raise NotFound("unknown app")
    return LoginRequest(app="lms")


async def make_harness(tmp_path: Path, **settings: object) -> Harness:
    idp = HostileIdp(SP, ACS)
    (tmp_path / "idp.xml").write_bytes(idp.metadata())
    sp = make_keypair("gateway sp")
    (tmp_path / "sp.key").write_text(sp.key_pem)
    (tmp_path / "sp.crt").write_text(sp.cert_pem)
    values: dict[str, object] = {
        "type": "saml", "sp_entity_id": SP, "metadata_file": str(tmp_path / "idp.xml"),
        "sp_key_file": str(tmp_path / "sp.key"), "sp_cert_file": str(tmp_path / "sp.crt"),
    }
    values.update(settings)
    store, metrics = MemoryStore(), Metrics()
    door = SamlFrontDoor("corp", SamlIdpSettings(**values), httpx.AsyncClient(), store, ACS,
                         "https://gateway.corp.example/auth/corp/metadata", metrics)
    await door.start()
    assert door.ready
    h = Harness(door, idp, store, metrics)
    h.sp_keys = sp  # type: ignore[attr-defined]
    return h


@pytest.fixture
async def h(tmp_path: Path) -> Harness:
    return await make_harness(tmp_path)


async def test_correct_response_signs_in(h: Harness) -> None:
    rid, relay, browser = await h.begin()
    identity, login = await h.post(h.idp.signed_response(in_response_to=rid), relay, browser)
    assert identity.subject == "alice@corp.example"
    assert identity.email == "alice@corp.example"
    assert (identity.given_name, identity.family_name) == ("Alice", "Archer")
    assert identity.groups == ("staff", "trainers")
    assert login == LoginRequest(app="lms")


async def refused(h: Harness, exc: type[Exception], response, relay=None, browser=None) -> str:
    """Assert the response is refused with ``exc`` and nothing was remembered as used."""
    before = set(h.store._data)
    with pytest.raises(exc) as info:
        await h.post(response, relay, browser)
    assert type(info.value) is exc, info.value
    added = set(h.store._data) - before
    # Only an assertion that passed every check but arrived with a bad login state is burned
    # (so it cannot be retried); nothing else is ever written by a refused response.
    assert not [k for k in added if ":assertion:" not in k or exc is not LoginStateError]
    return str(info.value.reason)


# --- signature presence, keys and shape ------------------------------------------------------

async def test_signature_removed(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    r = h.idp.signed_response(in_response_to=rid)
    sig = r.find(f"{SAML}Assertion/{DS}Signature")
    sig.getparent().remove(sig)
    assert "not signed" in await refused(h, TokenValidationError, r, relay)


async def test_value_changed_after_signing(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    r = h.idp.signed_response(in_response_to=rid)
    r.find(f".//{SAML}NameID").text = "ceo@corp.example"
    assert "does not verify" in await refused(h, TokenValidationError, r, relay)


async def test_self_signed_cert_copying_idp_name_in_keyinfo(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    forged = make_keypair.__wrapped__("idp.test.example")  # same subject name as the real IdP cert
    a = h.idp.sign(h.idp.assertion(in_response_to=rid, name_id="ceo@corp.example"), forged)
    assert "does not verify" in await refused(h, TokenValidationError,
                                              h.idp.response(a, in_response_to=rid), relay)


async def test_positive_control_unrelated_embedded_certificate_is_accepted(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    unrelated = make_keypair("some other party")
    a = h.idp.sign(h.idp.assertion(in_response_to=rid), keyinfo_cert=unrelated)
    identity, _ = await h.post(h.idp.response(a, in_response_to=rid), relay)
    assert identity.subject == "alice@corp.example"


async def test_sha1_refused_unless_allowed(h: Harness, tmp_path: Path) -> None:
    rid, relay, _ = await h.begin()
    a = h.idp.sign(h.idp.assertion(in_response_to=rid), sha1=True)
    assert "SHA-1" in await refused(h, TokenValidationError, h.idp.response(a, in_response_to=rid),
                                    relay)
    (tmp_path / "lax").mkdir()
    lax = await make_harness(tmp_path / "lax", allow_sha1=True)
    rid, relay, _ = await lax.begin()
    a = lax.idp.sign(lax.idp.assertion(in_response_to=rid), sha1=True)
    identity, _ = await lax.post(lax.idp.response(a, in_response_to=rid), relay)
    assert identity.subject == "alice@corp.example"


async def test_two_references_refused(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    r = h.idp.signed_response(in_response_to=rid)
    ref = r.find(f".//{DS}Reference")
    ref.addnext(copy.deepcopy(ref))
    assert "exactly one Reference" in await refused(h, TokenValidationError, r, relay)


async def test_foreign_transform_refused(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    r = etree.fromstring(etree.tostring(h.idp.signed_response(in_response_to=rid)))
    transforms = r.find(f".//{DS}Transforms")
    etree.SubElement(transforms, DS + "Transform",
                     Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116")
    assert "transforms" in await refused(h, TokenValidationError, r, relay)


async def test_response_signature_required_when_configured(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, signed="both")
    rid, relay, _ = await h.begin()
    assert "response is not signed" in await refused(
        h, TokenValidationError, h.idp.signed_response(in_response_to=rid), relay)
    identity, _ = await h.post(h.idp.sign(h.idp.signed_response(in_response_to=rid)), relay)
    assert identity.subject == "alice@corp.example"


# --- XML Signature Wrapping (names after SAML Raider's XSW1-XSW8) ----------------------------

def _evil(h: Harness, rid: str) -> etree._Element:
    return h.idp.assertion(in_response_to=rid, name_id="ceo@corp.example")


async def test_xsw1_and_xsw2_response_signature_wrapping(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, signed="response")
    rid, relay, _ = await h.begin()
    for inside_signature in (True, False):
        original = h.idp.sign(h.idp.response(h.idp.assertion(in_response_to=rid),
                                             in_response_to=rid))
        evil = clone(original)
        evil.set("ID", "_evil" + evil.get("ID"))
        evil.replace(evil.find(SAML + "Assertion"), _evil(h, rid))
        sig = evil.find(DS + "Signature")
        untouched = clone(original)
        untouched.remove(untouched.find(DS + "Signature"))
        if inside_signature:  # XSW1: original response inside the signature
            etree.SubElement(sig, DS + "Object").append(untouched)
        else:  # XSW2: original response as a sibling before the signature
            sig.addprevious(untouched)
        await refused(h, TokenValidationError, evil, relay)


async def test_xsw3_to_xsw8_assertion_wrapping(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    signed = h.idp.sign(h.idp.assertion(in_response_to=rid))
    sig_id = signed.get("ID")

    def unsigned_copy() -> etree._Element:
        a = clone(signed)
        a.remove(a.find(DS + "Signature"))
        return a

    shapes: dict[str, etree._Element] = {}
    # XSW3: evil assertion placed before the signed one.
    shapes["xsw3"] = h.idp.response(_evil(h, rid), clone(signed), in_response_to=rid)
    # XSW4: evil assertion wraps the signed one.
    evil = _evil(h, rid)
    evil.append(clone(signed))
    shapes["xsw4"] = h.idp.response(evil, in_response_to=rid)
    # XSW5: signed assertion's values changed (signature kept); an unsigned original appended.
    changed = clone(signed)
    changed.find(f".//{SAML}NameID").text = "ceo@corp.example"
    shapes["xsw5"] = h.idp.response(changed, unsigned_copy(), in_response_to=rid)
    # XSW6: like XSW5 but the original sits inside the changed one's Signature.
    changed = clone(signed)
    changed.find(f".//{SAML}NameID").text = "ceo@corp.example"
    etree.SubElement(changed.find(DS + "Signature"), DS + "Object").append(unsigned_copy())
    shapes["xsw6"] = h.idp.response(changed, in_response_to=rid)
    # XSW7: signed assertion hidden in Extensions; evil assertion is the response's child.
    r = h.idp.response(_evil(h, rid), in_response_to=rid)
    ext = etree.Element(SAMLP + "Extensions")
    ext.append(clone(signed))
    r.find(SAMLP + "Status").addprevious(ext)
    shapes["xsw7"] = r
    # XSW8: evil assertion carries the signature, original inside its Signature/Object.
    evil = _evil(h, rid)
    evil.set("ID", sig_id)
    sig = clone(signed.find(DS + "Signature"))
    evil.find(SAML + "Issuer").addnext(sig)
    etree.SubElement(sig, DS + "Object").append(unsigned_copy())
    shapes["xsw8"] = h.idp.response(evil, in_response_to=rid)
    for name, response in shapes.items():
        reason = await refused(h, TokenValidationError, response, relay)
        assert reason, name
    # The untouched signed assertion still works afterwards: nothing above used it up.
    identity, _ = await h.post(h.idp.response(signed, in_response_to=rid), relay)
    assert identity.subject == "alice@corp.example"


async def test_unsigned_assertion_beside_signed_one(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    r = h.idp.response(h.idp.sign(h.idp.assertion(in_response_to=rid)), _evil(h, rid),
                       in_response_to=rid)
    assert "exactly one assertion" in await refused(h, TokenValidationError, r, relay)


async def test_assertion_inside_advice_never_authenticates(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    inner = h.idp.sign(_evil(h, rid))
    outer = h.idp.assertion(in_response_to=rid)
    advice = etree.Element(SAML + "Advice")
    advice.append(inner)
    outer.find(SAML + "Conditions").addnext(advice)
    r = h.idp.response(h.idp.sign(outer), in_response_to=rid)
    assert "exactly one assertion" in await refused(h, TokenValidationError, r, relay)


# --- comments and CDATA cannot truncate values ----------------------------------------------

@pytest.mark.parametrize("splitter", ["<!---->", "<![CDATA[]]>"])
async def test_comment_or_cdata_split_does_not_truncate(h: Harness, splitter: str) -> None:
    """The IdP signed "ceo@corp.example.evil.test" (the attacker's own account); a comment or
    CDATA inserted after "ceo@corp.example" must not make us read the victim's address."""
    rid, relay, _ = await h.begin()
    owned = "ceo@corp.example.evil.test"
    r = h.idp.response(h.idp.sign(h.idp.assertion(
        in_response_to=rid, name_id=owned,
        attributes={"email": [owned], "groups": ["staff.evil"]})), in_response_to=rid)
    xml = etree.tostring(r).decode()
    xml = xml.replace(">ceo@corp.example.evil.test<", f">ceo@corp.example{splitter}.evil.test<")
    xml = xml.replace(">staff.evil<", f">staff{splitter}.evil<")
    assert xml.count(splitter) == 3
    identity, _ = await h.post(encode(xml.encode()), relay)
    assert identity.subject == owned and identity.email == owned
    assert identity.groups == ("staff.evil",)


# --- parser attacks and size -----------------------------------------------------------------

XXE = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&x;</samlp:Response>"""
LAUGHS = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;">]>
<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&d;</samlp:Response>"""


@pytest.mark.parametrize("payload", [XXE, LAUGHS, XXE.decode().replace(
    'version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")])
async def test_dtd_and_entities_refused(h: Harness, payload: bytes) -> None:
    assert "DTD" in await refused(h, TokenValidationError, encode(payload))


async def test_size_and_encoding_bounds(h: Harness) -> None:
    await refused(h, BadRequest, "A" * 300_000)
    await refused(h, BadRequest, "not*base64!")
    await refused(h, BadRequest, encode(b"<unclosed"))
    await refused(h, TokenValidationError, encode(b"<x/>"))


# --- bindings: InResponseTo, replay, unsolicited, browser -----------------------------------

async def test_replay_refused_and_counted(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, allow_idp_initiated=True)
    response = encode(h.idp.signed_response())
    await h.post(response, "lms")
    with pytest.raises(ReplayDetected):
        await h.post(response, "lms")
    assert h.metrics.replay_rejections.labels(idp="corp", kind="assertion")._value.get() == 1
    rid, relay, _ = await h.begin()
    response = encode(h.idp.signed_response(in_response_to=rid))
    await h.post(response, relay)
    with pytest.raises(ReplayDetected):
        await h.post(response, relay)


async def test_unsolicited_refused_while_off(h: Harness) -> None:
    assert "unsolicited" in await refused(h, LoginStateError, h.idp.signed_response(), "lms")


async def test_unsolicited_goes_through_resolver_when_on(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, allow_idp_initiated=True)
    identity, login = await h.post(h.idp.signed_response(), "lms")
    assert login.app == "lms" and identity.subject == "alice@corp.example"
    with pytest.raises(NotFound):
        await h.post(h.idp.signed_response(), "https://evil.example/")


async def test_in_response_to_must_be_ours_and_single_use(h: Harness) -> None:
    await refused(h, LoginStateError, h.idp.signed_response(in_response_to="_forged"), "x")
    rid, relay, browser = await h.begin()
    await h.post(h.idp.signed_response(in_response_to=rid), relay, browser)
    await refused(h, LoginStateError, h.idp.signed_response(in_response_to=rid), relay)


async def test_foreign_browser_and_relay_state(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    await refused(h, LoginStateError, h.idp.signed_response(in_response_to=rid), relay, "other")
    rid, relay, _ = await h.begin()
    _, relay2, _ = await h.begin()
    await refused(h, LoginStateError, h.idp.signed_response(in_response_to=rid), relay2)
    # Absent cookie (login CSRF: a page auto-posts someone's response): refused, and the
    # pending request is consumed, so not even the right browser can use it afterwards.
    rid3, relay3, browser3 = await h.begin()
    response3 = h.idp.signed_response(in_response_to=rid3)
    with pytest.raises(LoginStateError):
        await h.door.complete(encode(response3), relay3, None, unsolicited)
    with pytest.raises(LoginStateError):
        await h.door.complete(encode(h.idp.signed_response(in_response_to=rid3)), relay3,
                              browser3, unsolicited)


# --- exact matches, times, status -------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("audience", SP + "-other"), ("audience", SP[:-1]),
    ("recipient", ACS + "/x"), ("recipient", ACS[:-1]),
    ("issuer", "https://idp.test.example/saml/evil"),
])
async def test_wrong_audience_recipient_issuer(h: Harness, field: str, value: str) -> None:
    rid, relay, _ = await h.begin()
    a = h.idp.sign(h.idp.assertion(in_response_to=rid, **{field: value}))
    await refused(h, TokenValidationError, h.idp.response(a, in_response_to=rid), relay)


@pytest.mark.parametrize("kw", [{"destination": ACS + "/evil"}, {"destination": ACS[:-3]},
                                {"issuer": "https://evil.example"}])
async def test_wrong_destination_or_response_issuer(h: Harness, kw: dict) -> None:
    rid, relay, _ = await h.begin()
    a = h.idp.sign(h.idp.assertion(in_response_to=rid))
    await refused(h, TokenValidationError, h.idp.response(a, in_response_to=rid, **kw), relay)


async def test_missing_audience_restriction(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    a = h.idp.assertion(in_response_to=rid)
    cond = a.find(SAML + "Conditions")
    cond.remove(cond[0])
    r = h.idp.response(h.idp.sign(a), in_response_to=rid)
    assert "AudienceRestriction" in await refused(h, TokenValidationError, r, relay)


# Offsets from "now" taken when the test runs (not at collection: a long suite would age them).
@pytest.mark.parametrize("field, offset, reason", [
    ("not_on_or_after", -120, "expired"),
    ("scd_not_on_or_after", -120, "expired"),
    ("not_before", 120, "not yet valid"),
])
async def test_time_window_with_skew(h: Harness, field: str, offset: int, reason: str) -> None:
    rid, relay, _ = await h.begin()
    a = h.idp.sign(h.idp.assertion(in_response_to=rid, **{field: time.time() + offset}))
    assert reason in await refused(h, TokenValidationError, h.idp.response(a, in_response_to=rid),
                                   relay)


async def test_within_skew_accepted(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    a = h.idp.sign(h.idp.assertion(in_response_to=rid, not_before=time.time() + 30,
                                   scd_not_on_or_after=time.time() - 30))
    identity, _ = await h.post(h.idp.response(a, in_response_to=rid), relay)
    assert identity.subject == "alice@corp.example"


async def test_non_success_status(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    r = h.idp.response(in_response_to=rid,
                       status="urn:oasis:names:tc:SAML:2.0:status:Responder")
    assert "Responder" in await refused(h, IdpRejected, r, relay)


# --- encryption -------------------------------------------------------------------------------

async def test_encrypted_assertion_decrypted_and_still_signed(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    cert = h.sp_keys.cert_pem  # type: ignore[attr-defined]
    enc = h.idp.encrypt(h.idp.sign(h.idp.assertion(in_response_to=rid)), cert)
    identity, _ = await h.post(h.idp.response(enc, in_response_to=rid), relay)
    assert identity.email == "alice@corp.example"
    rid, relay, _ = await h.begin()
    enc = h.idp.encrypt(h.idp.assertion(in_response_to=rid), cert)
    assert "not signed" in await refused(h, TokenValidationError,
                                         h.idp.response(enc, in_response_to=rid), relay)
    rid, relay, _ = await h.begin()
    other = make_keypair("someone else").cert_pem
    enc = h.idp.encrypt(h.idp.sign(h.idp.assertion(in_response_to=rid)), other)
    assert "decrypted" in await refused(h, TokenValidationError,
                                        h.idp.response(enc, in_response_to=rid), relay)


async def test_response_never_in_error_text(h: Harness) -> None:
    rid, relay, _ = await h.begin()
    r = h.idp.signed_response(in_response_to=rid)
    r.find(f".//{SAML}NameID").text = "ceo@corp.example"
    body = encode(r)
    with pytest.raises(TokenValidationError) as info:
        await h.post(body, relay)
    assert body[:40] not in str(info.value) and "ceo@" not in str(info.value)


async def test_unsigned_response_cannot_make_unsolicited_assertion_solicited(h: Harness) -> None:
    """A signed IdP-initiated assertion (no InResponseTo) wrapped by an attacker in an unsigned
    Response naming their own pending request must not pass as SP-initiated."""
    rid, relay, _ = await h.begin()
    a = h.idp.sign(h.idp.assertion())
    assert "InResponseTo" in await refused(h, TokenValidationError,
                                           h.idp.response(a, in_response_to=rid), relay)


async def test_signed_response_in_response_to_counts(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, signed="response")
    rid, relay, _ = await h.begin()
    r = h.idp.sign(h.idp.response(h.idp.assertion(), in_response_to=rid))
    identity, login = await h.post(r, relay)
    assert login.app == "lms" and identity.subject == "alice@corp.example"
