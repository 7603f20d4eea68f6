"""What every handler shares: the services lookup, the no-store headers, the one place a
:mod:`gateway.errors` exception becomes a page (or JSON for ``/api``) with its support
reference, the styled 404/405 pages, and bounded parsing of query parameters and forms (a
repeated parameter is a 400)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import (
    BadRequest,
    BudgetExhausted,
    GatewayError,
    LmsRateLimited,
    NotFound,
    TooManyPendingLogins,
)
from gateway.identity import Profile
from gateway.observability import log_event
from gateway.web.error_pages import kind_of

if TYPE_CHECKING:
    from gateway.services import AppRuntime, Services

log = logging.getLogger("gateway.web")

NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


def _known_app(svc: Services, request: Request, app: str | None) -> AppRuntime | None:
    """The app this request is about, when it is a configured one (a name from the URL that
    is not configured is never echoed onto a page)."""
    name = app if app is not None else request.path_params.get("app")
    return svc.apps.get(name) if isinstance(name, str) else None


def _page_kind(request: Request, exc: GatewayError) -> str:
    kind = exc.page
    if isinstance(exc, NotFound) and request.url.path.startswith("/embed/"):
        # Inside a portal's lesson frame, what is missing is the lesson.
        kind = "lesson_not_found"
    return kind


def gateway_error_response(
    request: Request, exc: GatewayError, *, resume: str | None = None, app: str | None = None
) -> Response:
    """The page (or JSON) for ``exc``; ``resume`` is where a queue page carries on
    (default: reload the same URL, fine for a GET that can be repeated); ``app`` names the
    app the request was for when the URL does not (a callback), for "Start again" links."""
    svc = services(request)
    reference = getattr(request.state, "request_id", "-")
    kind_name = _page_kind(request, exc)
    kind = kind_of(kind_name)
    # Expected conditions (queue, a refused account, a stale link) are INFO/WARNING: only
    # what an operator must act on (outages, bugs, our LMS credentials) is ERROR.
    log_event(
        log,
        kind.level,
        "request failed",
        code=exc.code,
        check=getattr(exc, "check", None),
        reason=exc.reason,
        status=exc.status,
        reference=reference,
        path=request.url.path,
    )
    headers = dict(NO_STORE)
    if isinstance(exc, BudgetExhausted | LmsRateLimited | TooManyPendingLogins):
        retry = math.ceil(getattr(exc, "retry_after", None) or 30)
        # Up to 10 minutes: a queued employee's place is kept (queue ticket) until their
        # calls are ready, so coming back earlier only costs page loads.
        headers["Retry-After"] = str(max(1, min(retry, 600)))
    if request.url.path.startswith("/api/"):
        body = {"error": exc.code, "message": exc.public, "reference": reference}
        return JSONResponse(body, status_code=exc.status, headers=headers)
    runtime = _known_app(svc, request, app if app is not None else exc.app)
    app_label = (runtime.settings.display_name or runtime.name) if runtime else None
    if isinstance(exc, BudgetExhausted) and (request.method == "GET" or resume):
        # Both reload themselves; whoever waited longest tends to get the next token.
        template = "busy.html" if kind_name == "busy" else "queue.html"
        return svc.pages.render(
            request,
            template,
            status=exc.status,
            headers=headers,
            retry=int(headers["Retry-After"]),
            number=_number_in_line(exc, runtime),
            resume=resume,
            reference=reference,
            app_label=app_label,
        )
    app_path = f"/login/{quote(runtime.name, safe='')}" if runtime else None
    return svc.pages.render(
        request,
        "error.html",
        status=exc.status,
        headers=headers,
        kind=kind,
        app_label=app_label,
        start_url=app_path or "/",
        app_url=app_path,
        in_frame=request.url.path.startswith("/embed/"),
        reference=reference,
    )


def _number_in_line(exc: BudgetExhausted, runtime: AppRuntime | None) -> int | None:
    """The employee's place in line from ``position`` (LMS calls reserved ahead; 0 or absent:
    unknown), counting a sign-in as the calls a first sign-in of the app's connector takes."""
    position = getattr(exc, "position", None)
    if not isinstance(position, int) or position <= 0:
        return None
    estimate = getattr(runtime.connector, "first_sign_in_calls", None) if runtime else None
    # What a first sign-in of someone with no groups costs: those ahead are mostly new
    # employees in a rush (an estimate; returning ones cost 1 call and move faster).
    per_sign_in = estimate(_NOBODY) if callable(estimate) else 1
    if not isinstance(per_sign_in, int) or per_sign_in < 1:
        per_sign_in = 1
    return math.ceil(position / per_sign_in) + 1


