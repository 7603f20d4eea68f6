"""The "Continue to <app> as <e-mail>?" step for IdP-initiated SAML sign-ins.

The ACS holds the verified sign-in (:mod:`gateway.auth.confirm`) and answers a 303 to
``GET /auth/{idp}/confirm``, setting the login-binding cookie for the held sign-in. The
redirect matters: the ACS request is a cross-site POST, which carries no ``SameSite=Lax``
cookie, while the top-level GET after it carries the session cookie, so the page can say
whom this browser is signed in as now. ``POST /auth/{idp}/confirm`` (in ``handlers.py``)
finishes or cancels it.

The page keeps the default CSP. ``form-action 'self'`` is deliberately not added: browsers
apply form-action to the redirects that follow a submission, and "Continue" ends in a 303 to
the LMS's sign-in link on another origin. Framing is refused (``frame-ancestors 'none'``), so
the buttons cannot be clickjacked.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.auth.base import LoginRequest
from gateway.auth.saml import SamlFrontDoor
from gateway.errors import NotFound
from gateway.identity import Identity
from gateway.web.responses import NO_STORE, services


def saml_door(request: Request) -> SamlFrontDoor:
    """The SAML front door named by the ``{idp}`` path parameter (404 for anything else)."""
    door = services(request).front_door(request.path_params["idp"])
    if not isinstance(door, SamlFrontDoor):
        raise NotFound("not a SAML IdP")
    return door


def confirm_path(door: SamlFrontDoor) -> str:
    return f"/auth/{quote(door.name, safe='')}/confirm"


def who(identity: Identity) -> str:
    """How the page names a person: what they would recognise as their account."""
    return identity.email or identity.display_name or identity.subject


async def hold(
    request: Request, door: SamlFrontDoor, identity: Identity, login: LoginRequest
) -> Response:
    """Hold a validated unsolicited sign-in and send this browser to the confirmation page."""
    svc = services(request)
    browser_token = await door.confirmations.hold(identity, login)
    response = RedirectResponse(confirm_path(door), status_code=303, headers=NO_STORE)
    # Lax is enough: every later request of this step is a same-site GET or POST.
    svc.sessions.set_login_binding(response, browser_token, cross_site_post=False)
    return response


async def confirm_page(request: Request) -> Response:
    """``GET /auth/{idp}/confirm``: ask the person at this browser to confirm the sign-in."""
    svc = services(request)
    door = saml_door(request)
    held = await door.confirmations.peek(svc.sessions.login_binding(request))
    if held.login.app is not None:
        runtime = svc.app(held.login.app)
        destination: str | None = runtime.settings.display_name or runtime.name
    else:
        destination = None  # the page says "the page you were sent to", translated
    session = await svc.sessions.load(request)
    current = None
    if session is not None and session.identity.key != held.identity.key:
        current = who(session.identity)
    return svc.pages.render(
        request,
        "confirm_sign_in.html",
        headers=dict(NO_STORE),
        action=confirm_path(door),
        csrf=held.csrf,
        destination=destination,
        person=who(held.identity),
        current=current,
        minutes=max(1, int(door.confirmations.ttl // 60)),
    )
