"""Routes for embedded lesson players (thin Starlette glue over :mod:`gateway.embed`).

* ``GET /embed/{app}/lesson-schedules/{id}``: the portal's iframe, with the gateway session
  or the frame's embed grant. This is THE browser path: the employee's own sign-in decides
  whose lessons are shown. Its LMS calls are reserved from that employee's share of the
  app's budget (a share for lesson frames, the size of the sign-in share): reloading past
  it answers 429 "just a moment" instead of spending colleagues' calls.
* ``GET /api/v1/apps/{app}/lesson-schedules?employee=&status=`` and
  ``GET /api/v1/apps/{app}/lesson-schedules/{id}/embed?employee=``: portal back-ends with a
  bearer credential, server to server. No CORS headers and no successful ``OPTIONS``
  preflight unless a portal opts in with ``browser_cors = true`` (then for its configured
  origins only).

Without a session the frame shows a sign-in page whose script signs in through a popup and
comes back into the frame (:mod:`gateway.web.embed_sign_in`, design in
:mod:`gateway.embed_grants`); the frame's embed grant then stands in for the session here.

Errors inside the iframe are rendered with the embed page's ``frame-ancestors`` so the portal
shows the explanation instead of a blocked frame. A repeated ``employee`` or ``status`` is a
400 before any LMS call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import embed
from gateway.call_context import CallContext, lms_calls
from gateway.errors import (
    BudgetExhausted,
    EmployeeBusy,
    Forbidden,
    GatewayError,
    NotFound,
    StoreUnavailable,
)
from gateway.policy import profile_for
from gateway.web import branding, embed_sign_in
from gateway.web.responses import NO_STORE, gateway_error_response, services, single_param

if TYPE_CHECKING:
    from gateway.identity import Identity
    from gateway.services import AppRuntime, Services
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
    """The iframe: check the session (or the frame's embed grant) and ownership, then 303 to
    the LMS player."""
    svc = services(request)
    app_name = request.path_params["app"]
    try:
        runtime = svc.app(app_name)
        embed.embed_capable(runtime.connector, app_name)
        headers = {**embed.embed_headers(svc.settings.portal, app_name)}
        session = await svc.sessions.load(request)
        identity = session.identity if session is not None else None
        if identity is None or identity.idp not in runtime.settings.idps:
            # A cross-site frame never gets the (SameSite=Lax) session: its own grant, if any.
            identity = await embed_sign_in.grant_identity(request, svc, runtime)
        if identity is None:
            return _sign_in_page(request, svc, runtime)
        profile = profile_for(runtime.name, runtime.settings, identity)  # access rules apply
        account = await runtime.provisioner.cached_account(identity)
        if account is None:
            # Not cached (first visit, or the cache expired): provision as a sign-in would.
            # The link minted on the way is dropped unused; it never leaves this process.
            account = (await runtime.provisioner.sign_in(identity, profile, None)).account
        url = await _employees_embed(svc, runtime, identity, account.user_id,
                                     request.path_params["id"])
        return RedirectResponse(url, status_code=303, headers=headers)
    except GatewayError as exc:
        response = gateway_error_response(request, exc)
        response.headers.update(embed.embed_headers(svc.settings.portal, app_name))
        return response


def frames_share_key(identity: Identity) -> str:
    """Whom the budget charges an employee's lesson frames to: the hash the Provisioner keys
    its account cache and its sign-ins' share by (never an e-mail address or a raw subject),
    marked as the frames' own share of the same size. Separate, so signing in and then
    opening a lesson or two within a minute never meets the "just a moment" page, while one
    employee still spends at most two small shares a minute."""
    return identity.key_digest + ":frames"


async def _employees_embed(
    svc: Services, runtime: AppRuntime, identity: Identity, user_id: str, schedule_id: str
) -> str:
    """Mint the player URL as this employee's calls: all of them are reserved up front and
    charged to their frames' share (EmployeeBusy past it), as a sign-in's are to theirs, so
    one employee reloading the frame (or a script holding their frame's grant) cannot spend
    the app's LMS budget. The sign-in deadline bounds the wait."""
    budget = runtime.budget
    ctx = CallContext(
        deadline=budget.clock() + runtime.settings.budget.sign_in_deadline_seconds,
        employee=frames_share_key(identity),
    )
    with lms_calls(ctx):
        try:
            try:
                # Only the first call of a context is charged to the share (later ones are
                # "continuing"): reserving them all at once charges every one.
                await budget.reserve(ctx, embed.EMBED_CALLS)
            except BudgetExhausted as exc:
                counter = (svc.metrics.employee_busy if isinstance(exc, EmployeeBusy)
                           else svc.metrics.budget_exhausted)
                counter.labels(runtime.name).inc()
                raise
            return await embed.session_embed(runtime.connector, runtime.name, user_id,
                                             schedule_id)
        finally:
            if ctx.prepaid:  # a queue ticket may hand over more calls than the one spent
                try:
                    await budget.release(ctx)
                except StoreUnavailable:
                    pass  # unspent tokens then mature unused: errs on the LMS's side


def _sign_in_page(request: Request, svc: Services, runtime: AppRuntime) -> Response:
    """IdPs refuse to be framed: a page whose script signs in through a popup and brings the
    lesson back into this frame. Without script (or outside a frame) its links sign in at
    the top level of a new tab and come back to this lesson there."""
    path = request.url.path
    idps = runtime.settings.idps
    links = [
        (
            str(getattr(svc.settings.idp[idp], "display_name", None) or idp)
            if len(idps) > 1
            else None,
            f"/auth/{quote(idp, safe='')}/login?" + urlencode({"return_to": path}),
        )
        for idp in idps
    ]
    headers = embed.embed_headers(
        svc.settings.portal,
        runtime.name,
        scripts=True,
        img_sources=branding.img_sources(svc.settings.branding),
    )
    # same-origin (not no-referrer): the script's POSTs then carry our real Origin.
    headers["Referrer-Policy"] = "same-origin"
    response = svc.pages.render(
        request,
        "embed_sign_in.html",
        status=401,
        headers=headers,
        app_label=runtime.settings.display_name or runtime.name,
        links=links,
        lesson_url=path,
        timeout=svc.settings.gateway.login_timeout_seconds,
        after_sign_in="after_sign_in" in request.query_params,
        **embed_sign_in.paths(runtime.name),
    )
    if request.cookies.get(embed_sign_in.grant_cookie(svc)):
        embed_sign_in.clear_grant(response, svc)
    return response


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
        *embed_sign_in.routes(),
        Route("/api/v1/apps/{app}/lesson-schedules", api_lesson_schedules, methods=["GET"]),
        Route("/api/v1/apps/{app}/lesson-schedules", api_preflight, methods=["OPTIONS"]),
        Route("/api/v1/apps/{app}/lesson-schedules/{id}/embed", api_embed, methods=["GET"]),
        Route("/api/v1/apps/{app}/lesson-schedules/{id}/embed", api_preflight, methods=["OPTIONS"]),
    ]
