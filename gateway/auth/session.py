"""The employee's gateway session and the short-lived login-binding cookie.

The session is a signed cookie (itsdangerous) holding the Identity, a random session id and
the issue time: ``HttpOnly``, ``Secure`` (off only in dev mode), ``SameSite=Lax``, ``__Host-``
prefixed when secure, a fresh value at every sign-in (no fixation). Logging out records the
session id in the store until the cookie would have expired anyway, so a copied cookie stops
working too.

The login-binding cookie ties a pending IdP round trip to the browser that started it. For
OIDC it is ``SameSite=Lax`` (the callback is a top-level GET); the SAML ACS is a cross-site
POST, so there it is ``SameSite=None; Secure`` where the deployment is secure.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from gateway.identity import Identity
from gateway.store.base import Store


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    identity: Identity
    issued_at: int


class SessionManager:
    """Reads, issues and ends sessions; owns every cookie the gateway sets."""

    def __init__(
        self,
        signing_key: str,
        store: Store,
        *,
        secure: bool,
        lifetime: int,
        login_timeout: int,
        relevant_groups: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._serializer = URLSafeTimedSerializer(signing_key, salt="gateway.session.v1")
        self._csrf_key = hashlib.sha256(b"gateway.csrf.v1" + signing_key.encode()).digest()
        self._store = store
        self.secure = secure
        self.lifetime = lifetime
        self.login_timeout = login_timeout
        # Only groups some app's rules or mappings mention are kept: the cookie stays small
        # and the session does not carry the employee's whole directory footprint.
        self._relevant_groups = None if relevant_groups is None else frozenset(relevant_groups)
        self._clock = clock
        prefix = "__Host-" if secure else ""
        self.cookie_name = f"{prefix}gw_session"
        self.login_cookie_name = f"{prefix}gw_login"

    # -- session ---------------------------------------------------------------------------

    async def load(self, request: Request) -> Session | None:
        """The valid session of this request, or None (bad, expired or ended)."""
        raw = request.cookies.get(self.cookie_name)
        if not raw or len(raw) > 8192:
            return None
        try:
            data: dict[str, Any] = self._serializer.loads(raw, max_age=self.lifetime)
            identity_data = data["identity"]
            identity = Identity(**{**identity_data, "groups": tuple(identity_data["groups"])})
            session = Session(sid=str(data["sid"]), identity=identity, issued_at=int(data["iat"]))
        except (BadSignature, KeyError, TypeError, ValueError):
            return None
        if await self._store.get(f"revoked:{session.sid}") is not None:
            return None
        return session

    def issue(self, response: Response, identity: Identity) -> Session:
        """Start a new session (always a new id: no fixation) and set its cookie."""
        if self._relevant_groups is not None:
            kept = tuple(g for g in identity.groups if g in self._relevant_groups)
            identity = Identity(**{**asdict(identity), "groups": kept})
        session = Session(secrets.token_urlsafe(18), identity, int(self._clock()))
        value = self._serializer.dumps(
            {"sid": session.sid, "iat": session.issued_at, "identity": asdict(identity)}
        )
        response.set_cookie(
            self.cookie_name,
            value,
            max_age=self.lifetime,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )
        return session

    async def end(self, response: Response, session: Session | None) -> None:
        """End the session: revoke its id in the store and clear the cookie."""
        if session is not None:
            remaining = session.issued_at + self.lifetime - self._clock()
            if remaining > 0:
                await self._store.set(f"revoked:{session.sid}", b"1", remaining)
        response.delete_cookie(
            self.cookie_name, path="/", secure=self.secure, httponly=True, samesite="lax"
        )

    # -- CSRF for POST /logout -------------------------------------------------------------

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(session), token or "")

    # -- login binding cookie --------------------------------------------------------------

    def set_login_binding(self, response: Response, token: str, *, cross_site_post: bool) -> None:
        samesite: Any = "none" if (cross_site_post and self.secure) else "lax"
        response.set_cookie(
            self.login_cookie_name,
            token,
            max_age=self.login_timeout,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite=samesite,
        )

    def login_binding(self, request: Request) -> str | None:
        value = request.cookies.get(self.login_cookie_name)
        return value if value and len(value) <= 128 else None

    def clear_login_binding(self, response: Response) -> None:
        response.delete_cookie(self.login_cookie_name, path="/", secure=self.secure, httponly=True)