_NOBODY = Profile(email="", first_name="", last_name="", username="")


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return gateway_error_response(request, exc)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route: 404, wrong method: 405): a styled page for
    people, JSON under ``/api/`` and a SCIM error under ``/scim/``."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    headers = {**NO_STORE, **(exc.headers or {})}
    path = request.url.path
    if path.startswith("/scim/"):
        body = {"schemas": [SCIM_ERROR], "status": str(status), "detail": exc.detail}
        return JSONResponse(body, status, headers=headers, media_type="application/scim+json")
    reference = getattr(request.state, "request_id", "-")
    if path.startswith("/api/"):
        body = {"error": _HTTP_CODES.get(status, "error"), "message": exc.detail}
        return JSONResponse({**body, "reference": reference}, status, headers=headers)
    kind_name = {404: "not_found", 405: "method_not_allowed"}.get(status)
    if kind_name is None:
        kind_name = "bad_link" if 400 <= status < 500 else "internal"
    log_event(
        log, logging.INFO, "request refused", status=status, reference=reference, path=path
    )
    return services(request).pages.render(
        request,
        "error.html",
        status=status,
        headers=headers,
        kind=kind_of(kind_name),
        app_label=None,
        start_url="/",
        app_url=None,
        in_frame=False,
        reference=reference,
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def internal_error(request: Request, exc: Exception) -> Response:
    reference = getattr(request.state, "request_id", "-")
    log.exception("unhandled error", extra={"fields": {"reference": reference}})
    return services(request).pages.render(
        request,
        "error.html",
        status=500,
        headers=dict(NO_STORE),
        kind=kind_of("internal"),
        app_label=None,
        start_url="/",
        app_url=None,
        in_frame=False,
        reference=reference,
    )


def single_param(request: Request, name: str) -> str | None:
    """The query parameter ``name``, or None when absent; BadRequest (400) when repeated.

    Repeating a security-relevant parameter (``employee``, ``target``, ``idp``...) is never
    legitimate; it is how a request smuggles a second value past a proxy, a WAF or a log
    that reads the first one while Starlette's ``.get`` returns the last. Refuse it
    before anything is done rather than guess which one was meant.
    """
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise BadRequest(
            f"query parameter {name[:32]!r} repeated {len(values)} times",
            public=f"The parameter {name[:32]} may be given only once.",
        )
    return values[0] if values else None


def reject_repeated(request: Request, *names: str) -> None:
    """BadRequest (400) when any of ``names`` appears more than once in the query."""
    for name in names:
        single_param(request, name)


async def small_form(request: Request, limit: int) -> dict[str, str]:
    """Parse an urlencoded body of at most ``limit`` bytes (larger: 400, nothing parsed)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", ""):
        raise BadRequest(f"unexpected content type {content_type[:64]!r}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadRequest("request body too large")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise BadRequest("request body too large")
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadRequest("request body is not urlencoded ASCII") from None
    result: dict[str, str] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest(f"duplicate form field {key[:32]!r}")
        result[key] = value
    return result


def same_origin_post(request: Request, svc: Services) -> bool:
    """Whether a state-changing POST came from one of our own pages.

    Judged from every signal browsers send, strongest first. Fetch Metadata
    (``Sec-Fetch-Site``, all current browsers) is authoritative when present. A real
    ``Origin`` must be ours. ``Origin: null`` is what Chromium and Firefox send for a form
    posted from a page whose referrer policy is ``no-referrer`` (and what sandboxed frames
    send): it proves nothing either way, so the caller's CSRF token (bound to the session)
    decides. Without either header (old browsers), a Referer on our origin is required.
    """
    public = svc.settings.gateway.public_url.rstrip("/")
    fetch_site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if fetch_site is not None:
        # "none" is a user-initiated navigation (typed URL, bookmark), never a cross-site form.
        same = fetch_site in ("same-origin", "none")
        return same and (origin is None or origin in ("null", public))
    if origin is not None and origin != "null":
        return origin == public
    if origin == "null":
        return True
    referer = request.headers.get("referer", "")
    return referer == public or referer.startswith(public + "/")
