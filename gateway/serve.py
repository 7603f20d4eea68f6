"""``gateway serve``: check the configuration and the ports, then run uvicorn (the public
listener, optionally HTTPS, and the operator listener), one process or several workers."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from typing import Any

from gateway.errors import ConfigError


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (so uvicorn would fail to bind).

    SO_REUSEADDR like uvicorn: a port in TIME_WAIT is free for it, a listening one is not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False  # uvicorn will report the bad host itself
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def port_busy_message(port: int, option: str = "--port") -> str:
    return f"port {port} is in use; pass {option}"


def serve(
    path: str, host: str, port: int, workers: int,
    tls_cert: str | None = None, tls_key: str | None = None,
) -> int:
    """``gateway serve``: check the configuration and the ports, then run uvicorn (HTTPS
    with ``tls_cert`` + ``tls_key``; the operator listener stays plain HTTP)."""
    from gateway.config import load_settings
    from gateway.tls import cert_key_problem

    if (tls_cert is None) != (tls_key is None):
        print("serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 1
    if tls_cert and tls_key:
        problem = cert_key_problem("--tls-cert", tls_cert, "--tls-key", tls_key)
        if problem:
            print(f"serve: {problem}", file=sys.stderr)
            return 1

    try:
        settings = load_settings(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)
        return 1
    if workers > 1 and settings.store.backend == "memory":
        print(
            "config: store.backend: --workers > 1 needs the redis store (a sign-in may start "
            "in one worker and finish in another)",
            file=sys.stderr,
        )
        return 1
    # One clear line instead of uvicorn's bind error (or a traceback from the operator task).
    listeners = [(host, port, "--port")]
    if settings.operator.port is not None:
        listeners.append((settings.operator.host, settings.operator.port, "[operator] port"))
    for bind_host, bind_port, option in listeners:
        if port_in_use(bind_host, bind_port):
            print(port_busy_message(bind_port, option), file=sys.stderr)
            return 2
    import uvicorn

    from gateway.app import create_app
    from gateway.observability import configure_logging

    configure_logging(settings.gateway.log_level, settings.gateway.log_format)
    # No uvicorn access log: it prints whole request lines, and the OIDC callback's query
    # carries the authorization code and state. Our own log lines carry the request id.
    options: dict[str, Any] = {
        "host": host, "port": port, "log_config": None, "access_log": False,
        "proxy_headers": True, "server_header": False,
    }
    if tls_cert and tls_key:
        # uvicorn's server context: Python's defaults, TLS 1.2 or later.
        options.update(ssl_certfile=tls_cert, ssl_keyfile=tls_key)
    operator_port = settings.operator.port
    if workers > 1:
        if operator_port is not None:
            # Each worker has its own metrics; one operator port cannot show them all.
            print(
                "config: operator.port: needs --workers 1 (run several replicas instead, each "
                "with its own operator port)",
                file=sys.stderr,
            )
            return 1
        # Each worker re-reads the file (uvicorn imports the factory in every process).
        os.environ["GATEWAY_CONFIG"] = path
        uvicorn.run("gateway.serve:app_from_env", factory=True, workers=workers, **options)
    elif operator_port is None:
        uvicorn.run(create_app(settings), **options)
    else:
        app = create_app(settings)
        return asyncio.run(
            _serve_with_operator(app, options, settings.operator.host, operator_port)
        )
    return 0


async def _serve_with_operator(
    app: Any, options: dict[str, Any], operator_host: str, operator_port: int
) -> int:
    """The public listener and the operator listener (/metrics, detailed /readyz) in one
    event loop; the public server owns the signals and the app's lifespan."""
    import contextlib
    from collections.abc import Iterator

    import uvicorn

    from gateway.app import create_operator_app

    class _OperatorServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The public server handles SIGINT/SIGTERM and then stops this one.
            yield

    operator = _OperatorServer(
        uvicorn.Config(
            create_operator_app(app), host=operator_host, port=operator_port,
            log_config=None, access_log=False, server_header=False, lifespan="off",
        )
    )  # fmt: skip
    operator_task = asyncio.create_task(operator.serve())
    while not operator.started:
        if operator_task.done():
            # uvicorn has logged why (e.g. the port is taken).
            print(f"operator listener on {operator_host}:{operator_port} failed", file=sys.stderr)
            return 1
        await asyncio.sleep(0.02)
    public = uvicorn.Server(uvicorn.Config(app, **options))
    try:
        await public.serve()
    finally:
        operator.should_exit = True
        await operator_task
    return 0


def app_from_env() -> object:
    """uvicorn factory for multi-worker runs: settings from ``$GATEWAY_CONFIG``."""
    from gateway.app import create_app
    from gateway.config import load_settings
    from gateway.observability import configure_logging

    settings = load_settings(os.environ["GATEWAY_CONFIG"])
    configure_logging(settings.gateway.log_level, settings.gateway.log_format)
    return create_app(settings)
