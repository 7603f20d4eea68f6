#!/usr/bin/env python3
"""Container health check: GET /healthz on the port the running ``gateway serve`` listens on.

The Dockerfile's HEALTHCHECK runs this. It reads ``--host``, ``--port`` and ``--tls-cert``
from the serve process's own command line, so ``docker run IMAGE serve --port 9000 ...`` is
followed without changing the image (without ``--port``, serve listens on 8000). Exit 0 when
/healthz answers 200, 1 otherwise (Docker's convention), with one line saying why.

    healthcheck.py          find the serve process in /proc (the lowest pid: PID 1 in a container)
    healthcheck.py PID      check the serve process PID
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PORT = 8000
TIMEOUT_SECONDS = 2.0


def serve_args(pid: int) -> list[str] | None:
    """The arguments after ``serve`` of process ``pid``, or None if it is no ``gateway serve``."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    for index, arg in enumerate(argv[:-1]):
        # `gateway serve ...` (console script: python /usr/local/bin/gateway serve ...) or
        # `python -m gateway serve ...`.
        if (os.path.basename(arg) == "gateway" or arg == "gateway") and argv[index + 1] == "serve":
            return argv[index + 2 :]
    return None


def find_serve_process() -> int | None:
    """The lowest pid running ``gateway serve`` (its workers, if any, have higher pids)."""
    pids = sorted(int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    for pid in pids:
        if pid != os.getpid() and serve_args(pid) is not None:
            return pid
    return None


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` (the last one wins, as in argparse)."""
    value = None
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1 :]
    return value


def health_url(args: list[str]) -> str:
    """Where the serve process with these arguments answers /healthz."""
    port = option(args, "--port") or str(DEFAULT_PORT)
    host = option(args, "--host") or "0.0.0.0"  # noqa: S104 - serve's default, not a bind
    # A wildcard bind is reached on loopback; a specific address only on itself.
    if host in ("0.0.0.0", ""):  # noqa: S104
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if option(args, "--tls-cert") else "http"
    return f"{scheme}://{host}:{int(port)}/healthz"


def check(url: str) -> tuple[bool, str]:
    """GET ``url``; (healthy, what happened)."""
    context = None
    if url.startswith("https:"):
        # Liveness over loopback: the certificate names the public host, not 127.0.0.1.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url} unreachable: {exc}"
    return status == 200, f"{url} answered {status}"


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        pid: int | None = int(argv[1])
    else:
        pid = find_serve_process()
    args = serve_args(pid) if pid is not None else None
    if args is None:
        print("unhealthy: no `gateway serve` process found")
        return 1
    healthy, detail = check(health_url(args))
    # Docker keeps the check's output in `docker inspect` (State.Health.Log).
    print(("healthy: " if healthy else "unhealthy: ") + detail)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
