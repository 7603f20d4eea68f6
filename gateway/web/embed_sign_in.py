"""Routes for signing in from a portal's iframe (the design: :mod:`gateway.embed_grants`).

* ``POST /embed/{app}/sign-in/start`` — the frame's script (JSON): a handle in the body, the
  frame's binding in a partitioned cookie.
* ``POST /embed/{app}/sign-in/popup`` — the frame's form, into a popup: remember the handle
  in a first-party cookie, then the IdP (or straight on, with a valid gateway session).
* ``GET /embed/{app}/sign-in/done`` — the popup lands here after signing in.
* ``POST /embed/{app}/sign-in/finish`` — the frame's script polls (JSON): 202 while pending,
  then 200 and the embed grant cookie, once.

The frame's cookies are set by hand: ``Partitioned`` needs Python 3.14's ``http.cookies``.
They are ``Secure`` always (browsers treat ``http://localhost`` and ``127.0.0.1`` as secure
for this), ``SameSite=None`` (they must reach a cross-site frame) and ``Partitioned`` (they live
in that portal's jar only, where browsers block third-party cookies otherwise). Only embed
routes read them.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import embed, jsonsafe
from gateway.embed_grants import CookieBlocked, EmbedSignIns
from gateway.errors import BadRequest, Forbidden, GatewayError, LoginStateError
from gateway.identity import Identity
from gateway.observability import log_event
from gateway.policy import profile_for
from gateway.web import branding
from gateway.web.responses import NO_STORE, services, small_form

if TYPE_CHECKING:
    from gateway.services import AppRuntime, Services

log = logging.getLogger("gateway.web.embed")

_HANDLE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
_MAX_JSON = 2048


def sign_ins(svc: Services) -> EmbedSignIns:
    gw = svc.settings.gateway
    return EmbedSignIns(
        svc.store,
        login_timeout=gw.login_timeout_seconds,
        grant_lifetime=gw.session_lifetime_seconds,
    )


def _names(svc: Services) -> tuple[str, str, str]:
    """(grant cookie, binding cookie, popup cookie), ``__Host-`` prefixed when secure."""
    prefix = "__Host-" if svc.sessions.secure else ""
    return f"{prefix}gw_embed", f"{prefix}gw_embed_bind", f"{prefix}gw_embed_popup"


def _cookie(response: Response, name: str, value: str, max_age: int, *, frame: bool,
            secure: bool = True) -> None:
    parts = [f"{name}={value}", f"Max-Age={max_age}", "Path=/", "HttpOnly"]
    if frame:
        parts += ["Secure", "SameSite=None", "Partitioned"]
    else:
        parts += [*(["Secure"] if secure else []), "SameSite=Lax"]
    response.raw_headers.append((b"set-cookie", "; ".join(parts).encode("latin-1")))


def paths(app: str) -> dict[str, str]:
    """The sign-in URLs of ``app``'s frames (the sign-in page hands them to its script)."""
    base = f"/embed/{quote(app, safe='')}/sign-in"
    return {
        "start_url": f"{base}/start",
        "popup_url": f"{base}/popup",
        "done_url": f"{base}/done",
        "finish_url": f"{base}/finish",
    }


