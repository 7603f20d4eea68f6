"""Routes for embedded lesson players (thin Starlette glue over :mod:`gateway.embed`).

* ``GET /embed/{app}/lesson-schedules/{id}``: the portal's iframe, with the gateway session.
  This is THE browser path: the employee's own session decides whose lessons are shown.
* ``GET /api/v1/apps/{app}/lesson-schedules?employee=&status=`` and
  ``GET /api/v1/apps/{app}/lesson-schedules/{id}/embed?employee=``: portal back-ends with a
  bearer credential, server to server. No CORS headers and no successful ``OPTIONS``
  preflight unless a portal opts in with ``browser_cors = true`` (then for its configured
  origins only).

Errors inside the iframe are rendered with the embed page's ``frame-ancestors`` so the portal
shows the explanation instead of a blocked frame. A repeated ``employee`` or ``status`` is a
400 before any LMS call.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import embed
from gateway.errors import Forbidden, GatewayError, NotFound
from gateway.policy import profile_for
from gateway.web.responses import NO_STORE, gateway_error_response, services, single_param

if TYPE_CHECKING:
    from gateway.services import AppRuntime
    from gateway.store.base import Store


# Longest the portal API remembers e-mail -> LMS user id (each lookup is an LMS search). The
# app's revalidate_seconds (and account_cache_seconds) shorten it: the mapping is re-checked
# against the LMS (gone? inactive?) at least that often, and reading it never extends it.
PORTAL_USER_CACHE_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class PortalUsers:
    """The portal API's e-mail -> LMS user id lookup for one app, cached in the store."""

    resolve: Callable[[str], Awaitable[str]]
    forget: Callable[[str], Awaitable[None]]


def portal_user_ttl(runtime: AppRuntime) -> int:
    """Seconds a portal e-mail -> user id mapping may be served without asking the LMS."""
    app = runtime.settings
    return min(PORTAL_USER_CACHE_SECONDS, app.revalidate_seconds, app.account_cache_seconds)


def _resolver(runtime: AppRuntime, store: Store) -> PortalUsers:
    """The employee's LMS user id by e-mail, cached in the store: a portal drawing its page
    then spends its LMS calls on lessons, not on finding the same employee again. One LMS
    search per employee per TTL; the TTL runs from that search (a hit does not renew it), so
    an account the LMS has since removed or deactivated is refused at the next search."""
    find: Callable[[str], Awaitable[str]] | None = getattr(runtime.connector, "find_user_id", None)
    if find is None:
        raise NotFound(f"app {runtime.name} has no embeddable lessons")
    lookup = find
    ttl = portal_user_ttl(runtime)

    def key_of(email: str) -> str:
        digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
        return f"portal-user:{runtime.name}:{digest}"

    async def resolve(email: str) -> str:
        key = key_of(email)
        cached = await store.get(key) if ttl else None
        if cached is not None:
            return cached.decode()
        # Raises NotFound / AccountInactive / AmbiguousAccount: nothing is cached then.
        user_id = await lookup(email)
        if ttl and user_id:
            await store.set(key, user_id.encode(), ttl)
        return user_id

    async def forget(email: str) -> None:
        await store.delete(key_of(email))

    return PortalUsers(resolve, forget)


async def embed_page(request: Request) -> Response:
    """The iframe: check the session and ownership, then 303 to the LMS player."""
    svc = services(request)
    app_name = request.path_params["app"]
    try:
        runtime = svc.app(app_name)
        embed.embed_capable(runtime.connector, app_name)
        headers = {**embed.embed_headers(svc.settings.portal, app_name)}
        session = await svc.sessions.load(request)
        if session is None or session.identity.idp not in runtime.settings.idps:
            return _sign_in_page(runtime, request.url.path, headers)
        identity = session.identity
        profile = profile_for(runtime.name, runtime.settings, identity)  # access rules apply
        account = await runtime.provisioner.cached_account(identity)
        if account is None:
            # Not cached (first visit, or the cache expired): provision as a sign-in would.
            # The link minted on the way is dropped unused; it never leaves this process.
            account = (await runtime.provisioner.sign_in(identity, profile, None)).account
        url = await embed.session_embed(
            runtime.connector, app_name, account.user_id, request.path_params["id"]
        )
        return RedirectResponse(url, status_code=303, headers=headers)
    except GatewayError as exc:
        response = gateway_error_response(request, exc)
        response.headers.update(embed.embed_headers(svc.settings.portal, app_name))
        return response


