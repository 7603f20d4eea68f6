"""What every handler shares: the services lookup, the no-store headers, the one place a
:mod:`gateway.errors` exception becomes a page (or JSON for ``/api``) with its support
reference, and bounded parsing of query parameters and forms (a repeated parameter is a 400)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import (
    BadRequest,
    BudgetExhausted,
    GatewayError,
    LmsRateLimited,
    TooManyPendingLogins,
)
from gateway.observability import log_event

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.web")

NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


def gateway_error_response(
    request: Request, exc: GatewayError, *, resume: str | None = None
) -> Response:
    """The page (or JSON) for ``exc``; ``resume`` is where a queue page carries on
    (default: reload the same URL, fine for a GET that can be repeated)."""
    svc = services(request)
    reference = getattr(request.state, "request_id", "-")
    level = logging.ERROR if exc.status >= 502 else logging.WARNING
    log_event(
        log,
        level,
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
        retry = int(getattr(exc, "retry_after", None) or 30)
        headers["Retry-After"] = str(max(1, min(retry, 120)))
    if request.url.path.startswith("/api/"):
        body = {"error": exc.code, "message": exc.public, "reference": reference}
        return JSONResponse(body, status_code=exc.status, headers=headers)
    if isinstance(exc, BudgetExhausted) and (request.method == "GET" or resume):
        # The queue page reloads itself; whoever waited longest tends to get the next token.
        return svc.pages.render(
            "queue.html",
            status=503,
            headers=headers,
            retry=headers["Retry-After"],
            resume=resume,
            reference=reference,
        )
    return svc.pages.render(
        "error.html", status=exc.status, headers=headers, message=exc.public, reference=reference
    )


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return gateway_error_response(request, exc)


async def internal_error(request: Request, exc: Exception) -> Response:
    reference = getattr(request.state, "request_id", "-")
    log.exception("unhandled error", extra={"fields": {"reference": reference}})
    return services(request).pages.render(
        "error.html",
        status=500,
        headers=dict(NO_STORE),
        message="Something went wrong on our side.",
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