def _same_origin(request: Request, svc: Services) -> bool:
    """A request from one of the gateway's own pages. Fetch Metadata decides where sent;
    otherwise a real ``Origin`` of ours is required (``null`` proves nothing)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin", "")
    return origin.lower() == svc.settings.gateway.public_url.rstrip("/").lower()


async def _json(request: Request, svc: Services) -> dict[str, str]:
    """The frame script's small JSON body. JSON (not a form) so no other site can send it
    without a CORS preflight, which the gateway never grants here."""
    if not _same_origin(request, svc):
        raise BadRequest("embed sign-in: cross-site request refused")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadRequest("embed sign-in: expected application/json")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > _MAX_JSON:
            raise BadRequest("embed sign-in: body too large")
    try:
        data = jsonsafe.loads(body, max_depth=jsonsafe.BODY_DEPTH)
    except ValueError:  # JsonRejected, deep nesting included: a 400, never a 500
        raise BadRequest("embed sign-in: body is not JSON") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise BadRequest("embed sign-in: body must be an object of strings")
    return data


def _refused(request: Request, exc: GatewayError) -> JSONResponse:
    reference = getattr(request.state, "request_id", "-")
    # A browser that refuses the frame's cookie is expected (INFO); forged or cross-site
    # requests are worth a look (WARNING).
    blocked = isinstance(exc, CookieBlocked)
    level = logging.WARNING if exc.status in (400, 403) and not blocked else logging.INFO
    log_event(log, level, "embed sign-in refused", code=exc.code, reason=exc.reason,
              status=exc.status, reference=reference, path=request.url.path)
    body = {"error": exc.code, "message": exc.public, "reference": reference}
    return JSONResponse(body, status_code=exc.status, headers=dict(NO_STORE))


def _runtime(svc: Services, app: str) -> AppRuntime:
    runtime = svc.app(app)
    embed.embed_capable(runtime.connector, app)
    return runtime


async def start(request: Request) -> Response:
    """``POST /embed/{app}/sign-in/start`` ``{"portal": origin}`` from the frame's script."""
    svc = services(request)
    app = request.path_params["app"]
    try:
        _runtime(svc, app)
        body = await _json(request, svc)
        portal = embed.portal_of(svc.settings.portal, app, body.get("portal"))
        if portal is None:
            raise Forbidden(
                "embed sign-in: the frame's portal origin is not configured for this app",
                public="This page is not set up to show these lessons.",
            )
        # Abuse limit: anyone can start one and each is stored until the login timeout.
        await svc.pending_logins.admit(request.client.host if request.client else None)
        started = await sign_ins(svc).start(app, portal)
    except GatewayError as exc:
        return _refused(request, exc)
    response = JSONResponse({"handle": started.handle}, headers=dict(NO_STORE))
    _cookie(response, _names(svc)[1], started.binding,
            svc.settings.gateway.login_timeout_seconds, frame=True)
    return response


async def popup(request: Request) -> Response:
    """``POST /embed/{app}/sign-in/popup`` (form, ``handle``), in the popup window."""
    svc = services(request)
    app = request.path_params["app"]
    runtime = _runtime(svc, app)
    # Only the frame's own page may send a handle here: otherwise another site could make a
    # victim's popup sign in for a handle the attacker's frame holds (login CSRF).
    if not _same_origin(request, svc):
        raise BadRequest("embed sign-in: cross-site popup start refused")
    handle = (await small_form(request, 1024)).get("handle", "")
    if not _HANDLE.match(handle) or not await sign_ins(svc).is_pending(handle, app):
        raise LoginStateError("embed sign-in: unknown or expired handle in the popup")
    done = paths(app)["done_url"]
    session = await svc.sessions.load(request)
    idps = runtime.settings.idps
    response: Response
    if session is not None and session.identity.idp in idps:
        response = RedirectResponse(done, status_code=303, headers=dict(NO_STORE))
    elif len(idps) == 1:
        href = f"/auth/{quote(idps[0], safe='')}/login?" + urlencode({"return_to": done})
        response = RedirectResponse(href, status_code=303, headers=dict(NO_STORE))
    else:
        choices = [
            (str(getattr(svc.settings.idp[i], "display_name", None) or i),
             f"/auth/{quote(i, safe='')}/login?" + urlencode({"return_to": done}))
            for i in idps
        ]
        response = svc.pages.render(
            request, "embed_choose_idp.html", headers=dict(NO_STORE),
            app_label=runtime.settings.display_name or runtime.name, idps=choices,
        )
    _cookie(response, _names(svc)[2], handle, svc.settings.gateway.login_timeout_seconds,
            frame=False, secure=svc.sessions.secure)
    return response