def _sign_in_page(runtime: AppRuntime, path: str, headers: dict[str, str]) -> Response:
    """IdPs refuse to be framed: offer a top-level sign-in that comes back here."""
    idp = runtime.settings.idps[0]
    href = f"/auth/{quote(idp)}/login?" + urlencode({"return_to": path})
    if len(runtime.settings.idps) > 1:
        href = f"/login/{quote(runtime.name)}"
    name = html.escape(runtime.settings.display_name or runtime.name)
    body = (
        f"<!doctype html><meta charset=utf-8><title>Sign in</title>"
        f"<p>Sign in to see your lessons in {name}.</p>"
        f'<p><a href="{html.escape(href)}" target="_top">Sign in</a></p>'
    )
    return HTMLResponse(body, status_code=401, headers=headers)


async def _api(request: Request, work: Callable[[AppRuntime], Awaitable[object]]) -> Response:
    svc = services(request)
    app_name = request.path_params["app"]
    origin = request.headers.get("origin")
    # Before the credential is known (401/403): origins of opted-in portals of this app.
    cors = embed.cors_headers(svc.settings.portal, origin, app_name)
    try:
        portal = embed.authenticate_portal(
            request.headers.get("authorization"), svc.settings.portal, app_name
        )
        # Known: only the calling portal's own origins (and only if it opted in).
        cors = embed.cors_headers(svc.settings.portal, origin, app_name, portal=portal)
        body = await work(svc.app(app_name))
        return JSONResponse(body, headers={**NO_STORE, **cors})
    except GatewayError as exc:
        response = gateway_error_response(request, exc)
        response.headers.update(cors)
        return response


async def api_lesson_schedules(request: Request) -> Response:
    """``GET /api/v1/apps/{app}/lesson-schedules?employee=<email>&status=due``."""

    async def work(runtime: AppRuntime) -> object:
        employee = single_param(request, "employee")
        status = single_param(request, "status")
        users = _resolver(runtime, services(request).store)
        return await embed.portal_lesson_schedules(
            runtime.connector, runtime.name, users.resolve, employee, status, forget=users.forget
        )

    return await _api(request, work)


async def api_embed(request: Request) -> Response:
    """``GET /api/v1/apps/{app}/lesson-schedules/{id}/embed?employee=<email>``."""

    async def work(runtime: AppRuntime) -> object:
        employee = single_param(request, "employee")
        users = _resolver(runtime, services(request).store)
        return await embed.portal_embed(
            runtime.connector,
            runtime.name,
            users.resolve,
            employee,
            request.path_params["id"],
            forget=users.forget,
        )

    return await _api(request, work)


async def api_preflight(request: Request) -> Response:
    """CORS preflight: succeeds only for origins of portals scoped to the app that opted in
    with ``browser_cors``; anything else is a 403 without any ``Access-Control-*`` header."""
    svc = services(request)
    headers = embed.cors_headers(
        svc.settings.portal,
        request.headers.get("origin"),
        request.path_params["app"],
        preflight=True,
    )
    if "Access-Control-Allow-Origin" not in headers:
        refused = Forbidden(
            "portal API: CORS preflight refused (origin not configured or browser_cors off)",
            public="This API is for portal servers, not browsers.",
        )
        response = gateway_error_response(request, refused)
        response.headers.update(headers)
        return response
    return Response(status_code=204, headers={**NO_STORE, **headers})


def routes() -> list[BaseRoute]:
    return [
        Route("/embed/{app}/lesson-schedules/{id}", embed_page, methods=["GET"]),
        Route("/api/v1/apps/{app}/lesson-schedules", api_lesson_schedules, methods=["GET"]),
        Route("/api/v1/apps/{app}/lesson-schedules", api_preflight, methods=["OPTIONS"]),
        Route("/api/v1/apps/{app}/lesson-schedules/{id}/embed", api_embed, methods=["GET"]),
        Route("/api/v1/apps/{app}/lesson-schedules/{id}/embed", api_preflight, methods=["OPTIONS"]),
    ]
