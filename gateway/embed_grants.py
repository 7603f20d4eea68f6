"""Signing in from a portal's iframe: the one-time hand-over and the embed grant it yields.

The problem. A portal page (one site) frames ``/embed/{app}/lesson-schedules/{id}`` (the
gateway, another site). The gateway session cookie is ``SameSite=Lax``, so the browser never
sends it to the frame; Safari and Firefox block or partition third-party cookies anyway, and
IdPs refuse to be framed. A "sign in" link with ``target=_top`` (what this replaced) took the
employee away from the portal for good.

The design chosen: **a popup plus a one-time hand-over into a partitioned cookie**.

1. *start* (the iframe's script, a same-origin JSON ``fetch``): a random ``handle`` goes back
   in the answer body and a random ``binding`` into a ``Partitioned; SameSite=None`` cookie,
   i.e. the cookie jar of *this frame under this portal* (CHIPS). The store remembers
   ``{app, portal origin, sha256(binding)}`` for the login timeout. The portal origin must be
   one configured for a portal of the app (a portal origin not configured gets nothing).
2. *popup* (a form POST of ``handle``, from the frame, into a popup window): a top-level,
   first-party window. It keeps ``handle`` in a first-party ``SameSite=Lax`` cookie, and signs
   in exactly like a top-level sign-in (the IdP round trip keeps its own browser binding), or
   reuses a valid gateway session.
3. *done* (the popup lands back): the handle's pending record becomes a *ticket* holding the
   session id and Identity, valid :data:`TICKET_SECONDS`. The page nudges its opener with a
   ``postMessage`` that carries **nothing secret** and closes.
4. *finish* (the iframe's script polls, and polls at once on the nudge): presents ``handle``
   in the body and ``binding`` in its partitioned cookie. The ticket is popped (single use),
   checked against ``sha256(binding)`` (only the frame that started it can redeem it) and
   turned into an **embed grant**: a random id in another partitioned cookie, valid only on
   ``/embed/`` routes, only for the apps of that portal, and only while the session it came
   from lives (signing out at the gateway ends it too). It is never a gateway session.

Why not the alternatives: a top-level round trip back to the portal page still leaves the
frame without a credential of its own (the same hand-over is needed, with the secret passing
through the portal's URL); the Storage Access API needs a prompt and prior first-party
interaction, and is unavailable in some browsers. Why polling rather than the ticket itself in
a ``postMessage``: IdPs that send ``Cross-Origin-Opener-Policy`` sever ``window.opener``, and
a secret never travels between windows at all; the message is only a "look now".

Threats this answers: login CSRF / fixation (the popup form must be a same-origin POST, so no
other site can make a victim's popup complete a handle an attacker holds; a handle is only
ever in the frame's script and a POST body, never in a URL); a stolen ticket (useless without
the frame's partitioned binding cookie); replay (pop = single use); clickjacking (every embed
page keeps ``frame-ancestors`` = the app's portals; the popup pages are unframeable).
Everything stored is keyed by a SHA-256 of the random value, so a store dump holds no usable
handle or cookie. Nothing here imports Starlette.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from gateway.errors import Forbidden, GatewayError, LoginStateError
from gateway.identity import Identity
from gateway.store.base import Store

# How long a finished popup sign-in waits for its frame to collect it.
TICKET_SECONDS = 120
_START = "embed-start:"
_TICKET = "embed-ticket:"
_GRANT = "embed-grant:"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_secret() -> str:
    """A random value for a handle, a binding or a grant id (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Started:
    """What :meth:`EmbedSignIns.start` hands out: ``handle`` for the frame's script,
    ``binding`` for the frame's partitioned cookie."""

    handle: str
    binding: str


@dataclass(frozen=True, slots=True)
class Grant:
    """A frame's credential: ``identity`` may see lessons of ``apps`` while session ``sid``
    lives."""

    identity: Identity
    apps: tuple[str, ...]
    portal: str
    sid: str


class WrongBrowser(Forbidden):
    """A handle presented without the binding cookie of the frame that started it."""

    code = "embed_wrong_browser"


class CookieBlocked(WrongBrowser):
    """No binding cookie at all: the browser refused the frame's partitioned cookie."""

    code = "embed_cookie_blocked"


def _matches(record: dict[str, Any], binding: str | None, app: str) -> bool:
    expected = str(record.get("bind", ""))
    presented = _digest(binding) if binding else ""
    return record.get("app") == app and hmac.compare_digest(expected, presented)


def _refusal(record: dict[str, Any], binding: str | None, app: str) -> GatewayError:
    if record.get("app") != app:
        return LoginStateError("embed sign-in: handle presented for another app")
    if not binding:
        return CookieBlocked(
            "embed sign-in: no binding cookie (the browser refused the frame's cookie)",
            public="Your browser did not keep the sign-in for this page.",
        )
    return WrongBrowser(
        "embed sign-in: handle presented without its frame's binding",
        public="This sign-in was started in another browser or page.",
    )


def _identity_of(data: dict[str, Any]) -> Identity:
    return Identity(**{**data, "groups": tuple(data.get("groups", ()))})


def _load(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class EmbedSignIns:
    """The store side of the hand-over (see the module docstring). Stateless apart from
    the store, so handlers may build one per request."""

    def __init__(self, store: Store, *, login_timeout: int, grant_lifetime: int) -> None:
        self._store = store
        self._login_timeout = login_timeout
        self.grant_lifetime = grant_lifetime

    async def start(self, app: str, portal: str) -> Started:
        """Begin a frame's sign-in for ``app`` inside ``portal`` (a configured origin)."""
        started = Started(new_secret(), new_secret())
        record = {"app": app, "portal": portal, "bind": _digest(started.binding)}
        await self._store.set(
            _START + _digest(started.handle), json.dumps(record).encode(), self._login_timeout
        )
        return started

    async def is_pending(self, handle: str, app: str) -> bool:
        """Whether ``handle`` is a started, unfinished sign-in for ``app`` (the popup checks
        this before sending anyone to an IdP)."""
        record = _load(await self._store.get(_START + _digest(handle)))
        return record is not None and record.get("app") == app

    async def complete(self, handle: str, app: str, sid: str, identity: Identity) -> bool:
        """The popup signed in as ``identity`` (session ``sid``): turn the pending record into
        a ticket. False when this handle was already completed (the popup page reloaded);
        LoginStateError when it is unknown, expired or for another app."""
        key = _digest(handle)
        record = _load(await self._store.get(_START + key))
        if record is None or record.get("app") != app:
            if record is None and await self._store.get(_TICKET + key) is not None:
                return False
            raise LoginStateError("embed sign-in: unknown or expired handle")
        ticket = {**record, "sid": sid, "identity": asdict(identity)}
        # Ticket first, then drop the pending record: a poll in between sees one of them.
        stored = await self._store.set_if_absent(
            _TICKET + key, json.dumps(ticket).encode(), TICKET_SECONDS
        )
        await self._store.delete(_START + key)
        return stored

    async def redeem(self, handle: str, binding: str | None, app: str) -> dict[str, Any] | None:
        """The frame asks whether its sign-in finished. None while the popup has not (the
        binding must match already); the ticket's record once, and never again. Raises
        CookieBlocked / WrongBrowser (the record is burnt) or LoginStateError (unknown,
        expired, spent)."""
        key = _digest(handle)
        ticket = _load(await self._store.pop(_TICKET + key))
        if ticket is None:
            pending = _load(await self._store.get(_START + key))
            if pending is not None:
                if _matches(pending, binding, app):
                    return None
                # A handle in the wrong hands (or a jar that refuses the cookie): burn it.
                await self._store.delete(_START + key)
                raise _refusal(pending, binding, app)
            # The popup may have finished between the two reads.
            ticket = _load(await self._store.pop(_TICKET + key))
            if ticket is None:
                raise LoginStateError("embed sign-in: unknown, expired or spent handle")
        if not _matches(ticket, binding, app):
            raise _refusal(ticket, binding, app)
        return ticket

    async def issue_grant(self, ticket: dict[str, Any], apps: tuple[str, ...]) -> str:
        """Store a grant for the redeemed ``ticket``, usable for ``apps``; its id (cookie)."""
        grant_id = new_secret()
        record = {
            "identity": ticket["identity"],
            "apps": list(apps),
            "portal": ticket["portal"],
            "sid": ticket["sid"],
        }
        await self._store.set(
            _GRANT + _digest(grant_id), json.dumps(record).encode(), self.grant_lifetime
        )
        return grant_id

    async def grant(self, grant_id: str | None) -> Grant | None:
        """The grant a frame's cookie names, or None (absent, expired, malformed)."""
        if not grant_id or len(grant_id) > 128:
            return None
        record = _load(await self._store.get(_GRANT + _digest(grant_id)))
        if record is None:
            return None
        try:
            return Grant(
                identity=_identity_of(record["identity"]),
                apps=tuple(str(a) for a in record["apps"]),
                portal=str(record["portal"]),
                sid=str(record["sid"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
