"""``/scim/v2/{app}/...``: thin Starlette glue over :class:`ScimService`.

Every request: bearer credential first (401 / 403 before anything else, even the app's
existence), then a bounded JSON body validated by scim2-models, then the LMS calls inside
``lms_calls(CallContext(call_class=BACKGROUND))`` so the budget serves sign-ins first and
answers SCIM 429 + Retry-After when only the sign-ins' reserve is left. Every outcome is a
SCIM body (``application/scim+json``), counted by app, operation and status.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from scim2_models import Context, Error, ListResponse, PatchOp, SCIMException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.call_context import CallClass, CallContext, lms_calls
from gateway.errors import GatewayError, NotFound
from gateway.scim import group_routes, resources
from gateway.scim.bodies import int_param as _int_param
from gateway.scim.bodies import read_body as _body
from gateway.scim.bodies import scim_json as _json
from gateway.scim.credentials import authenticate
from gateway.scim.errors import (
    ScimError,
    error_response,
    from_gateway,
    log_failure,
)
from gateway.scim.filters import parse_filter
from gateway.scim.resources import POLICY, ScimUser, dump
from gateway.scim.service import ScimService
from gateway.web.responses import services

log = logging.getLogger("gateway.scim")

# LMS user ids as the three LMSs issue them (digits, or Litmos' short tokens); anything else
# is no resource of ours and never reaches the LMS.
_USER_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")

Work = Callable[[Request, ScimService, str, str], Awaitable[Response]]


async def _handle(request: Request, op: str, work: Work) -> Response:
    svc = services(request)
    app_name = request.path_params["app"]
    reference = getattr(request.state, "request_id", "-")
    # Only configured names become metric labels: hostile paths cannot grow the series.
    label = app_name if app_name in svc.settings.app else "-"
    try:
        idp = authenticate(request.headers.get("authorization"), svc.settings.idp, app_name)
        service = svc.scim.get(app_name)
        if service is None:
            raise NotFound(f"scim: app {app_name[:64]!r} is not provisioned over SCIM")
        base = f"{svc.settings.gateway.public_url.rstrip('/')}/scim/v2/{app_name}"
        with lms_calls(CallContext(call_class=CallClass.BACKGROUND)), POLICY:
            response = await work(request, service, idp, base)
    except Exception as exc:  # every failure becomes a SCIM body
        error = _scim_error(exc)
        if isinstance(exc, GatewayError | ScimError | SCIMException | ValidationError):
            log_failure(exc, error.status, reference, label, op)
        else:  # a bug: logged with its traceback, answered as a SCIM 500
            log.exception("scim request failed", extra={"fields": {"reference": reference}})
        response = error_response(error, reference)
    svc.metrics.scim_requests.labels(label, op, str(response.status_code)).inc()
    if response.status_code == 429:
        svc.metrics.scim_throttled.labels(label).inc()
    return response


def _scim_error(exc: Exception) -> ScimError:
    if isinstance(exc, ScimError):
        return exc
    if isinstance(exc, GatewayError):
        return from_gateway(exc)
    if isinstance(exc, SCIMException):
        error = exc.to_error()
        return ScimError(int(error.status or 400), error.scim_type, error.detail or "invalid")
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        first = Error.from_validation_error(errors[0]) if errors else Error(status=400)
        return ScimError(int(first.status or 400), first.scim_type or "invalidValue",
                         first.detail or "invalid request")
    return ScimError(500, None, "internal error")


def _user_id(request: Request) -> str:
    user_id: str = request.path_params["id"]
    if not _USER_ID.match(user_id):
        raise ScimError(404, None, "resource not found")
    return user_id


def _user_response(user: Any, base: str, context: Context, status: int = 200,
                   params: Any = None) -> Response:
    resource = resources.user_resource(user, base)
    headers = {"Location": f"{base}/Users/{user.user_id}"} if status == 201 else None
    return _json(dump(resource, context, params), status, headers)


# -- Users ------------------------------------------------------------------------------


async def _list(request: Request, service: ScimService, idp: str, base: str) -> Response:
    filters = request.query_params.getlist("filter")
    if len(filters) > 1:
        raise ScimError(400, "invalidFilter", "filter may be given once")
    lookup = parse_filter(filters[0]) if filters else None
    start = max(1, _int_param(request, "startIndex", 1))
    count = min(max(0, _int_param(request, "count", resources.MAX_PAGE)), resources.MAX_PAGE)
    users, total = await service.search(idp, lookup, start - 1, count)
    page = ListResponse[ScimUser](
        total_results=total,
        start_index=start,
        items_per_page=len(users),
        resources=[resources.user_resource(u, base) for u in users] or None,
    )
    return _json(dump(page, Context.SEARCH_RESPONSE,
                      resources.response_parameters(request.query_params)))


async def _create(request: Request, service: ScimService, idp: str, base: str) -> Response:
    body = await _body(request)
    resource = ScimUser.model_validate(body, scim_ctx=Context.RESOURCE_CREATION_REQUEST)
    user = await service.create(idp, resource)
    return _user_response(user, base, Context.RESOURCE_CREATION_RESPONSE, 201)


async def _get(request: Request, service: ScimService, idp: str, base: str) -> Response:
    user = await service.get(idp, _user_id(request))
    return _user_response(user, base, Context.RESOURCE_QUERY_RESPONSE,
                          params=resources.response_parameters(request.query_params))


async def _put(request: Request, service: ScimService, idp: str, base: str) -> Response:
    user_id = _user_id(request)
    body = await _body(request)
    resource = ScimUser.model_validate(body, scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    current = await service.get(idp, user_id)
    user = await service.replace(idp, current, resource)
    return _user_response(user, base, Context.RESOURCE_REPLACEMENT_RESPONSE)


async def _patch(request: Request, service: ScimService, idp: str, base: str) -> Response:
    user_id = _user_id(request)
    body = await _body(request)
    patch = PatchOp[ScimUser].model_validate(
        body, scim_ctx=Context.RESOURCE_PATCH_REQUEST)
    current = await service.get(idp, user_id)
    resource = resources.user_resource(current, base)
    patch.patch(resource)  # in memory; a refused operation leaves the LMS untouched
    user = await service.replace(idp, current, resource)
    return _user_response(user, base, Context.RESOURCE_PATCH_RESPONSE)


async def _delete(request: Request, service: ScimService, idp: str, base: str) -> Response:
    await service.deactivate(idp, _user_id(request))
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


# -- discovery --------------------------------------------------------------------------


async def _config(request: Request, service: ScimService, idp: str, base: str) -> Response:
    return _json(resources.service_provider_config(base))


def _listing(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": len(items), "startIndex": 1, "itemsPerPage": len(items),
        "Resources": items,
    }


async def _resource_types(request: Request, service: ScimService, idp: str,
                          base: str) -> Response:
    items = resources.resource_types(base)
    wanted = request.path_params.get("name")
    if wanted is None:
        return _json(_listing(items))
    for item in items:
        if item.get("id") == wanted:
            return _json(item)
    raise ScimError(404, None, "resource not found")


async def _schemas(request: Request, service: ScimService, idp: str, base: str) -> Response:
    items = resources.schemas(base)
    wanted = request.path_params.get("id")
    if wanted is None:
        return _json(_listing(items))
    for item in items:
        if str(item.get("id", "")).lower() == wanted.lower():
            return _json(item)
    raise ScimError(404, None, "resource not found")


async def _unknown(request: Request, service: ScimService, idp: str, base: str) -> Response:
    raise ScimError(404, None, "no such SCIM endpoint (this gateway serves Users and Groups)")


async def _not_allowed(request: Request, service: ScimService, idp: str,
                       base: str) -> Response:
    raise ScimError(405, None, f"{request.method} is not supported here")


_OPS: dict[tuple[str, str], tuple[str, Work]] = {
    ("users", "GET"): ("list", _list),
    ("users", "POST"): ("create", _create),
    ("user", "GET"): ("get", _get),
    ("user", "PUT"): ("replace", _put),
    ("user", "PATCH"): ("patch", _patch),
    ("user", "DELETE"): ("delete", _delete),
    ("config", "GET"): ("discovery", _config),
    ("types", "GET"): ("discovery", _resource_types),
    ("schemas", "GET"): ("discovery", _schemas),
    **group_routes.OPS,
}


def _endpoint(kind: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        found = _OPS.get((kind, request.method))
        work: Work = _unknown
        op = "other"
        if found is not None:
            op, work = found
        elif kind != "unknown":
            work = _not_allowed
        return await _handle(request, op, work)

    return endpoint


def routes() -> list[BaseRoute]:
    """The SCIM routes, mounted by ``app.py``."""
    base = "/scim/v2/{app}"
    every = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return [
        Route(f"{base}/Users", _endpoint("users"), methods=every),
        Route(base + "/Users/{id}", _endpoint("user"), methods=every),
        Route(f"{base}/Groups", _endpoint("groups"), methods=every),
        Route(base + "/Groups/{id}", _endpoint("group"), methods=every),
        Route(f"{base}/ServiceProviderConfig", _endpoint("config"), methods=every),
        Route(f"{base}/ResourceTypes", _endpoint("types"), methods=every),
        Route(base + "/ResourceTypes/{name}", _endpoint("types"), methods=every),
        Route(f"{base}/Schemas", _endpoint("schemas"), methods=every),
        Route(base + "/Schemas/{id}", _endpoint("schemas"), methods=every),
        Route(base + "/{rest:path}", _endpoint("unknown"), methods=every),
    ]