async def done(request: Request) -> Response:
    """``GET /embed/{app}/sign-in/done``: the popup signed in; hand over to the frame."""
    svc = services(request)
    app = request.path_params["app"]
    runtime = _runtime(svc, app)
    popup_cookie = _names(svc)[2]
    handle = request.cookies.get(popup_cookie, "")
    session = await svc.sessions.load(request)
    if not _HANDLE.match(handle):
        raise LoginStateError("embed sign-in: the popup has no handle (expired or not started)")
    if session is None or session.identity.idp not in runtime.settings.idps:
        raise LoginStateError("embed sign-in: no valid session in the popup")
    # The app's access rules, here where the popup can still say why (no LMS call).
    profile_for(runtime.name, runtime.settings, session.identity)
    await sign_ins(svc).complete(handle, app, session.sid, session.identity)
    images = " ".join(("'self'", "data:", *branding.img_sources(svc.settings.branding)))
    csp = (f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {images}; "
           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    response = svc.pages.render(
        request, "embed_signed_in.html", headers={**NO_STORE, "Content-Security-Policy": csp},
    )
    _cookie(response, popup_cookie, "", 0, frame=False, secure=svc.sessions.secure)
    return response


async def finish(request: Request) -> Response:
    """``POST /embed/{app}/sign-in/finish`` ``{"handle": ...}`` from the frame's script."""
    svc = services(request)
    app = request.path_params["app"]
    grant_cookie, bind_cookie, _ = _names(svc)
    flow = sign_ins(svc)
    try:
        _runtime(svc, app)
        handle = (await _json(request, svc)).get("handle", "")
        if not _HANDLE.match(handle):
            raise BadRequest("embed sign-in: malformed handle")
        ticket = await flow.redeem(handle, request.cookies.get(bind_cookie), app)
        if ticket is None:
            return JSONResponse({"status": "pending"}, status_code=202, headers=dict(NO_STORE))
        apps = embed.portal_apps(svc.settings.portal, str(ticket["portal"]))
        if app not in apps:
            raise Forbidden("embed sign-in: the portal is no longer configured for this app",
                            public="This page is not set up to show these lessons.")
        grant_id = await flow.issue_grant(ticket, apps)
    except GatewayError as exc:
        return _refused(request, exc)
    await svc.pending_logins.release(request.client.host if request.client else None)
    log_event(log, logging.INFO, "embed grant issued", app=app, portal=ticket["portal"],
              idp=ticket["identity"].get("idp"))
    response = JSONResponse({"status": "signed_in"}, headers=dict(NO_STORE))
    _cookie(response, grant_cookie, grant_id, flow.grant_lifetime, frame=True)
    _cookie(response, bind_cookie, "", 0, frame=True)
    return response


async def grant_identity(request: Request, svc: Services, runtime: AppRuntime) -> Identity | None:
    """The identity of the frame's embed grant for ``runtime``'s lessons, or None: no grant,
    expired, another portal's apps, an IdP the app does not take, or its session ended."""
    grant = await sign_ins(svc).grant(request.cookies.get(_names(svc)[0]))
    if grant is None or runtime.name not in grant.apps:
        return None
    if grant.identity.idp not in runtime.settings.idps:
        return None
    if not await svc.sessions.is_live(grant.sid):
        return None
    return grant.identity


def grant_cookie(svc: Services) -> str:
    """The name of the frame's grant cookie."""
    return _names(svc)[0]


def clear_grant(response: Response, svc: Services) -> None:
    """Drop a frame's grant cookie that no longer opens anything."""
    _cookie(response, _names(svc)[0], "", 0, frame=True)


def routes() -> list[BaseRoute]:
    return [
        Route("/embed/{app}/sign-in/start", start, methods=["POST"]),
        Route("/embed/{app}/sign-in/popup", popup, methods=["POST"]),
        Route("/embed/{app}/sign-in/done", done, methods=["GET"]),
        Route("/embed/{app}/sign-in/finish", finish, methods=["POST"]),
    ]
