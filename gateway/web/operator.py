"""Operations endpoints: ``/healthz``, ``/readyz`` and ``/metrics``.

On the public listener ``/readyz`` answers only ``{"ready": ...}`` and ``/metrics`` is a 404,
unless the caller presents ``[operator] token`` as a bearer token: problem details name IdPs
and the store's state, and metrics show traffic. The operator listener (``[operator] port``,
built by ``app.create_operator_app``) serves both in full and is never published.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.errors import NotFound, StoreUnavailable, Unauthorized
from gateway.web.responses import services

if TYPE_CHECKING:
    from gateway.services import Services


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readiness(svc: Services) -> tuple[bool, list[str]]:
    """Whether this process can serve sign-ins, and every problem found. Problems that do
    not stop sign-ins (a Redis that may evict) are listed but leave it ready."""
    blocking = [
        f"idp {name}: not loaded" + (f" ({door.last_error[:200]})" if door.last_error else "")
        for name, door in svc.front_doors.items()
        if not door.ready
    ]
    warnings: list[str] = []
    try:
        await svc.store.ping()
    except StoreUnavailable:
        blocking.append("store: unreachable")
    else:
        warnings = await svc.store.health_problems()
    return not blocking, [*blocking, *warnings]


def dependencies(svc: Services, store_ok: bool, store_where: str) -> list[dict[str, Any]]:
    """Each dependency with its state and last error (operator only; never a secret): the
    IdPs (metadata loaded? the last refresh's error), the store, and each app's LMS circuit."""
    deps: list[dict[str, Any]] = []
    for name, door in svc.front_doors.items():
        state = "ready" if door.ready else "not loaded"
        if door.ready and door.last_error:
            state = "ready, refresh failing"  # serving with the last good copy
        deps.append({"name": f"idp {name}", "state": state,
                     "last_error": door.last_error[:200] if door.last_error else None})
    deps.append({"name": "store", "state": "ok" if store_ok else "unreachable",
                 "detail": store_where})
    for name, runtime in svc.apps.items():
        state = "circuit open" if runtime.budget.circuit_open else "ok"
        deps.append({"name": f"lms {name}", "state": state})
    return deps


async def detailed_body(svc: Services) -> tuple[bool, dict[str, Any]]:
    """The operator's readiness answer: ready, the problems, and every dependency's state."""
    ready, problems = await readiness(svc)
    where = await store_detail(svc)
    store_ok = "store: unreachable" not in problems
    return ready, {"ready": ready, "problems": problems, "store": where,
                   "dependencies": dependencies(svc, store_ok, where)}


async def store_detail(svc: Services) -> str:
    """Where the store is right now (for Redis Sentinel: the primary in use), for the
    operator's readiness details. Only the Redis store has a location to tell."""
    describe = getattr(svc.store, "describe", None)
    return str(await describe()) if describe is not None else "memory (this process)"


def _operator_token_ok(request: Request) -> bool:
    """True when ``[operator] token`` is set and presented as ``Authorization: Bearer``.
    Absent: False. Presented but wrong: Unauthorized (401)."""
    token = services(request).settings.operator.token
    presented = request.headers.get("authorization")
    if token is None or presented is None:
        return False
    scheme, _, value = presented.partition(" ")
    # Constant-time: the comparison must not tell how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.reveal().encode()
    ):
        raise Unauthorized("operator endpoint: wrong bearer token")
    return True


async def readyz(request: Request) -> Response:
    """``GET /readyz`` on the public listener: problem details only to the operator token
    (they name IdPs and the store's state); everyone else gets ``{"ready": ...}``."""
    if _operator_token_ok(request):
        ready, body = await detailed_body(services(request))
    else:
        ready, _ = await readiness(services(request))
        body = {"ready": ready}
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    """``GET /metrics`` on the public listener: 404 unless the operator token is presented
    (metrics are served on the ``[operator] port`` listener)."""
    if not _operator_token_ok(request):
        raise NotFound("metrics are not served on the public listener without the token")
    return operator_metrics_response(request)


def operator_metrics_response(request: Request) -> Response:
    registry = services(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def operator_metrics(request: Request) -> Response:
    """``GET /metrics`` on the operator listener."""
    return operator_metrics_response(request)


async def operator_readyz(request: Request) -> Response:
    """``GET /readyz`` on the operator listener: always with the problem details."""
    ready, body = await detailed_body(services(request))
    return JSONResponse(body, status_code=200 if ready else 503)


def public_routes() -> list[BaseRoute]:
    """The operations endpoints on the public listener."""
    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]


def operator_routes() -> list[BaseRoute]:
    """The operator listener's (``[operator] port``): never exposed to the public."""
    return [
        Route("/healthz", healthz),
        Route("/readyz", operator_readyz),
        Route("/metrics", operator_metrics),
    ]
