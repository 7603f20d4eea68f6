"""The portal side of embedded lesson players: framework-light helpers ``app.py`` mounts.

Two ways in (see the README):

* ``GET /embed/{app}/lesson-schedules/{id}`` — the browser inside a portal's iframe, signed in
  with the gateway session (same-site portals) or the frame's own embed grant (any portal;
  :mod:`gateway.embed_grants`): :func:`session_embed` gives the player URL to redirect to,
  sent with :func:`embed_headers` (``frame-ancestors`` = the app's portal origins exactly).
  :func:`portal_of` and :func:`portal_apps` scope a frame's sign-in to configured portals.
* ``/api/v1/apps/{app}/lesson-schedules[/{id}/embed]?employee=<email>`` — a portal back-end
  with its bearer credential: :func:`authenticate_portal`, then :func:`portal_lesson_schedules`
  or :func:`portal_embed`. The API is server-to-server: the credential acts for *any*
  employee, so in browser JavaScript every employee could read it and mint colleagues'
  players. :func:`cors_headers` is empty unless a portal opts in with ``browser_cors = true``.

Everything takes plain values and returns data or raises :mod:`gateway.errors`; nothing here
imports Starlette.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from gateway.connectors.base import EmbedCapable, LessonSchedule
from gateway.errors import (
    AccountGone,
    AccountInactive,
    BadRequest,
    Forbidden,
    NotFound,
    Unauthorized,
)
from gateway.settings import PortalSettings

# Every gateway page that is not an embed page may not be framed at all.
NO_FRAMING = "frame-ancestors 'none'"
SCHEDULE_STATUSES = frozenset({"all", "scheduled", "due", "overdue", "completed", "cancelled"})
_ORIGIN = re.compile(r"^https?://[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$")
_EMAIL = re.compile(r"^[^\s@\x00-\x1f\x7f]{1,64}@[^\s@\x00-\x1f\x7f]{1,190}$")
_TOKEN = re.compile(r"^[\x21-\x7e]{16,512}$")

UserResolver = Callable[[str], Awaitable[str]]
UserForgetter = Callable[[str], Awaitable[None]]
_T = TypeVar("_T")


def hash_credential(credential: str) -> str:
    """The hex SHA-256 stored in ``[portal.<name>] token_sha256`` for a bearer credential."""
    return hashlib.sha256(credential.encode()).hexdigest()


def authenticate_portal(
    authorization: str | None, portals: Mapping[str, PortalSettings], app: str
) -> str:
    """The name of the portal whose credential ``Authorization: Bearer ...`` presents.

    Missing or unknown credential: Unauthorized (401). A portal not scoped to ``app``:
    Forbidden (403), checked before the app's existence so apps cannot be probed.
    """
    scheme, _, credential = (authorization or "").strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not _TOKEN.match(credential):
        raise Unauthorized("portal API: missing or malformed bearer credential")
    presented = hash_credential(credential).encode()
    matched: str | None = None
    # Compare against every portal, without stopping early, in constant time.
    for name, portal in portals.items():
        if hmac.compare_digest(presented, portal.token_sha256.encode()):
            matched = name
    if matched is None:
        raise Unauthorized("portal API: unknown bearer credential")
    if app not in portals[matched].apps:
        raise Forbidden(f"portal API: portal {matched} is not scoped to app {app[:64]!r}")
    return matched


def _normalise_origin(origin: str) -> str | None:
    value = origin.strip().lower().rstrip("/")
    return value if _ORIGIN.match(value) else None


def portal_origins(portals: Mapping[str, PortalSettings], app: str | None) -> tuple[str, ...]:
    """Configured origins of the portals scoped to ``app`` (of all portals when None),
    normalised and de-duplicated; malformed entries are dropped, never echoed into headers."""
    seen: dict[str, None] = {}
    for portal in portals.values():
        if app is not None and app not in portal.apps:
            continue
        for origin in portal.origins:
            normalised = _normalise_origin(origin)
            if normalised is not None:
                seen.setdefault(normalised, None)
    return tuple(seen)


def frame_ancestors(portals: Mapping[str, PortalSettings], app: str) -> str:
    """The CSP value for an app's embed pages: exactly its portals' origins, or 'none'."""
    origins = portal_origins(portals, app)
    return "frame-ancestors " + " ".join(origins) if origins else NO_FRAMING


def embed_headers(
    portals: Mapping[str, PortalSettings],
    app: str,
    *,
    scripts: bool = False,
    img_sources: tuple[str, ...] = (),
) -> dict[str, str]:
    """Headers for the embed redirect/page: framing by the app's portals only, no caching
    and no referrer (the player URL carries a token). ``scripts``: the frame's sign-in page,
    which runs ``/static/embed.js`` and calls and posts only to the gateway itself."""
    script = "script-src 'self'; connect-src 'self'; form-action 'self'; " if scripts else ""
    images = " ".join(("'self'", "data:", *img_sources))
    return {
        # The gateway's usual page policy, with framing opened to the app's portals only.
        "Content-Security-Policy": f"default-src 'none'; {script}style-src 'self'; "
        f"img-src {images}; base-uri 'none'; " + frame_ancestors(portals, app),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
    }


def portal_of(portals: Mapping[str, PortalSettings], app: str, origin: str | None) -> str | None:
    """``origin`` normalised when it is a configured origin of a portal scoped to ``app``,
    else None (a portal origin not configured gets nothing)."""
    normalised = _normalise_origin(origin) if origin else None
    return normalised if normalised and normalised in portal_origins(portals, app) else None


def portal_apps(portals: Mapping[str, PortalSettings], origin: str) -> tuple[str, ...]:
    """The apps of every portal that configured ``origin``: what a frame signed in under
    that portal may show."""
    apps: dict[str, None] = {}
    for portal in portals.values():
        if origin in portal_origins({"p": portal}, None):
            apps.update(dict.fromkeys(portal.apps))
    return tuple(apps)


def cors_origins(
    portals: Mapping[str, PortalSettings], app: str | None, portal: str | None = None
) -> tuple[str, ...]:
    """Origins that may call ``/api/v1`` from a browser: those of portals that opted in with
    ``browser_cors = true`` (only ``portal``'s when given), scoped to ``app`` when given."""
    opted_in = {
        name: p
        for name, p in portals.items()
        if p.browser_cors and (portal is None or name == portal)
    }
    return portal_origins(opted_in, app)


def cors_headers(
    portals: Mapping[str, PortalSettings],
    origin: str | None,
    app: str | None = None,
    *,
    preflight: bool = False,
    portal: str | None = None,
) -> dict[str, str]:
    """CORS headers for ``/api/v1`` given the request's ``Origin``: the origin is echoed
    only when a portal (scoped to ``app`` when given, ``portal`` itself once its credential
    is known) configured it AND opted in with ``browser_cors``. Otherwise no
    ``Access-Control-*`` header at all: browsers may not read the answer. No credentials
    mode: the API uses bearer credentials, never cookies."""
    headers = {"Vary": "Origin"}
    normalised = _normalise_origin(origin) if origin else None
    if normalised is None or normalised not in cors_origins(portals, app, portal):
        return headers
    headers["Access-Control-Allow-Origin"] = normalised
    if preflight:
        headers.update(
            {
                "Access-Control-Allow-Methods": "GET, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization",
                "Access-Control-Max-Age": "600",
            }
        )
    return headers


def parse_employee(value: str | None) -> str:
    """The ``employee`` query value as an e-mail address, or BadRequest."""
    email = (value or "").strip()
    if len(email) > 254 or not _EMAIL.match(email):
        raise BadRequest("portal API: employee must be an e-mail address")
    return email


def parse_status(value: str | None) -> str:
    """The ``status`` filter (default ``all``), or BadRequest."""
    status = (value or "all").strip().lower()
    if status not in SCHEDULE_STATUSES:
        raise BadRequest(
            "portal API: status must be one of " + ", ".join(sorted(SCHEDULE_STATUSES))
        )
    return status


def embed_capable(connector: object, app: str) -> EmbedCapable:
    """The connector as EmbedCapable, or NotFound (apps whose LMS cannot embed)."""
    if not isinstance(connector, EmbedCapable):
        raise NotFound(f"app {app[:64]!r} has no embeddable lessons")
    return connector


def schedule_json(schedule: LessonSchedule) -> dict[str, Any]:
    """One lesson schedule as the portal API shows it."""
    return {
        "id": schedule.id,
        "name": schedule.name,
        "status": schedule.status,
        "startDate": schedule.start_date,
        "dueDate": schedule.due_date,
        "thumbnailUrl": schedule.thumbnail_url,
    }


async def _resolve(resolve_user: UserResolver, email: str) -> str:
    user_id = await resolve_user(email)
    if not user_id:
        raise NotFound("portal API: no training account for this employee")
    return user_id


async def _forgetting(forget: UserForgetter | None, email: str, call: Awaitable[_T]) -> _T:
    """Await ``call``; when the LMS says the account is gone or inactive, drop the cached
    e-mail -> user id first, so the next request asks the LMS again instead of trusting it."""
    try:
        return await call
    except (AccountGone, AccountInactive):
        if forget is not None:
            await forget(email)
        raise


async def portal_lesson_schedules(
    connector: object,
    app: str,
    resolve_user: UserResolver,
    employee: str | None,
    status: str | None,
    *,
    forget: UserForgetter | None = None,
) -> dict[str, Any]:
    """``GET /api/v1/apps/{app}/lesson-schedules?employee=&status=`` body.

    ``resolve_user`` maps an e-mail address to the LMS user id (raising NotFound,
    AmbiguousAccount or AccountInactive); ``DamstraConnector.find_user_id`` is one.
    ``forget`` drops a cached mapping the LMS contradicted.
    """
    embedder = embed_capable(connector, app)
    email, wanted = parse_employee(employee), parse_status(status)
    user_id = await _resolve(resolve_user, email)
    try:
        schedules = await _forgetting(forget, email, embedder.lesson_schedules(user_id, wanted))
    except AccountGone:
        raise NotFound("portal API: the employee's training account no longer exists") from None
    return {"lessonSchedules": [schedule_json(s) for s in schedules]}


async def portal_embed(
    connector: object,
    app: str,
    resolve_user: UserResolver,
    employee: str | None,
    schedule_id: str,
    *,
    forget: UserForgetter | None = None,
) -> dict[str, str]:
    """``GET /api/v1/apps/{app}/lesson-schedules/{id}/embed?employee=`` body.

    Another employee's schedule is NotFound exactly like a missing one; nothing is minted.
    The answer carries a player token: send it with ``Cache-Control: no-store``.
    """
    embedder = embed_capable(connector, app)
    email = parse_employee(employee)
    user_id = await _resolve(resolve_user, email)
    try:
        url = await _forgetting(forget, email, embedder.embed_url(user_id, schedule_id))
    except AccountGone:
        raise NotFound("portal API: the employee's training account no longer exists") from None
    return {"embedUrl": url}


# LMS calls one player URL costs (Damstra: read the schedule to check whose it is, then mint
# the player). A signed-in employee's frame reserves them all from their share up front.
EMBED_CALLS = 2


async def session_embed(connector: object, app: str, user_id: str, schedule_id: str) -> str:
    """The player URL to redirect a signed-in employee's iframe to (303, with
    :func:`embed_headers`). ``user_id`` is the LMS account cached for the session."""
    return await embed_capable(connector, app).embed_url(user_id, schedule_id)
