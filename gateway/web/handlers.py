"""HTTP handlers: the gateway's stable URLs (documented in the README).

Every handler reads its parts from ``request.app.state.services`` (built in ``app.py``);
every failure is raised as a :mod:`gateway.errors` exception and turned into a page (or JSON
for ``/api``) by :func:`gateway_error`, with the request id as the support reference.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.auth.authority import vouch
from gateway.auth.base import LoginRequest
from gateway.auth.oidc import OidcFrontDoor
from gateway.auth.saml import SamlFrontDoor
from gateway.errors import (
    AccessDenied,
    AccountInactive,
    AmbiguousAccount,
    BadRequest,
    BudgetExhausted,
    GatewayError,
    LoginStateError,
    NotFound,
    PrivilegedAccount,
    ReplayDetected,
    StoreUnavailable,
    TooManyPendingLogins,
    UnsafeTarget,
)
from gateway.identity import Identity
from gateway.observability import audit, log_event
from gateway.policy import profile_for
from gateway.settings import SamlIdpSettings
from gateway.targets import check_return_to, check_target, safe_return_to
from gateway.web import confirm, sign_out
from gateway.web.responses import (
    NO_STORE,
    gateway_error_response,
    reject_repeated,
    same_origin_post,
    services,
    small_form,
)

if TYPE_CHECKING:
    from gateway.services import AppRuntime, Services

log = logging.getLogger("gateway.web")

# The LMS account may not be used: a link kept for reuse goes too.
_ACCOUNT_REFUSED = (AccessDenied, AccountInactive, AmbiguousAccount, PrivilegedAccount)

# -- sign-in ---------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    """``GET /login/{app}``: reuse the session or start one, then launch the app."""
    svc = services(request)
    runtime = svc.app(request.path_params["app"])
    reject_repeated(request, "target", "idp")
    target = check_target(request.query_params.get("target"))
    session = await svc.sessions.load(request)
    if session is not None and session.identity.idp in runtime.settings.idps:
        return await launch(request, runtime, session.identity, target)
    idp = request.query_params.get("idp")
    if idp is None and len(runtime.settings.idps) > 1:
        return svc.pages.render(
            request,
            "choose_idp.html",
            app=runtime,
            target=target,
            idps=[(name, _idp_label(svc, name)) for name in runtime.settings.idps],
        )
    idp = idp or runtime.settings.idps[0]
    if idp not in runtime.settings.idps:
        raise NotFound(f"IdP {idp[:64]!r} is not offered for app {runtime.name}")
    return await start_login(request, idp, LoginRequest(app=runtime.name, target=target))


async def auth_login(request: Request) -> Response:
    """``GET /auth/{idp}/login``: start a sign-in at one IdP (``app``/``target``/``return_to``)."""
    svc = services(request)
    idp = request.path_params["idp"]
    svc.front_door(idp)
    reject_repeated(request, "app", "target", "return_to")
    params = request.query_params
    app_name = params.get("app")
    if app_name is not None:
        runtime = svc.app(app_name)
        if idp not in runtime.settings.idps:
            raise NotFound(f"IdP {idp[:64]!r} is not offered for app {runtime.name}")
    return_to = None
    if params.get("return_to"):
        return_to = safe_return_to(
            params["return_to"],
            own_host=svc.own_host,
            allowed_hosts=svc.settings.gateway.allowed_return_hosts,
            dev_mode=svc.settings.gateway.dev_mode,
        )
    request_ = LoginRequest(
        app=app_name, target=check_target(params.get("target")), return_to=return_to
    )
    return await start_login(request, idp, request_)


async def start_login(request: Request, idp: str, login_request: LoginRequest) -> Response:
    svc = services(request)
    door = svc.front_door(idp)
    # Abuse limit (gateway/limits.py): anyone can start a sign-in, and each stores state until
    # login_timeout; past the caps nothing is stored and the browser is asked to come back.
    client = request.client.host if request.client else None
    try:
        await svc.pending_logins.admit(client)
    except TooManyPendingLogins as exc:
        return gateway_error_response(request, exc)
    try:
        redirect = await door.begin(login_request)
    except Exception:
        await svc.pending_logins.release(client)
        raise
    response = RedirectResponse(redirect.url, status_code=303, headers=NO_STORE)
    svc.sessions.set_login_binding(
        response, redirect.browser_token, cross_site_post=door.kind == "saml"
    )
    return response


async def oidc_callback(request: Request) -> Response:
    """``GET /auth/{idp}/callback``: the OIDC authorization response."""
    svc = services(request)
    door = svc.front_door(request.path_params["idp"])
    if not isinstance(door, OidcFrontDoor):
        raise NotFound("not an OpenID Connect IdP")
    # One value each: dict() would silently keep the last of a repeated code or state.
    reject_repeated(request, "code", "state", "iss", "error", "error_description")
    try:
        identity, login_request = await door.complete(
            dict(request.query_params), svc.sessions.login_binding(request)
        )
    except GatewayError as exc:
        svc.metrics.sign_ins.labels(door.name, "-", "auth_failed").inc()
        return await _continue_session(request, exc)
    return await finish_login(request, identity, login_request)


async def saml_acs(request: Request) -> Response:
    """``POST /auth/{idp}/acs``: the SAML HTTP-POST binding."""
    svc = services(request)
    door = svc.front_door(request.path_params["idp"])
    if not isinstance(door, SamlFrontDoor):
        raise NotFound("not a SAML IdP")
    idp_settings = svc.settings.idp[door.name]
    assert isinstance(idp_settings, SamlIdpSettings)
    form = await small_form(request, idp_settings.max_response_bytes + 8192)
    saml_response = form.get("SAMLResponse")
    if not saml_response:
        raise BadRequest("ACS POST without SAMLResponse")

    unsolicited: list[LoginRequest] = []

    def resolve_unsolicited(relay_state: str | None) -> LoginRequest:
        resolved = _unsolicited_request(svc, idp_settings.default_app, relay_state)
        unsolicited.append(resolved)
        return resolved

    try:
        identity, login_request = await door.complete(
            saml_response,
            form.get("RelayState"),
            svc.sessions.login_binding(request),
            resolve_unsolicited,
        )
    except GatewayError as exc:
        svc.metrics.sign_ins.labels(door.name, "-", "auth_failed").inc()
        return await _continue_session(request, exc)
    if unsolicited:
        # IdP-initiated: nobody at this browser asked for it, so it never starts or replaces
        # a session without the person's "Continue" (login CSRF; see gateway/web/confirm.py).
        # Refuse an identity the IdP may not vouch for before showing it on a page.
        vouch(identity, svc.settings.idp[identity.idp])
        return await confirm.hold(request, door, identity, login_request)
    return await finish_login(request, identity, login_request)


async def saml_confirm(request: Request) -> Response:
    """``POST /auth/{idp}/confirm``: Continue or Cancel a held IdP-initiated sign-in."""
    svc = services(request)
    door = confirm.saml_door(request)
    if not same_origin_post(request, svc):
        raise BadRequest("cross-site sign-in confirmation refused")
    form = await small_form(request, 4096)
    browser_token = svc.sessions.login_binding(request)
    action = form.get("action")
    if action == "cancel":
        await door.confirmations.discard(browser_token)
        response = svc.pages.render(request, "sign_in_cancelled.html", headers=dict(NO_STORE))
        svc.sessions.clear_login_binding(response)
        return response
    if action != "continue":
        raise BadRequest("sign-in confirmation without a Continue or Cancel choice")
    held = await door.confirmations.take(browser_token, form.get("csrf"))
    return await finish_login(request, held.identity, held.login)


async def saml_metadata(request: Request) -> Response:
    door = services(request).front_door(request.path_params["idp"])
    if not isinstance(door, SamlFrontDoor):
        raise NotFound("not a SAML IdP")
    return Response(door.sp_metadata(), media_type="application/samlmetadata+xml")


def _unsolicited_request(
    svc: Services, default_app: str | None, relay_state: str | None
) -> LoginRequest:
    """An IdP-initiated response: RelayState may name an app or a safe gateway path."""
    if relay_state:
        if relay_state in svc.apps:
            return LoginRequest(app=relay_state)
        try:
            path = check_return_to(
                relay_state,
                own_host=svc.own_host,
                allowed_hosts=svc.settings.gateway.allowed_return_hosts,
                dev_mode=svc.settings.gateway.dev_mode,
            )
            return LoginRequest(return_to=path)
        except UnsafeTarget:
            if default_app is None:
                raise
    if default_app is None:
        raise UnsafeTarget("unsolicited response names no app and the IdP has no default_app")
    return LoginRequest(app=default_app)


async def _continue_session(request: Request, exc: GatewayError) -> Response:
    """The IdP's answer is spent or not this browser's (Back or Reload after landing, the
    IdP's page submitted again): when this browser holds a valid session, carry on with it
    at the app of the sign-in that issued it, which reuses the session; otherwise ``exc``.

    Nothing of the refused answer is used: the session was issued by an earlier, completed
    sign-in in this browser, and ``/login/{app}`` applies the app's rules to it again."""
    svc = services(request)
    if not isinstance(exc, LoginStateError | ReplayDetected):
        raise exc
    session = await svc.sessions.load(request)
    if session is None:
        raise exc
    runtime = svc.apps.get(session.app or "")
    if runtime is None or session.identity.idp not in runtime.settings.idps:
        target = "/"
    else:
        target = f"/login/{quote(runtime.name, safe='')}"
    log_event(
        log,
        logging.INFO,
        "spent sign-in answer in a browser with a valid session: continuing with the session",
        code=exc.code,
        app=runtime.name if runtime else None,
    )
    return RedirectResponse(target, status_code=303, headers=NO_STORE)


async def finish_login(
    request: Request, identity: Identity, login_request: LoginRequest
) -> Response:
    """The IdP vouched for ``identity``: start a fresh session and continue."""
    svc = services(request)
    try:
        # Trust model: an IdP speaks only for its own e-mail domains. Checked here, once for
        # both protocols, before any LMS call and before a session exists.
        vouch(identity, svc.settings.idp[identity.idp])
    except GatewayError as exc:
        svc.metrics.sign_ins.labels(identity.idp, "-", exc.code).inc()
        return gateway_error_response(request, exc, app=login_request.app)
    # The IdP's answer used up this browser's pending login: give its slot back, so people
    # who finish their sign-ins are never held back by the per-client limit.
    await svc.pending_logins.release(request.client.host if request.client else None)
    if login_request.app is not None:
        runtime = svc.app(login_request.app)
        try:
            response = await launch(request, runtime, identity, login_request.target)
        except GatewayError as exc:
            # The IdP's answer is single use: the queue page must carry on at /login/{app}
            # (the session issued below skips the IdP there), never reload this callback/ACS.
            resume = None
            if isinstance(exc, BudgetExhausted):
                resume = f"/login/{quote(runtime.name, safe='')}"
                if login_request.target:
                    resume += "?" + urlencode({"target": login_request.target})
            response = gateway_error_response(request, exc, resume=resume, app=runtime.name)
    else:
        response = RedirectResponse(
            login_request.return_to or "/", status_code=303, headers=NO_STORE
        )
    # A new sign-in in this browser replaces its session: the previous one (perhaps another
    # person's) ends in the store too, not only in this browser's cookie jar.
    previous = await svc.sessions.load(request)
    if previous is not None:
        await svc.sessions.forget(previous)
        if svc.links is not None and previous.identity.key != identity.key:
            await svc.links.forget(previous.identity, svc.apps)
    await svc.sessions.issue(response, identity, app=login_request.app)
    svc.sessions.clear_login_binding(response)
    return response


async def launch(
    request: Request, runtime: AppRuntime, identity: Identity, target: str | None
) -> Response:
    """Apply the app's rules, provision, mint the sign-in link and send the browser there."""
    svc = services(request)
    reference = request.state.request_id
    outcome, action = "error", "none"
    links, target = svc.links, target or runtime.settings.default_target
    try:
        profile = profile_for(runtime.name, runtime.settings, identity)
        # Every check before provisioning has passed: a link the LMS made reusable and we
        # minted moments ago (or, opted in, until it expires) costs no LMS call.
        url = None if links is None else await links.lookup(
            runtime.name, runtime.settings, runtime.provisioner, identity, profile, target)
        if url is not None:
            outcome, action = "success", "reused"
            svc.metrics.links_reused.labels(runtime.name).inc()
        else:
            sign_in = await runtime.provisioner.sign_in(identity, profile, target)
            outcome, action, url = "success", str(sign_in.action), sign_in.url
            if links is not None:
                await links.remember(runtime.name, runtime.settings, identity, target, sign_in)
    except GatewayError as exc:
        outcome = exc.code
        if links is not None and isinstance(exc, _ACCOUNT_REFUSED):
            with contextlib.suppress(StoreUnavailable):  # the refusal is what to show
                await links.forget(identity, [runtime.name])
        raise
    finally:
        svc.metrics.sign_ins.labels(identity.idp, runtime.name, outcome).inc()
        audit(
            subject=identity.subject,
            email=identity.email,
            idp=identity.idp,
            app=runtime.name,
            action=action,
            outcome=outcome,
            reference=reference,
        )
    # 303 so the browser GETs the link; no-store and no-referrer keep the one-time link
    # out of caches and out of the LMS's Referer logs.
    return RedirectResponse(url, status_code=303, headers=NO_STORE)


# -- operations ------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    svc = services(request)
    apps = [(name, rt.settings.display_name or name) for name, rt in svc.apps.items()]
    return svc.pages.render(request, "index.html", apps=apps)


def _idp_label(svc: Services, name: str) -> str:
    settings: Any = svc.settings.idp[name]
    return str(settings.display_name or name)


def routes() -> list[BaseRoute]:
    return [
        Route("/", index),
        Route("/login/{app}", login),
        Route("/auth/{idp}/login", auth_login),
        Route("/auth/{idp}/callback", oidc_callback),
        Route("/auth/{idp}/acs", saml_acs, methods=["POST"]),
        Route("/auth/{idp}/confirm", confirm.confirm_page, methods=["GET"]),
        Route("/auth/{idp}/confirm", saml_confirm, methods=["POST"]),
        Route("/auth/{idp}/metadata", saml_metadata),
        *sign_out.routes(),
    ]
