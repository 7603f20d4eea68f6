"""What both front doors (OIDC, SAML) share: the login request they carry through the IdP
round trip and the redirect they hand back.

Pending logins live in the store (not a cookie) so they survive a cross-site POST (SAML ACS)
and are single-use across replicas. Each is bound to the browser that started it through a
random ``browser_token``: the front door stores only its SHA-256, ``app.py`` puts the token in
a short-lived cookie, and the callback must present it (where the browser sends it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """Where to go after sign-in; every field was validated before it was stored."""

    app: str | None = None
    target: str | None = None
    # A gateway path (e.g. an /embed/... page) to continue at instead of launching ``app``.
    return_to: str | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the browser to ``url`` and set the login-binding cookie to ``browser_token``."""

    url: str
    browser_token: str

    def __repr__(self) -> str:
        return "Redirect(url=<idp>, browser_token=<redacted>)"


def new_browser_token() -> tuple[str, str]:
    """A fresh browser token and the digest to store with the pending login."""
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def browser_matches(stored_digest: str, presented: str | None) -> bool:
    """Constant-time check that the presented cookie is the one this login started with."""
    if not presented:
        return False
    return hmac.compare_digest(stored_digest, token_digest(presented))


class FrontDoor(Protocol):
    """One configured IdP."""

    name: str
    kind: str  # "oidc" | "saml"
    # Why discovery / metadata last failed to load (operator reason, no secrets), or None.
    last_error: str | None

    @property
    def ready(self) -> bool:
        """True once discovery / metadata has been loaded at least once."""

    async def start(self) -> None:
        """Load discovery or metadata; never raises (readiness reports the state)."""

    async def begin(self, request: LoginRequest) -> Redirect:
        """Store a pending login and return where to send the browser."""

    async def aclose(self) -> None:
        """Stop background work and close clients."""
