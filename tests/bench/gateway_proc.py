"""The gateway as the benchmark runs it: ``gateway serve``'s app and uvicorn settings, on a
listening socket inherited from the harness, optionally with N worker processes.

    GATEWAY_CONFIG=path python -m tests.bench.gateway_proc --fd N [--workers W] [--plain]

Unless ``--plain``, each worker is instrumented so the harness can separate the gateway's
own time from the time it spends waiting for the IdP and the LMS:

* every outgoing HTTP call (IdP token endpoint, LMS API) is timed at the httpx transport and
  added to the current request's "upstream" total (a context variable);
* every response carries ``x-bench-server-us`` (from the ASGI call to the response start),
  ``x-bench-upstream-us`` (the part of it spent in upstream calls, as the gateway's httpx
  transport saw them) and ``x-bench-peer-us`` (the part the peers themselves reported as
  their service time, ``x-bench-peer-us`` on their answers, added latency included).

The gateway's own time per request is server minus peer time: it keeps the gateway's HTTP
client work and the loopback transfer, and excludes what the IdP and the LMS spent. The
instrumentation costs a few ``perf_counter`` calls and headers per request (well under 1 %).
"""

from __future__ import annotations

import argparse
import contextvars
import os
import socket
import time
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http_transport import AiohttpTransport

_upstream: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "bench_upstream", default=None
)


def _instrument_httpx() -> None:
    # The gateway's clients send through its own aiohttp-backed transport, not httpx's default
    # one: time that, or the "own" figures would include the IdP's and the LMS's time.
    original = AiohttpTransport.handle_async_request

    async def timed(self: AiohttpTransport, request: httpx.Request) -> httpx.Response:
        acc = _upstream.get()
        started = time.perf_counter()
        response = None
        try:
            response = await original(self, request)
            # The body is read by the caller; for these small JSON answers it arrived with
            # the headers, so the wait is all here.
            return response
        finally:
            if acc is not None:
                acc[0] += time.perf_counter() - started
                peer = response.headers.get("x-bench-peer-us") if response is not None else None
                acc[1] += int(peer) / 1e6 if peer and peer.isdigit() else 0.0

    AiohttpTransport.handle_async_request = timed  # type: ignore[method-assign]


class Timing:
    """ASGI middleware adding the server and upstream times to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        acc = [0.0, 0.0]
        token = _upstream.set(acc)
        started = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                server = time.perf_counter() - started
                headers = list(message.get("headers", []))
                headers.append((b"x-bench-server-us", b"%d" % int(server * 1e6)))
                headers.append((b"x-bench-upstream-us", b"%d" % int(acc[0] * 1e6)))
                headers.append((b"x-bench-peer-us", b"%d" % int(acc[1] * 1e6)))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            _upstream.reset(token)


def factory() -> Any:
    """uvicorn factory (imported in every worker): the gateway app, instrumented."""
    from gateway.app import create_app
    from gateway.config import load_settings
    from gateway.observability import configure_logging

    settings = load_settings(os.environ["GATEWAY_CONFIG"])
    configure_logging(settings.gateway.log_level, settings.gateway.log_format)
    app = create_app(settings)
    if os.environ.get("BENCH_PLAIN") == "1":
        return app
    _instrument_httpx()
    return Timing(app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--plain", action="store_true")
    args = parser.parse_args()
    if args.plain:
        os.environ["BENCH_PLAIN"] = "1"
    sock = socket.socket(fileno=args.fd)
    # The same uvicorn options as `gateway serve` (gateway/serve.py).
    config = uvicorn.Config(
        "tests.bench.gateway_proc:factory",
        factory=True,
        workers=args.workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[sock]).run()
    else:
        server.run(sockets=[sock])


if __name__ == "__main__":
    main()
