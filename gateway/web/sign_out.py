"""Signing out: ``GET /logout`` (the confirmation page), ``POST /logout`` (same-origin,
with the session's CSRF token) and ``GET /signed-out``.

Ends the session everywhere (the store forgets it), drops the employee's reusable links on
every app and, where the IdP is configured for it, continues to its end-session endpoint.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.auth.oidc import OidcFrontDoor
from gateway.errors import SignOutRefused
from gateway.web.responses import NO_STORE, same_origin_post, services, small_form


async def logout_page(request: Request) -> Response:
    svc = services(request)
    session = await svc.sessions.load(request)
    if session is None:
        return svc.pages.render(request, "signed_out.html")
    # same-origin (not no-referrer) so the browser sends our real Origin with the POST.
    return svc.pages.render(
        request,
        "logout.html",
        headers={"Referrer-Policy": "same-origin"},
        csrf=svc.sessions.csrf_token(session),
        identity=session.identity,
    )


async def logout(request: Request) -> Response:
    """``POST /logout``: same-origin only, with the session's CSRF token."""
    svc = services(request)
    if not same_origin_post(request, svc):
        raise SignOutRefused("cross-site logout refused")
    session = await svc.sessions.load(request)
    form = await small_form(request, 4096)
    if session is not None and not svc.sessions.csrf_ok(session, form.get("csrf")):
        raise SignOutRefused("logout without a valid CSRF token")
    end_url = None
    if session is not None:
        door = svc.front_doors.get(session.identity.idp)
        idp_settings = svc.settings.idp.get(session.identity.idp)
        if isinstance(door, OidcFrontDoor) and getattr(idp_settings, "end_session", False):
            end_url = door.end_session_url(
                f"{svc.settings.gateway.public_url.rstrip('/')}/signed-out"
            )
    response: Response = (
        RedirectResponse(end_url, status_code=303, headers=NO_STORE)
        if end_url
        else RedirectResponse("/signed-out", status_code=303, headers=NO_STORE)
    )
    if session is not None and svc.links is not None:
        # Signing out ends reuse of the employee's links on every app (all their browsers).
        await svc.links.forget(session.identity, svc.apps)
    await svc.sessions.end(response, session)
    return response


async def signed_out(request: Request) -> Response:
    return services(request).pages.render(request, "signed_out.html")



def routes() -> list[BaseRoute]:
    return [
        Route("/logout", logout_page, methods=["GET"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/signed-out", signed_out),
    ]
