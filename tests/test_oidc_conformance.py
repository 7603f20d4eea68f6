"""OIDC Core / RFC 6749 conformance leftovers, against the hostile provider of
``test_oidc_hostile``: untrusted extra audiences (OIDC Core 3.1.3.7 step 3), the token
response checked member by member on every sign-in (RFC 6749 5.1, OIDC Core 3.1.3.3), and
an accurate operator reason (``check``) for every refused token, with no token text logged.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey

from gateway.errors import ReplayDetected, TokenValidationError
from tests.test_oidc_hostile import CLIENT_ID, NOW, Harness, b64, h, new_key

__all__ = ["h"]  # the fixture, shared with test_oidc_hostile

OTHER_API = "https://api.example.test/analytics"


def refusals(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The fields of every ``oidc_token_refused`` line logged so far."""
    return [r.fields for r in caplog.records if r.getMessage() == "oidc_token_refused"]  # type: ignore[attr-defined]


def assert_no_token_text(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Neither an issued token nor any of its JWS segments reached a log line."""
    logged = caplog.text + "".join(repr(getattr(r, "fields", "")) for r in caplog.records)
    assert harness.idp.issued, "the IdP issued nothing: the test did not get far enough"
    for token in harness.idp.issued:
        for piece in (token, *(p for p in token.split(".") if len(p) > 8)):
            assert piece not in logged


async def refused(
    harness: Harness, caplog: pytest.LogCaptureFixture, check: str
) -> TokenValidationError:
    """Sign in, expect a refusal with ``check``, logged once as such and without token text."""
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TokenValidationError) as caught:
        await harness.login()
    assert caught.value.check == check, caught.value.reason
    assert caught.value.status == 401
    lines = refusals(caplog)
    assert [line["check"] for line in lines] == [check]
    assert lines[0]["idp"] == "corp" and lines[0]["reason"] == caught.value.reason
    assert_no_token_text(harness, caplog)
    return caught.value


# --- OIDC Core 3.1.3.7 step 3: additional audiences ---------------------------------------


async def test_untrusted_extra_audience_refused_even_with_azp_our_client(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.idp.claims_patch = {"aud": [CLIENT_ID, OTHER_API], "azp": CLIENT_ID}
    error = await refused(h, caplog, "untrusted_audience")
    assert OTHER_API in error.reason
    assert h.idp.calls["/userinfo"] == 0
    # Only the "callback used" marker is left: no nonce consumed, nothing else stored.
    assert h.store.entry_count() == 1


async def test_trusted_extra_audience_accepted() -> None:
    harness = Harness(trusted_audiences=(OTHER_API,))
    await harness.door.start()
    harness.idp.claims_patch = {"aud": [CLIENT_ID, OTHER_API], "azp": CLIENT_ID}
    identity, _ = await harness.login()
    assert identity.subject == "emp-42"


@pytest.mark.parametrize(
    ("patch", "check"),
    [
        (
            {"aud": [CLIENT_ID, OTHER_API, "https://evil.example.test"], "azp": CLIENT_ID},
            "untrusted_audience",
        ),
        ({"aud": [CLIENT_ID, OTHER_API]}, "azp_missing"),  # step 4
        ({"aud": [CLIENT_ID, OTHER_API], "azp": OTHER_API}, "azp_mismatch"),  # step 5
        ({"aud": [OTHER_API]}, "wrong_audience"),  # trusting an extra never replaces us
    ],
)
async def test_trusted_extra_audience_keeps_the_other_audience_rules(
    caplog: pytest.LogCaptureFixture, patch: dict[str, Any], check: str
) -> None:
    harness = Harness(trusted_audiences=(OTHER_API,))
    await harness.door.start()
    harness.idp.claims_patch = patch
    await refused(harness, caplog, check)


# --- RFC 6749 5.1 / OIDC Core 3.1.3.3: the token response on every sign-in ----------------


@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "BEARER"])
async def test_bearer_token_type_accepted_in_any_case(h: Harness, token_type: str) -> None:
    h.idp.token_body_patch = {"token_type": token_type, "scope": "openid email"}
    identity, _ = await h.login()
    assert identity.subject == "emp-42"


@pytest.mark.parametrize(
    "patch",
    [
        {"token_type": "mac"},
        {"token_type": "DPoP"},
        {"token_type": None},  # missing
        {"token_type": 1},
        {"id_token": 42},
        {"id_token": ""},
        {"id_token": ["a.b.c"]},
        {"access_token": None},  # missing: RFC 6749 5.1 REQUIRED, even without userinfo
        {"access_token": 12345},
        {"access_token": ""},
        {"expires_in": "3600"},
        {"expires_in": -1},
        {"expires_in": 0},
        {"expires_in": True},
        {"expires_in": 3600.5},
        {"scope": ["openid", "email"]},
        {"refresh_token": {"value": "r"}},
    ],
)
async def test_malformed_token_response_refused_on_every_sign_in(
    caplog: pytest.LogCaptureFixture, patch: dict[str, Any]
) -> None:
    # userinfo "never": the access token is not needed, the response is still checked.
    harness = Harness(userinfo="never")
    await harness.door.start()
    harness.idp.token_body_patch = patch
    error = await refused(harness, caplog, "token_response")
    member = next(iter(patch))
    assert member in error.reason
    assert harness.idp.calls["/token"] == 1 and harness.idp.calls["/userinfo"] == 0
    assert harness.store.entry_count() == 1  # the "callback used" marker; no nonce consumed


async def test_token_response_that_is_not_an_object_refused(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    issue = h.idp.token

    def as_list(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[issue(request).json()])

    h.idp.token = as_list  # type: ignore[method-assign]
    error = await refused(h, caplog, "token_response")
    assert "JSON object" in error.reason


async def test_expires_in_absent_is_fine(h: Harness) -> None:
    h.idp.token_body_patch = {"expires_in": None}
    identity, _ = await h.login()
    assert identity.subject == "emp-42"


# --- an accurate operator reason for each refusal ------------------------------------------


async def test_crit_header_logged_as_unsupported_not_as_bad_signature(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Correctly signed by the IdP's own key: only the critical extension is wrong.
    h.idp.header = {"crit": ["urn:example:ext"], "urn:example:ext": True}
    error = await refused(h, caplog, "crit_unsupported")
    assert "RFC 7515 4.1.11" in error.reason and "signature" not in error.reason


async def test_unknown_non_critical_header_is_ignored(h: Harness) -> None:
    # RFC 7515 4: header parameters not understood MUST be ignored unless listed in crit.
    h.idp.header = {"x-vendor-trace": "abc", "typ": "JWT"}
    identity, _ = await h.login()
    assert identity.subject == "emp-42"


async def test_unknown_kid_after_refresh_logged_as_such(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.idp.header = {"kid": "rotated-" + secrets.token_hex(4)}
    error = await refused(h, caplog, "unknown_kid")
    assert "refetched just now" in error.reason
    assert h.idp.calls["/jwks"] == 2  # start() + the refetch the unknown kid triggered


async def test_disallowed_algorithm_logged_as_such(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Properly signed with the IdP's RSA key, but RS384 is not in the configured list.
    h.idp.header = {"alg": "RS384"}
    error = await refused(h, caplog, "alg_not_allowed")
    assert "'RS384'" in error.reason


async def test_bad_signature_logged_as_such(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h.idp.signing_key = new_key("k1")  # the IdP's kid, a key it never published
    await refused(h, caplog, "bad_signature")


async def test_key_of_the_wrong_type_logged_as_such(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    ec = ECKey.generate_key("P-256", {"kid": "k1"}, private=True)

    def es256(claims: dict[str, Any]) -> str:  # kid names the IdP's RSA key
        return jws.serialize_compact(
            {"alg": "ES256", "kid": "k1"}, json.dumps(claims).encode(), ec, algorithms=["ES256"]
        )

    h.idp.raw_token = es256
    await refused(h, caplog, "key_alg_mismatch")


@pytest.mark.parametrize(
    "header",
    [
        '"RS256"',  # a JSON string, not an object (crashed before)
        '{"alg": "RS256", "kid": 7}',  # kid must be a string (RFC 7515 4.1.4)
        '{"alg": "RS256", "kid": "k1", "x5c": "not-a-list"}',
        "not json",
    ],
)
async def test_malformed_header_logged_as_malformed(
    h: Harness, caplog: pytest.LogCaptureFixture, header: str
) -> None:
    def token(claims: dict[str, Any]) -> str:
        return f"{b64(header.encode())}.{b64(json.dumps(claims).encode())}.{b64(b'sig')}"

    h.idp.raw_token = token
    await refused(h, caplog, "malformed_jws")


@pytest.mark.parametrize(
    ("patch", "check"),
    [
        ({"iss": "https://evil.example.test/tenant"}, "wrong_issuer"),
        ({"aud": "someone-else"}, "wrong_audience"),
        ({"aud": [CLIENT_ID, "someone-else"], "azp": CLIENT_ID}, "untrusted_audience"),
        ({"azp": "someone-else"}, "azp_mismatch"),
        ({"exp": int(NOW) - 61}, "expired"),
        ({"nbf": int(NOW) + 120}, "not_yet_valid"),
        ({"iat": int(NOW) + 120, "exp": int(NOW) + 600}, "issued_in_future"),
        ({"iat": int(NOW) - 661}, "too_old"),
        ({"nonce": "x" * 43}, "nonce_mismatch"),
    ],
)
async def test_each_claim_refusal_has_its_own_reason(
    h: Harness, caplog: pytest.LogCaptureFixture, patch: dict[str, Any], check: str
) -> None:
    h.idp.claims_patch = patch
    await refused(h, caplog, check)


async def test_replayed_nonce_logged_as_replay(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await h.login()
    first = h.idp.issued[0]
    h.idp.raw_token = lambda claims: first
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ReplayDetected) as caught:
        await h.login()
    assert caught.value.check == "nonce_replay"
    assert [line["check"] for line in refusals(caplog)] == ["nonce_replay"]
    assert_no_token_text(h, caplog)


async def test_userinfo_sub_mismatch_logged_as_such(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.idp.userinfo_patch = {"sub": "emp-43"}
    await refused(h, caplog, "userinfo_sub_mismatch")
