"""The OpenID Connect front door: authorization code flow with PKCE S256, state and nonce.

``begin`` stores the pending login (nonce, PKCE verifier, browser binding, where to go next)
in the store under its random ``state``; ``complete`` pops it (single use across replicas),
exchanges the code, verifies the ID token (``jwks.py``), checks userinfo and maps the claims
(``claims.py``) to an :class:`Identity`.

Why not authlib's Starlette integration: it keeps state, nonce and verifier in the cookie
session, where a replayed callback cannot be refused across replicas and a cookie is the only
binding. We keep them in the store, popped atomically, and bind the login to the browser with
a separate token. JOSE (JWS, JWK) is joserfc, the library authlib itself uses; the code
exchange is one plain httpx POST so we decide exactly what is sent and that nothing of it (code,
verifier, secret, tokens) reaches a log or an exception message.

Discovery is loaded once (``start``, retried lazily by ``begin`` at most every few seconds);
the ``issuer`` it declares must equal the configured one exactly, and every endpoint must be
https unless the gateway runs in dev mode.

The token response is validated in full on every sign-in (``check_token_response``), not only
when userinfo needs the access token, and every refused token is logged once here with the
name of the failed check (``oidc_token_refused``); the employee page stays generic.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from gateway.auth.base import LoginRequest, Redirect, browser_matches, new_browser_token
from gateway.auth.claims import map_identity, missing_claims, preset_for
from gateway.auth.jwks import (
    JwksCache,
    allowed_algorithms,
    check_id_token_claims,
    request_json,
    verify_id_token,
)
from gateway.errors import (
    ConfigError,
    GatewayError,
    IdpRejected,
    IdpUnavailable,
    LoginStateError,
    ReplayDetected,
    TokenValidationError,
)
from gateway.identity import Identity
from gateway.observability import Metrics, log_event
from gateway.settings import OidcIdpSettings
from gateway.store.base import Store

log = logging.getLogger("gateway.auth.oidc")

DISCOVERY_RETRY_SECONDS = 5.0
# Longest pause between background discovery retries while an IdP is unreachable.
DISCOVERY_RETRY_MAX = 60.0
_STATE = re.compile(r"[A-Za-z0-9_-]{20,128}")
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_PRINTABLE = re.compile(r"[\x21-\x7e]{1,4096}")
_VSCHAR = re.compile(r"[\x20-\x7e]+")  # RFC 6749 A.12 access-token = 1*VSCHAR

# What an employee reads for each OAuth error code; never the IdP's error_description.
_ERROR_PAGES = {
    "access_denied": "The sign-in was cancelled or your identity provider refused it.",
    "login_required": "Your identity provider asks you to sign in again. Please start over.",
    "interaction_required": "Your identity provider needs you to complete a step. "
    "Please start over.",
    "consent_required": "Your identity provider needs your consent for this application.",
    "temporarily_unavailable": "Your identity provider is busy. Please try again shortly.",
    "server_error": "Your identity provider had a problem. Please try again shortly.",
}


@functools.lru_cache(maxsize=64)
def _endpoint_parts(endpoint: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """An IdP endpoint as httpx normalises and checks it (once per endpoint, not per
    sign-in: parsing it cost ~0.08 ms of each sign-in's CPU): the URL without its query,
    and the query's own parameters."""
    url = httpx.URL(endpoint)
    return str(url.copy_with(query=None)), tuple(url.params.multi_items())


def with_params(endpoint: str, params: Mapping[str, str]) -> str:
    """``endpoint`` with ``params`` added to its query (ours replace any of the same name),
    encoded as httpx's ``copy_merge_params`` does."""
    base, own = _endpoint_parts(endpoint)
    pairs = [(k, v) for k, v in own if k not in params]
    return f"{base}?{urlencode([*pairs, *params.items()])}"


@dataclass(frozen=True, slots=True)
class Discovery:
    """The parts of the IdP's discovery document we use, validated."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    end_session_endpoint: str | None
    token_auth_methods: tuple[str, ...]
    iss_parameter_supported: bool


def _clean(value: object, limit: int = 120) -> str:
    """An IdP-supplied string made safe for one log line (printable, bounded)."""
    return re.sub(r"[^\x20-\x7e]", "?", str(value))[:limit]


def _bad_token_response(problem: str) -> TokenValidationError:
    # Names the member and what is wrong with it, never its value (values are tokens).
    return TokenValidationError(f"token response {problem}", check="token_response")


def check_token_response(body: object) -> dict[str, Any]:
    """A successful token response checked member by member (RFC 6749 5.1, OIDC Core 3.1.3.3).

    The access token is required even when userinfo will not be called: RFC 6749 5.1 makes it
    REQUIRED, and refusing a broken IdP on every sign-in beats failing only for the employees
    whose ID token happens to lack a claim (when "auto" userinfo would need it).
    """
    if not isinstance(body, dict):
        raise _bad_token_response("is not a JSON object")
    token_type = body.get("token_type")
    # RFC 6749 5.1 / 7.1: token_type REQUIRED, compared case-insensitively; OIDC Core 3.1.3.3:
    # "MUST be Bearer" (we negotiate nothing else).
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise _bad_token_response("token_type is missing or not Bearer")
    id_token = body.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise _bad_token_response("carries no id_token (a non-empty string)")
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not _VSCHAR.fullmatch(access_token):
        raise _bad_token_response("access_token is missing or not a string (RFC 6749 5.1)")
    expires_in = body.get("expires_in")
    # RFC 6749 A.14: expires-in = 1*DIGIT. A JSON true is an int in Python, not a lifetime.
    if expires_in is not None and (
        isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0
    ):
        raise _bad_token_response("expires_in is not a positive integer")
    for member in ("scope", "refresh_token"):  # RFC 6749 A.4, A.17: strings when present
        if member in body and not isinstance(body[member], str):
            raise _bad_token_response(f"{member} is not a string")
    return body


class OidcFrontDoor:
    """One ``[idp.<name>]`` with ``type = "oidc"``; satisfies ``gateway.auth.base.FrontDoor``.

    ``http`` is owned by the caller (``aclose`` does not close it).
    """

    kind = "oidc"

    def __init__(
        self, name: str, settings: OidcIdpSettings, http: httpx.AsyncClient, store: Store,
        redirect_uri: str, metrics: Metrics | None = None, *, dev_mode: bool = False,
        clock: Callable[[], float] = time.time, login_timeout: int = 600,
        retry_backoff: tuple[float, float] = (DISCOVERY_RETRY_SECONDS, DISCOVERY_RETRY_MAX),
    ) -> None:
        self.name = name
        self._settings = settings
        self._http = http
        self._store = store
        self._redirect_uri = redirect_uri
        self._metrics = metrics
        self._dev_mode = dev_mode
        self._clock = clock
        self._login_timeout = login_timeout
        self._algorithms = allowed_algorithms(settings.algorithms)
        problems = []
        if not self._algorithms:
            problems.append(f"idp.{name}.algorithms: no asymmetric algorithm (RS256, ES256, ...)")
        if not self._url_ok(settings.issuer):
            problems.append(f"idp.{name}.issuer: must be an https URL")
        if problems:
            raise ConfigError(problems)
        self._preset = preset_for(settings)
        self._jwks = JwksCache(http, idp=name, min_refresh=settings.jwks_min_refresh_seconds,
                               clock=clock)
        self._discovery: Discovery | None = None
        self._last_attempt: float | None = None
        self._start_lock = asyncio.Lock()
        # Why discovery last failed (an operator reason, never a secret), for /readyz.
        self.last_error: str | None = None
        self._retry_backoff = retry_backoff
        self._retry: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """True once the discovery document has been loaded."""
        return self._discovery is not None

    def _url_ok(self, url: object) -> bool:
        if not isinstance(url, str):
            return False
        parts = urlsplit(url)
        schemes = ("https", "http") if self._dev_mode else ("https",)
        return parts.scheme in schemes and bool(parts.hostname) and not parts.fragment

    async def start(self) -> None:
        """Load discovery and the JWKS; never raises (``ready`` reports the outcome)."""
        async with self._start_lock:
            now = self._clock()
            if self._discovery is not None or (
                self._last_attempt is not None
                and now - self._last_attempt < DISCOVERY_RETRY_SECONDS
            ):
                return
            self._last_attempt = now
            await self._attempt()
        if not self.ready and self._retry is None:
            # Behind an orchestrator an unready replica gets no traffic, so waiting for a
            # sign-in to retry would keep it unready for ever: retry in the background.
            self._retry = asyncio.create_task(self._retry_until_loaded())

    async def _attempt(self) -> None:
        try:
            discovery = await self._load_discovery()
        except GatewayError as exc:
            self.last_error = exc.reason
            log_event(log, logging.WARNING, "oidc_discovery_failed", idp=self.name,
                      reason=exc.reason)
            return
        self._jwks.uri = discovery.jwks_uri
        self._discovery = discovery
        self.last_error = None
        log_event(log, logging.INFO, "oidc_discovery_loaded", idp=self.name)
        await self._jwks.load()

    async def _retry_until_loaded(self) -> None:
        """Retry discovery with doubling pauses (capped) until it loads."""
        delay, longest = self._retry_backoff
        while not self.ready:
            await asyncio.sleep(delay)
            async with self._start_lock:
                if not self.ready:
                    self._last_attempt = self._clock()
                    await self._attempt()
            delay = min(delay * 2, longest)

    async def _load_discovery(self) -> Discovery:
        issuer = self._settings.issuer
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        answer = await request_json(self._http, "GET", url, what="discovery")
        doc = answer.body
        if answer.status != 200 or not isinstance(doc, dict):
            raise IdpUnavailable(f"discovery answered HTTP {answer.status} without a JSON object")
        if doc.get("issuer") != issuer:
            raise TokenValidationError(
                f"discovery issuer {_clean(doc.get('issuer'))!r} is not the configured {issuer!r}",
                check="discovery",
            )
        endpoints: dict[str, str | None] = {}
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri",
                    "userinfo_endpoint", "end_session_endpoint"):
            value = doc.get(key)
            required = key in ("authorization_endpoint", "token_endpoint", "jwks_uri")
            if value is None and not required:
                endpoints[key] = None
            elif not self._url_ok(value):
                raise TokenValidationError(f"discovery {key} is missing or not an https URL",
                                           check="discovery")
            else:
                endpoints[key] = value
        methods = doc.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
        return Discovery(
            issuer=issuer,
            authorization_endpoint=str(endpoints["authorization_endpoint"]),
            token_endpoint=str(endpoints["token_endpoint"]),
            jwks_uri=str(endpoints["jwks_uri"]),
            userinfo_endpoint=endpoints["userinfo_endpoint"],
            end_session_endpoint=endpoints["end_session_endpoint"],
            token_auth_methods=tuple(m for m in methods if isinstance(m, str))
            if isinstance(methods, list) else ("client_secret_basic",),
            iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported")
            is True,
        )

    async def _require_discovery(self) -> Discovery:
        if self._discovery is None:
            await self.start()
        if self._discovery is None:
            raise IdpUnavailable(f"discovery for IdP {self.name} is not loaded")
        return self._discovery

    def _key(self, kind: str, value: str) -> str:
        return f"oidc:{self.name}:{kind}:{value}"

    async def begin(self, request: LoginRequest) -> Redirect:
        """Store a pending login under a fresh state; return the IdP's authorization URL."""
        discovery = await self._require_discovery()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters (RFC 7636: 43..128)
        browser_token, browser_digest = new_browser_token()
        pending = {"nonce": nonce, "verifier": verifier, "browser": browser_digest,
                   "app": request.app, "target": request.target, "return_to": request.return_to}
        await self._store.set(self._key("state", state), json.dumps(pending).encode(),
                              self._login_timeout)
        scopes = list(dict.fromkeys(("openid", *self._settings.scopes)))
        url = with_params(discovery.authorization_endpoint, {
            "response_type": "code", "client_id": self._settings.client_id,
            "redirect_uri": self._redirect_uri, "scope": " ".join(scopes), "state": state,
            "nonce": nonce, "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        })
        return Redirect(url=url, browser_token=browser_token)

    def _replay(self, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.replay_rejections.labels(idp=self.name, kind=kind).inc()

    async def _pop_pending(self, params: Mapping[str, str]) -> dict[str, Any]:
        state = params.get("state", "")
        if not _STATE.fullmatch(state):
            raise LoginStateError("callback without a well-formed state")
        raw = await self._store.pop(self._key("state", state))
        if raw is None:
            if await self._store.get(self._key("used", state)) is not None:
                self._replay("state")
                raise ReplayDetected("callback state was already used (replayed callback)")
            raise LoginStateError("callback state unknown or expired")
        await self._store.set(self._key("used", state), b"1", self._login_timeout)
        pending: dict[str, Any] = json.loads(raw)
        return pending

    async def complete(
        self, params: Mapping[str, str], browser_token: str | None
    ) -> tuple[Identity, LoginRequest]:
        """Finish the login from the callback query; raise a typed error for anything wrong."""
        discovery = await self._require_discovery()
        pending = await self._pop_pending(params)
        if not browser_matches(pending["browser"], browser_token):
            raise LoginStateError("callback came from a browser that did not start this login")
        iss = params.get("iss")
        if (discovery.iss_parameter_supported or iss is not None) and iss != discovery.issuer:
            raise TokenValidationError(
                f"callback iss {_clean(iss)!r} is not the issuer (RFC 9207 mix-up check)",
                check="callback_iss_mismatch",
            )
        request = LoginRequest(pending["app"], pending["target"], pending["return_to"])
        try:
            return await self._complete_for(discovery, params, pending, request)
        except GatewayError as exc:
            exc.app = request.app  # the error page's "Start again" goes back to this app
            raise

    async def _complete_for(
        self, discovery: Discovery, params: Mapping[str, str], pending: dict[str, Any],
        request: LoginRequest,
    ) -> tuple[Identity, LoginRequest]:
        if "error" in params:
            code = params["error"] if _ERROR_CODE.fullmatch(params["error"]) else "invalid"
            detail = _clean(params.get("error_description", ""), 200)
            raise IdpRejected(f"IdP answered error={code}: {detail}",
                              public=_ERROR_PAGES.get(code, IdpRejected.public))
        code = params.get("code", "")
        if not _PRINTABLE.fullmatch(code):
            raise IdpRejected("callback carries neither a well-formed code nor an error")
        with self._refusals_logged():
            tokens = await self._exchange(discovery, code, pending["verifier"])
            claims = await verify_id_token(tokens["id_token"], self._jwks, self._algorithms)
            check_id_token_claims(
                claims, issuer=discovery.issuer, client_id=self._settings.client_id,
                now=self._clock(), leeway=self._settings.leeway_seconds,
                max_age=self._settings.max_token_age_seconds,
                trusted_audiences=self._settings.trusted_audiences,
            )
            await self._check_nonce(claims.get("nonce"), pending["nonce"])
        if discovery.userinfo_endpoint and self._wants_userinfo(claims):
            userinfo = await self._userinfo(discovery.userinfo_endpoint, tokens, claims["sub"])
            claims = {**userinfo, **claims}  # the verified ID token wins on every conflict
        identity = map_identity(self.name, claims, self._preset)
        log_event(log, logging.INFO, "oidc_login_verified", idp=self.name)
        return identity, request

    @contextmanager
    def _refusals_logged(self) -> Iterator[None]:
        """Log each refused token once, with the failed check; reasons never hold token text."""
        try:
            yield
        except TokenValidationError as exc:
            log_event(log, logging.WARNING, "oidc_token_refused", idp=self.name,
                      check=exc.check, reason=exc.reason)
            raise

    async def _check_nonce(self, presented: Any, expected: str) -> None:
        used = self._key("nonce-used", expected)
        if not isinstance(presented, str) or not hmac.compare_digest(
            presented.encode(), expected.encode()
        ):
            if isinstance(presented, str) and _STATE.fullmatch(presented) and (
                await self._store.get(self._key("nonce-used", presented)) is not None
            ):
                self._replay("nonce")
                raise ReplayDetected("ID token carries the nonce of an earlier sign-in",
                                     check="nonce_replay")
            # OIDC Core 3.1.3.7 step 11: the nonce MUST equal the one sent in this request.
            raise TokenValidationError("ID token nonce is missing or does not match this login",
                                       check="nonce_mismatch")
        # Remembered so an ID token replayed into a later login is reported as a replay.
        ttl = self._settings.max_token_age_seconds + 2 * self._settings.leeway_seconds
        await self._store.set(used, b"1", ttl)

    async def _exchange(self, discovery: Discovery, code: str, verifier: str) -> dict[str, Any]:
        data = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": self._redirect_uri, "code_verifier": verifier}
        headers: dict[str, str] = {}
        client_id, secret = self._settings.client_id, self._settings.client_secret
        if secret is None:
            data["client_id"] = client_id  # public client: PKCE is the only proof
        elif ("client_secret_basic" not in discovery.token_auth_methods
              and "client_secret_post" in discovery.token_auth_methods):
            data |= {"client_id": client_id, "client_secret": secret.reveal()}
        else:
            # RFC 6749 2.3.1: both parts form-urlencoded before base64.
            pair = f"{quote(client_id, safe='')}:{quote(secret.reveal(), safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        answer = await request_json(self._http, "POST", discovery.token_endpoint, data=data,
                                    headers=headers, what="token endpoint")
        if answer.status >= 500:
            raise IdpUnavailable(f"token endpoint answered HTTP {answer.status}")
        if answer.status != 200:
            body = answer.body if isinstance(answer.body, dict) else {}
            raise IdpRejected(f"token endpoint answered HTTP {answer.status} "
                              f"error={_clean(body.get('error', '-'), 64)}")
        return check_token_response(answer.body)

    def _wants_userinfo(self, claims: Mapping[str, Any]) -> bool:
        mode = self._settings.userinfo
        return mode == "always" or (mode == "auto" and missing_claims(claims, self._preset))

    async def _userinfo(
        self, endpoint: str, tokens: Mapping[str, Any], sub: str
    ) -> dict[str, Any]:
        # check_token_response made sure of a Bearer token_type and a string access_token.
        access_token = tokens["access_token"]
        answer = await request_json(self._http, "GET", endpoint, what="userinfo endpoint",
                                    headers={"Authorization": f"Bearer {access_token}"})
        if answer.status >= 500:
            raise IdpUnavailable(f"userinfo endpoint answered HTTP {answer.status}")
        if answer.status != 200:
            raise IdpRejected(f"userinfo endpoint answered HTTP {answer.status}")
        with self._refusals_logged():
            if not isinstance(answer.body, dict):
                raise TokenValidationError("userinfo is not a JSON object (signed: unsupported)",
                                           check="userinfo_malformed")
            # OIDC Core 5.3.2: the sub in the UserInfo Response MUST be verified to exactly
            # match the sub in the ID Token.
            if answer.body.get("sub") != sub:
                raise TokenValidationError("userinfo sub does not match the ID token's sub",
                                           check="userinfo_sub_mismatch")
        return answer.body

    def end_session_url(self, post_logout_redirect_uri: str) -> str | None:
        """The IdP's end-session URL when ``end_session`` is on and the IdP has one."""
        d = self._discovery
        if not self._settings.end_session or d is None or d.end_session_endpoint is None:
            return None
        return with_params(d.end_session_endpoint, {
            "client_id": self._settings.client_id,
            "post_logout_redirect_uri": post_logout_redirect_uri,
        })

    async def aclose(self) -> None:
        """Stop the background discovery retry; the HTTP client belongs to the caller."""
        if self._retry is not None:
            self._retry.cancel()
            # It only ends by cancellation or success; neither has anything to report.
            await asyncio.gather(self._retry, return_exceptions=True)
            self._retry = None
