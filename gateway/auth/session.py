"""The employee's gateway session and the short-lived login-binding cookie.

The session is a signed cookie (itsdangerous) holding the Identity, a random session id and
the issue time: ``HttpOnly``, ``Secure`` (off only in dev mode), ``SameSite=Lax``, ``__Host-``
prefixed when secure, a fresh value at every sign-in (no fixation).

Fail closed: a session exists only while the store knows it. Issuing writes
``session:<sid>`` (TTL = the session lifetime), every load reads it (one store read, as the
revocation check did before) and logging out deletes it. A store that lost its data (a Redis
restart without persistence, a failover to an empty replica) therefore signs everyone out: it
can never revive a signed-out or copied cookie, which an "absent means valid" revocation list
did. A store that cannot be reached raises StoreUnavailable (a 503 page), never "valid".
Cookies issued before this scheme (no ``session:`` entry) are simply signed out; their holders
sign in again. The signature still matters: it is what makes the cookie's Identity trustworthy,
the store entry only says the session is still alive.

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
from dataclasses import dataclass, replace
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from gateway.identity import Identity, identity_dict
from gateway.store.base import Store


def _session_key(sid: str) -> str:
    """The store key whose presence makes session ``sid`` valid."""
    return f"session:{sid}"


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    identity: Identity
    issued_at: int
    # The app the sign-in that issued this session was for (kept in the store record, not the
    # cookie): Back or Reload onto the IdP's spent answer continues there with this session.
    app: str | None = None


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
        # Fail closed: only a session the store still holds is valid. StoreUnavailable
        # propagates (503); it is never read as "not revoked".
        record = await self._store.get(_session_key(session.sid))
        if record is None:
            return None
        if record.startswith(b"app:"):
            session = replace(session, app=record[4:].decode("utf-8", "replace"))
        return session

    async def issue(
        self, response: Response, identity: Identity, *, app: str | None = None
    ) -> Session:
        """Start a new session (always a new id: no fixation): record it in the store for
        its lifetime, then set its cookie. StoreUnavailable when the store cannot record it
        (no cookie is set then: it could never be honoured)."""
        if self._relevant_groups is not None:
            kept = tuple(g for g in identity.groups if g in self._relevant_groups)
            identity = replace(identity, groups=kept)
        session = Session(secrets.token_urlsafe(18), identity, int(self._clock()), app)
        value = self._serializer.dumps(
            {"sid": session.sid, "iat": session.issued_at, "identity": identity_dict(identity)}
        )
        record = b"app:" + app.encode() if app else b"1"
        await self._store.set(_session_key(session.sid), record, self.lifetime)
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

    async def is_live(self, sid: str) -> bool:
        """Whether session ``sid`` still exists in the store (not signed out, not expired).
        Credentials derived from a session (the portal iframe's embed grant) end with it."""
        return await self._store.get(_session_key(sid)) is not None

    async def forget(self, session: Session) -> None:
        """Make ``session`` invalid everywhere (its cookie, and any copy, stop working)."""
        await self._store.delete(_session_key(session.sid))

    async def end(self, response: Response, session: Session | None) -> None:
        """End the session: forget it in the store (a copy of the cookie is dead too) and
        clear the cookie. The CSRF token is derived from the session id, so nothing else is
        stored per session."""
        if session is not None:
            await self.forget(session)
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
