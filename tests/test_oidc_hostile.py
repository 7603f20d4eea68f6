"""OidcFrontDoor against a hostile OpenID provider the tests control.

The provider is an httpx.MockTransport handler that signs with the tests' own keys (joserfc):
each test bends one thing the way an attacker or a broken IdP would and checks the sign-in
is refused with the right typed error, and that nothing else changed (token endpoint not
called, metrics recorded, last good keys kept).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import RSAKey
from joserfc.registry import JWS_HEADER_REGISTRY, HeaderParameter

from gateway.auth.base import LoginRequest
from gateway.auth.oidc import OidcFrontDoor
from gateway.errors import (
    ConfigError,
    IdpRejected,
    IdpUnavailable,
    LoginStateError,
    ReplayDetected,
    TokenValidationError,
)
from gateway.observability import Metrics
from gateway.settings import OidcIdpSettings, Secret
from gateway.store.memory import MemoryStore

ISSUER = "https://idp.example.test/tenant"
CLIENT_ID = "gateway-client"
CLIENT_SECRET = "client-secret-Zq81"
REDIRECT = "https://gw.example.test/auth/corp/callback"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_POOL: list[dict[str, Any]] = []


def new_key(kid: str) -> RSAKey:
    """A fresh-looking signing key; RSA generation is slow, so keys cycle through a pool."""
    if len(_POOL) < 3:
        _POOL.append(RSAKey.generate_key(2048, private=True).as_dict(private=True))
        raw = _POOL[-1]
    else:
        raw = _POOL.pop(0)
        _POOL.append(raw)
    return RSAKey.import_key({**raw, "kid": kid, "use": "sig"})


class HostileIdp:
    """Discovery, JWKS, token and userinfo endpoints, every answer adjustable by a test."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.key = new_key("k1")
        self.published = [self.key]
        self.jwks_answer: Callable[[], httpx.Response] | None = None
        self.discovery_extra: dict[str, Any] = {}
        self.calls: Counter[str] = Counter()
        self.codes: dict[str, dict[str, str]] = {}
        self.claims_patch: dict[str, Any] = {}
        self.drop: set[str] = set()
        self.header: dict[str, Any] = {}
        self.signing_key: RSAKey | None = None
        self.raw_token: Callable[[dict[str, Any]], str] | None = None
        self.token_body_patch: dict[str, Any] = {}
        self.userinfo_patch: dict[str, Any] = {}
        self.issued: list[str] = []
        self.token_requests: list[httpx.Request] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": ISSUER,
            "authorization_endpoint": f"{ISSUER}/authorize?tenant=acme",
            "token_endpoint": f"{ISSUER}/token",
            "jwks_uri": f"{ISSUER}/jwks",
            "userinfo_endpoint": f"{ISSUER}/userinfo",
            "end_session_endpoint": f"{ISSUER}/logout",
            "authorization_response_iss_parameter_supported": True,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": ["RS256", "none", "HS256"],
            **self.discovery_extra,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/tenant")
        self.calls[path] += 1
        if path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.discovery())
        if path == "/jwks":
            if self.jwks_answer is not None:
                return self.jwks_answer()
            return httpx.Response(200, json={"keys": [k.as_dict(private=False)
                                                      for k in self.published]})
        if path == "/token":
            return self.token(request)
        if path == "/userinfo":
            return httpx.Response(200, json={**self.person(), **self.userinfo_patch})
        return httpx.Response(404)

    def person(self) -> dict[str, Any]:
        return {"sub": "emp-42", "email": "ada@example.com", "email_verified": True,
                "given_name": "Ada", "family_name": "Lovelace", "name": "Ada Lovelace",
                "groups": ["staff", "engineering"], "employee_number": "E42"}

    def authorize(self, url: str) -> str:
        """What the IdP does at its authorization endpoint: remember the request, issue a code."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        code = secrets.token_urlsafe(24)
        self.codes[code] = query
        return code

    def claims_for(self, nonce: str | None) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": ISSUER, "aud": CLIENT_ID, "sub": "emp-42", "nonce": nonce,
            "iat": int(self.clock.now), "exp": int(self.clock.now) + 300,
            "auth_time": int(self.clock.now) - 5, "sid": "sess-1", "email": "ada@example.com",
        }
        claims.update(self.claims_patch)
        for name in self.drop:
            claims.pop(name, None)
        return claims

    def sign(self, claims: dict[str, Any]) -> str:
        if self.raw_token is not None:
            return self.raw_token(claims)
        key = self.signing_key or self.key
        header = {"alg": "RS256", "kid": key.kid, **self.header}
        # The IdP signs whatever header a test asks for, extensions and private names included.
        extra = {name: HeaderParameter(name, lambda value: None) for name in self.header
                 if name not in JWS_HEADER_REGISTRY}
        registry = jws.JWSRegistry(header_registry=extra, algorithms=[header["alg"]])
        return jws.serialize_compact(header, json.dumps(claims).encode(), key,
                                     registry=registry)

    def token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        posted = form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
        if request.headers.get("authorization") != expected and not posted:
            return httpx.Response(401, json={"error": "invalid_client"})
        auth = self.codes.pop(form.get("code", ""), None)
        if auth is None or form.get("redirect_uri") != auth["redirect_uri"]:
            return httpx.Response(400, json={"error": "invalid_grant"})
        challenge = b64(hashlib.sha256(form.get("code_verifier", "").encode()).digest())
        if auth["code_challenge_method"] != "S256" or challenge != auth["code_challenge"]:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "pkce"})
        id_token = self.sign(self.claims_for(auth.get("nonce")))
        self.issued.append(id_token)
        self.issued.append("at-" + secrets.token_urlsafe(16))
        body = {"access_token": self.issued[-1], "token_type": "Bearer",
                "expires_in": 300, "id_token": id_token, **self.token_body_patch}
        return httpx.Response(200, json={k: v for k, v in body.items() if v is not None})


class Harness:
    def __init__(self, **overrides: Any) -> None:
        self.clock = Clock()
        self.idp = HostileIdp(self.clock)
        self.store = MemoryStore(clock=self.clock)
        self.metrics = Metrics()
        self.http = httpx.AsyncClient(transport=self.idp.transport())
        settings: dict[str, Any] = {"type": "oidc", "issuer": ISSUER, "client_id": CLIENT_ID,
                                    "client_secret": Secret(CLIENT_SECRET),
                                    "scopes": ("openid", "email", "profile", "groups")}
        settings.update(overrides)
        self.settings = OidcIdpSettings(**settings)
        self.door = OidcFrontDoor("corp", self.settings, self.http, self.store, REDIRECT,
                                  self.metrics, clock=self.clock, login_timeout=600)

    async def callback(self, **patch: str | None) -> tuple[dict[str, str], str]:
        """Begin a login and return the callback parameters the IdP would send, plus the cookie."""
        redirect = await self.door.begin(LoginRequest(app="lms", target="/course/7"))
        code = self.idp.authorize(redirect.url)
        state = self.idp.codes[code]["state"]
        params = {"code": code, "state": state, "iss": ISSUER, **patch}
        return {k: v for k, v in params.items() if v is not None}, redirect.browser_token

    async def login(self, **patch: str | None) -> Any:
        params, token = await self.callback(**patch)
        return await self.door.complete(params, token)

    def replays(self, kind: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "gateway_replay_rejections_total", {"idp": "corp", "kind": kind})
        return value or 0.0


@pytest.fixture
async def h() -> Any:
    harness = Harness()
    await harness.door.start()
    yield harness
    await harness.door.aclose()
    await harness.http.aclose()


# --- the happy path: what every refusal below is measured against ---------------------

async def test_valid_sign_in_yields_identity_and_sends_pkce_and_basic_auth(h: Harness) -> None:
    assert h.door.ready
    redirect = await h.door.begin(LoginRequest(app="lms", target="/course/7"))
    query = parse_qs(urlsplit(redirect.url).query)
    assert query["tenant"] == ["acme"]  # the endpoint's own query survives
    assert query["code_challenge_method"] == ["S256"] and query["response_type"] == ["code"]
    assert query["scope"] == ["openid email profile groups"]
    assert len(query["state"][0]) >= 43 and len(query["nonce"][0]) >= 43
    code = h.idp.authorize(redirect.url)
    identity, request = await h.door.complete(
        {"code": code, "state": query["state"][0], "iss": ISSUER}, redirect.browser_token)
    assert (identity.idp, identity.subject, identity.email) == ("corp", "emp-42", "ada@example.com")
    assert (identity.given_name, identity.family_name) == ("Ada", "Lovelace")
    assert identity.groups == ("staff", "engineering") and identity.employee_number == "E42"
    assert identity.idp_session == "sess-1" and identity.authenticated_at == int(NOW) - 5
    assert request == LoginRequest(app="lms", target="/course/7")
    # The token endpoint verified our PKCE verifier and client_secret_basic credentials.
    assert h.idp.calls["/token"] == 1 and h.idp.calls["/userinfo"] == 1
    assert "client_secret" not in h.idp.token_requests[0].content.decode()


async def test_client_secret_post_when_basic_not_advertised() -> None:
    harness = Harness()
    harness.idp.discovery_extra = {"token_endpoint_auth_methods_supported": ["client_secret_post"]}
    await harness.door.start()
    identity, _ = await harness.login()
    assert identity.subject == "emp-42"
    assert "authorization" not in harness.idp.token_requests[0].headers


# --- signature and algorithm ---------------------------------------------------------

async def test_bad_signature_refused(h: Harness) -> None:
    h.idp.signing_key = new_key("k1")  # same kid, a key the IdP never published
    with pytest.raises(TokenValidationError, match="signature"):
        await h.login()


async def test_alg_none_refused_even_when_discovery_lists_it(h: Harness) -> None:
    def unsigned(claims: dict[str, Any]) -> str:
        head = b64(json.dumps({"alg": "none"}).encode())
        return f"{head}.{b64(json.dumps(claims).encode())}."
    h.idp.raw_token = unsigned
    with pytest.raises(TokenValidationError, match="algorithm 'none'"):
        await h.login()


async def test_hmac_with_public_key_as_secret_refused_even_if_configured() -> None:
    harness = Harness(algorithms=("RS256", "HS256"))
    await harness.door.start()
    public_pem = harness.idp.key.as_pem(private=False)

    def hmac_signed(claims: dict[str, Any]) -> str:
        head = b64(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
        body = b64(json.dumps(claims).encode())
        mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(mac)}"
    harness.idp.raw_token = hmac_signed
    with pytest.raises(TokenValidationError, match="algorithm 'HS256'"):
        await harness.login()


async def test_only_hmac_algorithms_configured_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="asymmetric"):
        Harness(algorithms=("HS256", "none"))


# --- registered claims ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("patch", "drop", "message"),
    [
        ({"iss": ISSUER + "/"}, (), "iss"),
        ({"iss": "https://evil.example.test/tenant"}, (), "iss"),
        ({"aud": "someone-else"}, (), "aud does not contain"),
        ({"aud": ["someone-else", "other"]}, (), "aud does not contain"),
        ({"aud": [CLIENT_ID, "untrusted-api"]}, (), "not in trusted_audiences"),
        ({"aud": [CLIENT_ID, "untrusted-api"], "azp": "untrusted-api"}, (), "not in trusted"),
        ({"aud": [CLIENT_ID, CLIENT_ID]}, (), "several audiences but no azp"),
        ({"azp": "someone-else"}, (), "azp"),
        ({}, ("exp",), "exp is missing"),
        ({}, ("iat",), "iat is missing"),
        ({"exp": int(NOW) - 61}, (), "expired"),
        ({"iat": int(NOW) + 61, "exp": int(NOW) + 600}, (), "future"),
        ({"iat": int(NOW) - 661}, (), "maximum age"),
        ({"exp": True}, (), "exp is missing or not a number"),
        ({"nbf": int(NOW) + 120}, (), "nbf"),
        ({}, ("sub",), "sub"),
        ({"nonce": "x" * 43}, (), "nonce"),
    ],
)
async def test_bad_id_token_claims_refused(
    h: Harness, patch: dict[str, Any], drop: tuple[str, ...], message: str
) -> None:
    h.idp.claims_patch = patch
    h.idp.drop = set(drop)
    with pytest.raises(TokenValidationError, match=message):
        await h.login()


async def test_missing_nonce_refused(h: Harness) -> None:
    h.idp.drop = {"nonce"}
    with pytest.raises(TokenValidationError, match="nonce"):
        await h.login()


@pytest.mark.parametrize(
    "patch",
    [
        {"exp": int(NOW) - 59},  # expired, but within the 60 s leeway
        {"iat": int(NOW) + 59},  # a clock a little ahead
        {"iat": int(NOW) - 600},  # exactly the maximum age
        {"aud": [CLIENT_ID], "azp": CLIENT_ID},
    ],
)
async def test_claims_within_leeway_or_with_trusted_azp_accepted(
    h: Harness, patch: dict[str, Any]
) -> None:
    h.idp.claims_patch = patch
    identity, _ = await h.login()
    assert identity.subject == "emp-42"


# --- state, nonce, browser binding ---------------------------------------------------

async def test_replayed_callback_refused_without_calling_token_endpoint(h: Harness) -> None:
    params, cookie = await h.callback()
    await h.door.complete(params, cookie)
    assert h.idp.calls["/token"] == 1
    with pytest.raises(ReplayDetected, match="already used"):
        await h.door.complete(params, cookie)
    assert h.idp.calls["/token"] == 1
    assert h.replays("state") == 1


async def test_replayed_id_token_nonce_refused(h: Harness) -> None:
    await h.login()
    first = h.idp.issued[0]
    h.idp.raw_token = lambda claims: first  # the IdP (or a thief) hands back an old token
    with pytest.raises(ReplayDetected, match="nonce of an earlier"):
        await h.login()
    assert h.replays("nonce") == 1


async def test_foreign_state_refused_without_calling_token_endpoint(h: Harness) -> None:
    params, cookie = await h.callback()
    params["state"] = secrets.token_urlsafe(32)
    with pytest.raises(LoginStateError, match="unknown or expired"):
        await h.door.complete(params, cookie)
    with pytest.raises(LoginStateError, match="well-formed"):
        await h.door.complete({**params, "state": "<script>"}, cookie)
    assert h.idp.calls["/token"] == 0


async def test_expired_state_refused(h: Harness) -> None:
    params, cookie = await h.callback()
    h.clock.now += 601
    with pytest.raises(LoginStateError):
        await h.door.complete(params, cookie)
    assert h.idp.calls["/token"] == 0


@pytest.mark.parametrize("cookie", [None, "", "another-browser-token"])
async def test_callback_in_another_browser_refused(h: Harness, cookie: str | None) -> None:
    params, _ = await h.callback()
    with pytest.raises(LoginStateError, match="browser"):
        await h.door.complete(params, cookie)
    assert h.idp.calls["/token"] == 0


# --- RFC 9207 iss callback parameter --------------------------------------------------

@pytest.mark.parametrize("iss", ["https://evil.example.test/tenant", None])
async def test_callback_iss_must_match_when_advertised(h: Harness, iss: str | None) -> None:
    with pytest.raises(TokenValidationError, match="mix-up"):
        await h.login(iss=iss)
    assert h.idp.calls["/token"] == 0


async def test_callback_iss_checked_even_when_not_advertised() -> None:
    harness = Harness()
    harness.idp.discovery_extra = {"authorization_response_iss_parameter_supported": False}
    await harness.door.start()
    identity, _ = await harness.login(iss=None)  # not advertised, not sent: fine
    assert identity.subject == "emp-42"
    with pytest.raises(TokenValidationError, match="mix-up"):
        await harness.login(iss="https://evil.example.test")


# --- IdP error responses and broken token/userinfo answers ---------------------------

async def test_access_denied_gives_friendly_message_without_echo(h: Harness) -> None:
    params, cookie = await h.callback()
    params = {"state": params["state"], "iss": ISSUER, "error": "access_denied",
              "error_description": "<script>alert(1)</script> AADSTS50105"}
    with pytest.raises(IdpRejected) as caught:
        await h.door.complete(params, cookie)
    assert caught.value.public == "The sign-in was cancelled or your identity provider refused it."
    assert "error=access_denied" in caught.value.reason
    assert "\n" not in caught.value.reason
    assert h.idp.calls["/token"] == 0


async def test_token_response_without_id_token_refused(h: Harness) -> None:
    h.idp.token_body_patch = {"id_token": None}
    with pytest.raises(TokenValidationError, match="no id_token"):
        await h.login()


async def test_userinfo_sub_mismatch_refused(h: Harness) -> None:
    h.idp.userinfo_patch = {"sub": "emp-43", "email": "boss@example.com"}
    with pytest.raises(TokenValidationError, match="userinfo sub"):
        await h.login()


async def test_id_token_claims_win_over_userinfo(h: Harness) -> None:
    h.idp.userinfo_patch = {"email": "other@example.com", "given_name": "Augusta"}
    identity, _ = await h.login()
    assert identity.email == "ada@example.com"  # from the ID token
    assert identity.given_name == "Augusta"  # only userinfo has it


async def test_wrong_code_verifier_is_refused_by_idp(h: Harness) -> None:
    params, cookie = await h.callback()
    pending_key = f"oidc:corp:state:{params['state']}"
    pending = json.loads(await h.store.get(pending_key) or b"{}")
    pending["verifier"] = "tampered" * 8
    await h.store.set(pending_key, json.dumps(pending).encode(), 60)
    with pytest.raises(IdpRejected, match="invalid_grant"):
        await h.door.complete(params, cookie)


# --- JWKS: rotation, kid flood, garbage answers ---------------------------------------

async def test_jwks_rotation_accepted_with_one_fetch(h: Harness) -> None:
    assert h.idp.calls["/jwks"] == 1  # start()
    h.idp.signing_key = new_key("k2")
    h.idp.published = [h.idp.key, h.idp.signing_key]
    await h.login()
    await h.login()
    assert h.idp.calls["/jwks"] == 2


async def test_random_kid_flood_bounded_to_one_fetch_per_interval(h: Harness) -> None:
    for _ in range(25):
        h.idp.header = {"kid": secrets.token_hex(8)}
        with pytest.raises(TokenValidationError, match="no signing key"):
            await h.login()
    assert h.idp.calls["/jwks"] == 2  # start() + one refetch
    h.clock.now += h.settings.jwks_min_refresh_seconds
    with pytest.raises(TokenValidationError):
        await h.login()
    assert h.idp.calls["/jwks"] == 3
    h.idp.header = {}
    await h.login()  # the real key still works throughout
    assert h.idp.calls["/jwks"] == 3


@pytest.mark.parametrize(
    "garbage",
    [
        lambda: httpx.Response(200, content=b"<html>maintenance</html>"),
        lambda: httpx.Response(200, json={"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
        lambda: httpx.Response(200, json={"keys": "nope"}),
        lambda: httpx.Response(503),
    ],
)
async def test_garbage_jwks_keeps_last_good_keys_then_recovers(
    h: Harness, garbage: Callable[[], httpx.Response]
) -> None:
    new = new_key("k2")
    h.idp.published = [h.idp.key, new]
    h.idp.jwks_answer = garbage
    h.idp.signing_key = new
    with pytest.raises(TokenValidationError):
        await h.login()
    assert h.idp.calls["/jwks"] == 2
    h.idp.signing_key = None
    identity, _ = await h.login()  # not locked out: the last good key still verifies
    assert identity.subject == "emp-42"
    h.idp.jwks_answer = None
    h.idp.signing_key = new
    h.clock.now += h.settings.jwks_min_refresh_seconds
    identity, _ = await h.login()
    assert identity.subject == "emp-42" and h.idp.calls["/jwks"] == 3


# --- discovery -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "extra",
    [{"issuer": ISSUER + "/"}, {"issuer": "https://evil.example.test"},
     {"token_endpoint": "http://idp.example.test/token"}, {"jwks_uri": None}],
)
async def test_bad_discovery_leaves_door_not_ready(extra: dict[str, Any]) -> None:
    harness = Harness()
    harness.idp.discovery_extra = extra
    await harness.door.start()
    assert not harness.door.ready
    with pytest.raises(IdpUnavailable):
        await harness.door.begin(LoginRequest(app="lms"))


async def test_discovery_retried_lazily_after_failure() -> None:
    harness = Harness()
    harness.idp.discovery_extra = {"issuer": "https://evil.example.test"}
    await harness.door.start()
    assert not harness.door.ready
    harness.idp.discovery_extra = {}
    harness.clock.now += 10
    redirect = await harness.door.begin(LoginRequest(app="lms"))
    assert harness.door.ready and redirect.url.startswith(f"{ISSUER}/authorize")


def test_http_issuer_refused_outside_dev_mode() -> None:
    with pytest.raises(ConfigError, match="https"):
        Harness(issuer="http://idp.example.test")


async def test_end_session_url_only_when_enabled() -> None:
    harness = Harness(end_session=True)
    await harness.door.start()
    url = harness.door.end_session_url("https://gw.example.test/")
    assert url is not None and url.startswith(f"{ISSUER}/logout?")
    assert parse_qs(urlsplit(url).query)["client_id"] == [CLIENT_ID]
    plain = Harness()
    await plain.door.start()
    assert plain.door.end_session_url("https://gw.example.test/") is None


# --- secrets stay out of logs and errors ----------------------------------------------

async def test_no_code_verifier_token_or_secret_in_logs(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    params, cookie = await h.callback()
    verifier = json.loads(await h.store.get(f"oidc:corp:state:{params['state']}") or b"{}")
    await h.door.complete(params, cookie)
    h.idp.claims_patch = {"aud": "other"}
    params2, cookie2 = await h.callback()
    with pytest.raises(TokenValidationError) as caught:
        await h.door.complete(params2, cookie2)
    text = caplog.text + str(caught.value) + caught.value.reason
    assert len(h.idp.issued) == 4  # two ID tokens, two access tokens
    for secret in (params["code"], params2["code"], verifier["verifier"], CLIENT_SECRET,
                   cookie, *h.idp.issued):
        assert secret not in text


async def test_withdrawn_key_stops_verifying_once_keys_are_stale(h: Harness) -> None:
    replacement = new_key("k2")
    h.idp.published = [replacement]  # the IdP withdrew k1 (say, after a compromise)
    h.clock.now += 3601
    with pytest.raises(TokenValidationError, match="no signing key"):
        await h.login()  # still signed with k1
    h.idp.signing_key = replacement
    identity, _ = await h.login()
    assert identity.subject == "emp-42"


async def test_oversized_discovery_answer_refused() -> None:
    harness = Harness()
    harness.idp.discovery_extra = {"padding": "x" * 1_100_000}
    await harness.door.start()
    assert not harness.door.ready


# --- when userinfo is called ------------------------------------------------------------


FULL_ID_TOKEN = {"given_name": "Ada", "family_name": "Lovelace", "groups": ["staff"],
                 "employee_number": "E42"}


@pytest.mark.parametrize(
    ("mode", "id_token_has_everything", "calls"),
    [("auto", True, 0), ("auto", False, 1), ("always", True, 1), ("never", False, 0)],
)
async def test_userinfo_only_when_the_mapping_needs_it(
    mode: str, id_token_has_everything: bool, calls: int
) -> None:
    """"auto" saves an IdP round trip when the ID token already carries every mapped claim."""
    h = Harness(userinfo=mode)
    await h.door.start()
    if id_token_has_everything:
        h.idp.claims_patch = dict(FULL_ID_TOKEN)
    params, cookie = await h.callback()
    identity, _ = await h.door.complete(params, cookie)
    assert h.idp.calls["/userinfo"] == calls
    assert identity.email == "ada@example.com"
    if calls or id_token_has_everything:
        assert identity.given_name == "Ada" and identity.groups[0] == "staff"
    else:
        assert identity.given_name is None  # "never": only what the ID token said
