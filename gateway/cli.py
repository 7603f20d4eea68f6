"""Command line: ``gateway serve|demo|check-config|check-connectors``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from gateway.errors import ConfigError, GatewayError


def _load(path: str) -> object:
    from gateway.config import load_settings

    return load_settings(path)


def check_config(path: str) -> int:
    """Print every problem of the file at ``path``; exit status 0 only when there are none."""
    try:
        _load(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0


def serve(path: str, host: str, port: int, workers: int) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.config import load_settings
    from gateway.observability import configure_logging

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
    configure_logging(settings.gateway.log_level, settings.gateway.log_format)
    # No uvicorn access log: it prints whole request lines, and the OIDC callback's query
    # carries the authorization code and state. Our own log lines carry the request id.
    options: dict[str, Any] = {
        "host": host, "port": port, "log_config": None, "access_log": False,
        "proxy_headers": True, "server_header": False,
    }
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
        uvicorn.run("gateway.cli:app_from_env", factory=True, workers=workers, **options)
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


async def _check_connectors(path: str) -> int:
    from gateway.app import build_services
    from gateway.config import load_settings

    settings = load_settings(path)
    services = build_services(settings)
    failures = 0
    try:
        for name, runtime in services.apps.items():
            try:
                await runtime.connector.test_connection()
            except GatewayError as exc:
                failures += 1
                print(f"app {name} ({runtime.settings.connector}): FAILED: {exc.reason}")
            else:
                print(f"app {name} ({runtime.settings.connector}): OK")
    finally:
        for runtime in services.apps.values():
            await runtime.connector.aclose()
        for client in services.clients:
            await client.aclose()
    return 1 if failures else 0


def check_connectors(path: str) -> int:
    try:
        return asyncio.run(_check_connectors(path))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p_serve = commands.add_parser("serve", help="run the gateway")
    p_serve.add_argument("--config", required=True)
    p_serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server's job
    p_serve.add_argument("--port", type=int, default=8000)
    p_serve.add_argument("--workers", type=int, default=1)

    p_check = commands.add_parser("check-config", help="validate a configuration file")
    p_check.add_argument("path")

    p_conn = commands.add_parser("check-connectors", help="test every app's LMS credentials")
    p_conn.add_argument("--config", required=True)

    p_demo = commands.add_parser("demo", help="gateway + demo IdPs + LMS simulators on 127.0.0.1")
    p_demo.add_argument("--port", type=int, default=8000, help="gateway port (others follow)")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.config, args.host, args.port, args.workers)
    if args.command == "check-config":
        return check_config(args.path)
    if args.command == "check-connectors":
        return check_connectors(args.config)
    from gateway.sandbox.demo import run_demo

    return run_demo(args.port)
