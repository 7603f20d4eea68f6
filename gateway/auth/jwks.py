"""The IdP's signing keys (JWKS) and ID token verification, for ``auth/oidc.py``.

Rules kept here, each because a library default would let it through:

* Algorithms are pinned to the configured list *intersected with asymmetric algorithms*:
  ``none`` and every HMAC algorithm are refused whatever the IdP's discovery advertises, so a
  token "signed" with the IdP's public key as an HMAC secret can never verify.
* Only public RSA/EC/OKP signing keys from the JWKS are used (``oct`` keys, encryption keys
  and keys carrying private parts are dropped), and a key whose own ``alg`` differs from the
  token's is not tried.
* An unknown ``kid`` refetches the JWKS, but at most once per ``min_refresh`` seconds, so a
  flood of tokens with random ``kid`` values costs one fetch per interval. A failed or
  garbage answer keeps the last good keys: one bad answer never locks sign-ins out.
* A ``crit`` header is refused: we implement no JWS extension (RFC 7515 4.1.11). Other
  header parameters we do not understand are ignored, as RFC 7515 4 requires (joserfc's
  strict header check would refuse them, and report it as a bad signature).
* ``iss`` is compared exactly; ``aud`` must contain our client id and nothing but the
  configured ``trusted_audiences`` besides; with several audiences ``azp`` must be present,
  and a present ``azp`` must always equal our client id (OIDC Core 3.1.3.7 steps 2-5);
  ``exp``, ``iat`` (and ``nbf`` when present) are checked with a leeway, and ``iat`` may not
  be older than the configured maximum age.

Every refusal is a :class:`TokenValidationError` whose ``check`` names the failed rule
(``malformed_jws``, ``crit_unsupported``, ``alg_not_allowed``, ``unknown_kid``,
``bad_signature``, ``wrong_issuer``, ``untrusted_audience``, ...) so the operator's log
says what went wrong rather than a catch-all "signature does not verify".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key
from joserfc.jws import JWSRegistry

from gateway import jsonsafe
from gateway.errors import IdpUnavailable, TokenValidationError
from gateway.observability import log_event

log = logging.getLogger("gateway.auth.oidc")

PublicKey = RSAKey | ECKey | OKPKey

# Algorithm -> key type. Anything not listed (none, HS256, ...) is never accepted.
ASYMMETRIC_ALGORITHMS: dict[str, str] = {
    **{f"RS{n}": "RSA" for n in (256, 384, 512)},
    **{f"PS{n}": "RSA" for n in (256, 384, 512)},
    "ES256": "EC", "ES384": "EC", "ES512": "EC",
    "EdDSA": "OKP", "Ed25519": "OKP",
}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_KEYS = 50
MAX_ID_TOKEN_CHARS = 64_000
MAX_BODY_BYTES = 1_000_000
# Keys are re-read after this long even without an unknown kid, so a key the IdP withdrew
# (e.g. after a compromise) stops being trusted. Still subject to ``min_refresh``.
JWKS_MAX_AGE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """Status and parsed JSON body (None when the body is not JSON) of one IdP call."""

    status: int
    body: Any


async def request_json(
    http: httpx.AsyncClient, method: str, url: str, *, what: str, **kwargs: Any
) -> HttpAnswer:
    """One call to the IdP; transport failures and oversized bodies become IdpUnavailable.

    ``what`` names the endpoint in error messages; URLs and bodies are never put in them
    (a token request body carries the code and the PKCE verifier).
    """
    headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
    try:
        async with http.stream(method, url, headers=headers, **kwargs) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise IdpUnavailable(f"{what} answered more than {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
            status = response.status_code
    except httpx.HTTPError as exc:
        # Only the transport's own TLS reasons are quoted (they carry no URL or secret).
        detail = f" ({exc})" if str(exc).startswith("TLS ") else ""
        raise IdpUnavailable(f"{what} unreachable: {type(exc).__name__}{detail}") from None
    try:
        # A hostile IdP's deeply nested answer is garbage like any other, not a 500.
        body = jsonsafe.loads(b"".join(chunks))
    except ValueError:
        body = None
    return HttpAnswer(status, body)


def allowed_algorithms(configured: tuple[str, ...]) -> frozenset[str]:
    """The configured algorithms that are asymmetric; the rest are silently impossible."""
    return frozenset(a for a in configured if a in ASYMMETRIC_ALGORITHMS)


def parse_jwks(body: Any) -> dict[str, list[PublicKey]] | None:
    """Usable public signing keys by kid ("" for keys without one); None for garbage."""
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        return None
    keys: dict[str, list[PublicKey]] = {}
    count = 0
    for raw in body["keys"][: MAX_KEYS * 4]:
        if not isinstance(raw, dict) or raw.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if raw.get("use", "sig") != "sig" or _PRIVATE_MEMBERS & raw.keys():
            continue
        try:
            key = import_key(raw)
        except (JoseError, ValueError, TypeError, KeyError):
            continue
        if not isinstance(key, RSAKey | ECKey | OKPKey):
            continue
        kid = raw.get("kid")
        keys.setdefault(kid if isinstance(kid, str) else "", []).append(key)
        count += 1
        if count >= MAX_KEYS:
            break
    return keys or None


class JwksCache:
    """The IdP's current signing keys, refreshed on unknown ``kid`` at a bounded rate."""

    def __init__(
        self, http: httpx.AsyncClient, *, idp: str, min_refresh: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.uri: str | None = None
        self._http = http
        self._idp = idp
        self._min_refresh = min_refresh
        self._clock = clock
        self._keys: dict[str, list[PublicKey]] = {}
        self._loaded_at: float | None = None
        # Last fetch triggered by verification (not the start-up load); bounds refetches.
        self._last_refresh: float | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> bool:
        """Fetch the JWKS now; on failure keep the keys we have. True when keys were loaded."""
        if self.uri is None:
            return False
        try:
            answer = await request_json(self._http, "GET", self.uri, what="JWKS endpoint")
        except IdpUnavailable as exc:
            log_event(log, logging.WARNING, "jwks_fetch_failed", idp=self._idp, reason=exc.reason)
            return False
        keys = parse_jwks(answer.body) if answer.status == 200 else None
        if keys is None:
            log_event(log, logging.WARNING, "jwks_unusable", idp=self._idp, status=answer.status,
                      reason="no usable public signing keys; keeping the previous keys")
            return False
        self._keys = keys
        self._loaded_at = self._clock()
        log_event(log, logging.INFO, "jwks_loaded", idp=self._idp,
                  keys=sum(len(v) for v in keys.values()))
        return True

    def _candidates(self, kid: str | None, alg: str) -> list[PublicKey]:
        # Keys published without a kid may have signed a token that names one.
        pool = self._keys.get(kid, []) + self._keys.get("", []) if kid is not None else [
            k for group in self._keys.values() for k in group
        ]
        kty = ASYMMETRIC_ALGORITHMS[alg]
        return [k for k in pool if k.key_type == kty and k.alg in (None, alg)]

    def _may_refresh(self) -> bool:
        return self._last_refresh is None or (
            self._clock() - self._last_refresh >= self._min_refresh
        )

    def _stale(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at > JWKS_MAX_AGE_SECONDS

    async def keys_for(self, kid: str | None, alg: str) -> list[PublicKey]:
        """Keys that may have signed a token with this header; refetch at most once per interval."""
        found = self._candidates(kid, alg)
        if found and not self._stale():
            return found
        refetched = False
        async with self._lock:
            # Another request may have refreshed while we waited for the lock.
            if self._may_refresh():
                self._last_refresh = self._clock()
                refetched = await self.load()
        found = self._candidates(kid, alg)
        if found:
            return found
        fetch = ("JWKS refetched just now" if refetched else
                 f"JWKS not refetched: at most every {self._min_refresh:g}s")
        if kid is not None and kid in self._keys:
            raise TokenValidationError(
                f"the IdP's key {_short(kid)} is not usable for {alg} ({fetch})",
                check="key_alg_mismatch",
            )
        raise TokenValidationError(
            f"no signing key of the IdP matches kid {_short(kid)} for {alg} ({fetch})",
            check="unknown_kid",
        )


def _short(value: object) -> str:
    """A printable, bounded rendering of an attacker-supplied value for a log line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _header(token: str, algorithms: frozenset[str]) -> tuple[dict[str, Any], str]:
    """The protected header and its ``alg``, refused with the precise reason."""
    if len(token) > MAX_ID_TOKEN_CHARS or token.count(".") != 2:
        raise TokenValidationError("ID token is not a compact JWS (encrypted or malformed)",
                                   check="malformed_jws")
    try:
        header = jws.extract_compact(token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError) as exc:
        raise TokenValidationError(f"ID token header unreadable: {type(exc).__name__}",
                                   check="malformed_jws") from None
    if not isinstance(header, dict):
        raise TokenValidationError("ID token header is not a JSON object", check="malformed_jws")
    if "crit" in header:
        # RFC 7515 4.1.11: a recipient MUST reject a JWS whose crit lists an extension it does
        # not understand; we understand none (and b64=false, RFC 7797, only works via crit).
        raise TokenValidationError(
            f"ID token header marks {_short(header['crit'])} critical; "
            "no JWS extension is supported (RFC 7515 4.1.11)", check="crit_unsupported")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise TokenValidationError(
            f"ID token algorithm {_short(alg)} is not accepted (allowed: {sorted(algorithms)})",
            check="alg_not_allowed",
        )
    return header, alg


@functools.cache
def _registry(alg: str) -> JWSRegistry:
    """The JWS registry for one algorithm, built once (not on every sign-in). Registered
    header parameters must have their registered types (kid a string, x5c a list, ...);
    unknown ones are ignored (RFC 7515 4), hence strict_check_header=False."""
    return JWSRegistry(algorithms=[alg], strict_check_header=False)


async def verify_id_token(
    token: str, cache: JwksCache, algorithms: frozenset[str]
) -> dict[str, Any]:
    """Check the ID token's shape, algorithm and signature; return its claims (unchecked)."""
    header, alg = _header(token, algorithms)
    registry = _registry(alg)
    try:
        registry.check_header(header)
    except JoseError as exc:
        raise TokenValidationError(f"ID token header invalid: {type(exc).__name__}",
                                   check="malformed_jws") from None
    for key in await cache.keys_for(header.get("kid"), alg):
        try:
            signed = jws.deserialize_compact(token, key, algorithms=[alg], registry=registry)
        except (JoseError, ValueError, TypeError):  # bad signature, wrong curve, ...
            continue
        try:
            claims = jsonsafe.loads(signed.payload)
        except ValueError:
            raise TokenValidationError("ID token payload is not JSON",
                                       check="malformed_jws") from None
        if not isinstance(claims, dict):
            raise TokenValidationError("ID token payload is not a JSON object",
                                       check="malformed_jws")
        return claims
    raise TokenValidationError("ID token signature does not verify with the IdP's keys",
                               check="bad_signature")


def _time_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    # bool is an int in Python; a JSON true is not a time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenValidationError(f"ID token claim {name} is missing or not a number",
                                   check="malformed_claim")
    return float(value)


def _check_audience(
    claims: Mapping[str, Any], client_id: str, trusted_audiences: tuple[str, ...]
) -> None:
    """OIDC Core 1.0 3.1.3.7 steps 3-5: audience, untrusted extra audiences, azp."""
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise TokenValidationError("ID token aud is missing or malformed",
                                   check="malformed_claim")
    if client_id not in audiences:
        raise TokenValidationError("ID token aud does not contain our client id",
                                   check="wrong_audience")
    # Step 3: "MUST be rejected if ... it contains additional audiences not trusted by the
    # Client", whatever azp says: another audience may replay this token to us or use ours.
    untrusted = sorted(set(audiences) - {client_id} - set(trusted_audiences))
    if untrusted:
        raise TokenValidationError(
            f"ID token lists {len(untrusted)} audience(s) not in trusted_audiences: "
            f"{_short(untrusted)}", check="untrusted_audience")
    azp = claims.get("azp")
    # Step 4 (SHOULD, enforced): several audiences need an azp to say who the token is for.
    if len(audiences) > 1 and azp is None:
        raise TokenValidationError("ID token has several audiences but no azp",
                                   check="azp_missing")
    # Step 5: a present azp must be our client id.
    if azp is not None and azp != client_id:
        raise TokenValidationError(f"ID token azp {_short(azp)} is not our client id",
                                   check="azp_mismatch")


def check_id_token_claims(
    claims: Mapping[str, Any], *, issuer: str, client_id: str, now: float,
    leeway: float, max_age: float, trusted_audiences: tuple[str, ...] = (),
) -> None:
    """OIDC Core 3.1.3.7 checks (except the nonce, which needs the pending login)."""
    if claims.get("iss") != issuer:  # step 2: exact match
        raise TokenValidationError(
            f"ID token iss {_short(claims.get('iss'))} is not the configured issuer {issuer!r}",
            check="wrong_issuer",
        )
    _check_audience(claims, client_id, trusted_audiences)
    exp = _time_claim(claims, "exp", required=True)
    iat = _time_claim(claims, "iat", required=True)
    nbf = _time_claim(claims, "nbf", required=False)
    assert exp is not None and iat is not None
    if now > exp + leeway:  # step 9
        raise TokenValidationError(f"ID token expired {int(now - exp)}s ago", check="expired")
    if iat > now + leeway:
        raise TokenValidationError(f"ID token iat is {int(iat - now)}s in the future",
                                   check="issued_in_future")
    if now - iat > max_age + leeway:  # step 10: "too far away from the current time"
        raise TokenValidationError(
            f"ID token was issued {int(now - iat)}s ago (maximum age {int(max_age)}s)",
            check="too_old",
        )
    if nbf is not None and nbf > now + leeway:  # RFC 7519 4.1.5
        raise TokenValidationError("ID token is not valid yet (nbf)", check="not_yet_valid")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:  # OIDC Core 2: max 255 ASCII
        raise TokenValidationError("ID token sub is missing or malformed",
                                   check="malformed_claim")
