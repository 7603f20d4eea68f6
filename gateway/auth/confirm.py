"""Sign-ins held for the employee's "Continue": IdP-initiated (unsolicited) SAML responses.

An unsolicited response was not asked for by this browser, so anyone can make a victim's
browser post one (the attacker's own, freshly issued by the IdP: login CSRF, the victim then
works in the attacker's LMS account). SAML Profiles 4.1.5 leaves it to the SP to decide
whether to accept unsolicited responses; we accept them only after the person at the browser
confirms who they are about to become. After full validation the verified Identity and the
target are held in the store (single use, short TTL) under the digest of a fresh random
browser token; the token goes into the login-binding cookie, so only the browser that
received the response can see or finish the held sign-in, and the confirmation form also
carries a random CSRF token.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import asdict, dataclass

from gateway.auth.base import LoginRequest, new_browser_token, token_digest
from gateway.errors import LoginStateError
from gateway.identity import Identity
from gateway.store.base import Store

CONFIRM_TTL_SECONDS = 300.0
EXPIRED = "This sign-in was started in another browser or has expired — start again."


@dataclass(frozen=True, slots=True)
class HeldSignIn:
    """A validated sign-in waiting for "Continue"; ``csrf`` goes into the form."""

    identity: Identity
    login: LoginRequest
    csrf: str

    def __repr__(self) -> str:
        return f"HeldSignIn(idp={self.identity.idp!r}, csrf=<redacted>)"


class SignInConfirmations:
    """Holds, shows and finishes sign-ins awaiting confirmation, keyed per browser."""

    def __init__(self, store: Store, prefix: str, ttl: float = CONFIRM_TTL_SECONDS) -> None:
        self._store = store
        self._prefix = prefix
        self.ttl = ttl

    def _key(self, browser_token: str | None) -> str:
        if not browser_token:
            raise LoginStateError("no login-binding cookie for a held sign-in", public=EXPIRED)
        return f"{self._prefix}:{token_digest(browser_token)}"

    async def hold(self, identity: Identity, login: LoginRequest) -> str:
        """Hold a verified sign-in; returns the browser token for the binding cookie."""
        browser_token, _ = new_browser_token()
        record = {
            "identity": asdict(identity),
            "login": asdict(login),
            "csrf": secrets.token_urlsafe(32),
        }
        await self._store.set(self._key(browser_token), json.dumps(record).encode(), self.ttl)
        return browser_token

    async def peek(self, browser_token: str | None) -> HeldSignIn:
        """The sign-in held for this browser (not consumed), or LoginStateError."""
        return self._decode(await self._store.get(self._key(browser_token)))

    async def take(self, browser_token: str | None, csrf: str | None) -> HeldSignIn:
        """Consume the held sign-in; it is gone whatever the outcome (single use)."""
        held = self._decode(await self._store.pop(self._key(browser_token)))
        if not csrf or not hmac.compare_digest(held.csrf.encode(), csrf.encode()):
            raise LoginStateError("confirmation form without the right CSRF token", public=EXPIRED)
        return held

    async def discard(self, browser_token: str | None) -> None:
        """Drop the held sign-in ("Cancel"); nothing held is not an error."""
        if browser_token:
            await self._store.delete(self._key(browser_token))

    @staticmethod
    def _decode(raw: bytes | None) -> HeldSignIn:
        if raw is None:
            raise LoginStateError(
                "no held sign-in for this browser (other browser, used, expired)", public=EXPIRED
            )
        record = json.loads(raw)
        data = record["identity"]
        identity = Identity(**{**data, "groups": tuple(data["groups"])})
        return HeldSignIn(identity, LoginRequest(**record["login"]), str(record["csrf"]))
