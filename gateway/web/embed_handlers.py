"""Routes for embedded lesson players (thin Starlette glue over :mod:`gateway.embed`).

* ``GET /embed/{app}/lesson-schedules/{id}``: the portal's iframe, with the gateway session.
* ``GET /api/v1/apps/{app}/lesson-schedules?employee=&status=`` and
  ``GET /api/v1/apps/{app}/lesson-schedules/{id}/embed?employee=``: portal back-ends with a
  bearer credential (``OPTIONS`` answers CORS preflights for configured portal origins).

Errors inside the iframe are rendered with the embed page's ``frame-ancestors`` so the portal
shows the explanation instead of a blocked frame; API errors carry the CORS headers so a
portal page can read them.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import embed
from gateway.errors import GatewayError, NotFound
from gateway.policy import profile_for
from gateway.web.responses import NO_STORE, gateway_error_response, services

if TYPE_CHECKING:
    from gateway.app import AppRuntime
    from gateway.store.base import Store


# How long the portal API remembers e-mail -> LMS user id (each lookup is an LMS search).
PORTAL_USER_CACHE_SECONDS = 3600


def _resolver(runtime: AppRuntime, store: Store) -> Callable[[str], Awaitable[str]]:
    """The employee's LMS user id by e-mail, cached in the store: a portal drawing its page
    then spends its LMS calls on lessons, not on finding the same employee again."""
    find: Callable[[str], Awaitable[str]] | None = getattr(runtime.connector, "find_user_id", None)
    if find is None:
        raise NotFound(f"app {runtime.name} has no embeddable lessons")
    lookup = find
    ttl = min(PORTAL_USER_CACHE_SECONDS, runtime.settings.account_cache_seconds)

    async def resolve(email: str) -> str:
        digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
        key = f"portal-user:{runtime.name}:{digest}"
        cached = await store.get(key) if ttl else None
        if cached is not None:
            return cached.decode()
        user_id = await lookup(email)
        if ttl:
            await store.set(key, user_id.encode(), ttl)
        return user_id

    return resolve


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
    cors = embed.cors_headers(svc.settings.portal, request.headers.get("origin"), app_name)
    try:
        embed.authenticate_portal(
            request.headers.get("authorization"), svc.settings.portal, app_name
        )
        body = await work(svc.app(app_name))
        return JSONResponse(body, headers={**NO_STORE, **cors})
    except GatewayError as exc:
        response = gateway_error_response(request, exc)
        response.headers.update(cors)
        return response


async def api_lesson_schedules(request: Request) -> Response:
    """``GET /api/v1/apps/{app}/lesson-schedules?employee=<email>&status=due``."""
    params = request.query_params

    async def work(runtime: AppRuntime) -> object:
        return await embed.portal_lesson_schedules(
            runtime.connector,
            runtime.name,
            _resolver(runtime, services(request).store),
            params.get("employee"),
            params.get("status"),
        )

    return await _api(request, work)


async def api_embed(request: Request) -> Response:
    """``GET /api/v1/apps/{app}/lesson-schedules/{id}/embed?employee=<email>``."""

    async def work(runtime: AppRuntime) -> object:
        return await embed.portal_embed(
            runtime.connector,
            runtime.name,
            _resolver(runtime, services(request).store),
            request.query_params.get("employee"),
            request.path_params["id"],
        )

    return await _api(request, work)


async def api_preflight(request: Request) -> Response:
    """CORS preflight: allowed only for origins of portals scoped to the app."""
    svc = services(request)
    headers = embed.cors_headers(
        svc.settings.portal,
        request.headers.get("origin"),
        request.path_params["app"],
        preflight=True,
    )
    return Response(status_code=204, headers={**NO_STORE, **headers})


def routes() -> list[BaseRoute]:
    return [
        Route("/embed/{app}/lesson-schedules/{id}", embed_page, methods=["GET"]),
        Route("/api/v1/apps/{app}/lesson-schedules", api_lesson_schedules, methods=["GET"]),
        Route("/api/v1/apps/{app}/lesson-schedules", api_preflight, methods=["OPTIONS"]),
        Route("/api/v1/apps/{app}/lesson-schedules/{id}/embed", api_embed, methods=["GET"]),
        Route("/api/v1/apps/{app}/lesson-schedules/{id}/embed", api_preflight, methods=["OPTIONS"]),
    ]
