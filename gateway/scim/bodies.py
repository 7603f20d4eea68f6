"""Request and response plumbing every SCIM endpoint shares: bounded JSON bodies, single
query parameters, ``application/scim+json`` answers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import jsonsafe
from gateway.scim.errors import HEADERS, SCIM_JSON, ScimError

MAX_BODY = 64 * 1024


def scim_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A SCIM JSON answer (never cached)."""
    return JSONResponse(body, status_code=status, headers={**HEADERS, **(headers or {})},
                        media_type=SCIM_JSON)


async def read_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, at most :data:`MAX_BODY` bytes (SCIM 400/413 otherwise)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (SCIM_JSON, "application/json"):
        raise ScimError(400, "invalidSyntax", "send application/scim+json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise ScimError(413, None, "request body too large")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > MAX_BODY:
            raise ScimError(413, None, "request body too large")
    try:
        body = jsonsafe.loads(raw, max_depth=jsonsafe.BODY_DEPTH)
    except ValueError:  # also RecursionError's stand-in: deep nesting is a 400, never a 500
        raise ScimError(400, "invalidSyntax", "the body is not JSON (or nested too deep)") from None
    if not isinstance(body, dict):
        raise ScimError(400, "invalidSyntax", "the body must be a JSON object")
    return body


def int_param(request: Request, name: str, default: int) -> int:
    """An integer query parameter given at most once (SCIM 400 otherwise)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ScimError(400, "invalidValue", f"{name} may be given once")
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise ScimError(400, "invalidValue", f"{name} must be an integer") from None
