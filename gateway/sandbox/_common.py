"""Helpers shared by the LMS simulators in ``gateway/sandbox`` (demo and tests only).

* :class:`CallLog`: what the simulator was asked, so tests can count LMS calls.
* :class:`RateLimiter`: a per-key sliding-window limiter (default 100 calls / 60 s), the way
  the vendors describe their limits.
* :class:`Faults`: fault injection for tests: fail the next call(s) with a status, answer
  with malformed JSON, or delay every answer (to provoke client timeouts).
* :func:`serve_in_thread` / :func:`serve_task`: run any ASGI app with uvicorn on 127.0.0.1
  on a free port, and stop it again.

Nothing here is used by ``gateway serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

# ---------------------------------------------------------------------------------------
# Call log


@dataclass(frozen=True, slots=True)
class Call:
    """One request a simulator received (never with its secrets)."""

    method: str
    path: str
    operation: str


class CallLog:
    """The requests a simulator received, in order."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def record(self, method: str, path: str, operation: str) -> None:
        with self._lock:
            self.calls.append(Call(method, path, operation))

    def count(self, operation: str | None = None, method: str | None = None) -> int:
        """How many calls matched (all calls when no filter is given)."""
        with self._lock:
            return sum(
                1
                for c in self.calls
                if (operation is None or c.operation == operation)
                and (method is None or c.method == method)
            )

    def operations(self) -> list[str]:
        with self._lock:
            return [c.operation for c in self.calls]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[Call]:
        with self._lock:
            return iter(list(self.calls))


# ---------------------------------------------------------------------------------------
# Rate limiting


class RateLimiter:
    """At most ``limit`` calls per key in any sliding window of ``window`` seconds."""

    def __init__(
        self,
        limit: int = 100,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> bool:
        """Count one call for ``key``; False when it is over the limit (and not counted)."""
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True

    def retry_after(self, key: str) -> int:
        """Whole seconds until ``key`` may call again (at least 1)."""
        with self._lock:
            hits = self._hits.get(key)
            if not hits:
                return 1
            return max(1, int(hits[0] + self.window - self._clock()) + 1)

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


# ---------------------------------------------------------------------------------------
# Fault injection


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str]
    times: int


@dataclass
class Faults:
    """Faults a test arms on a simulator; the simulator calls :meth:`before` first thing.

    ``delay`` (seconds) is applied to every answer while set, so a client with a shorter
    read timeout sees a timeout.
    """

    delay: float = 0.0
    _failures: deque[_Failure] = field(default_factory=deque)
    _malformed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(
        self,
        status: int,
        body: Any = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next ``times`` calls answer ``status`` with ``body`` (JSON; a default
        ``{"error": ...}`` when None; a ``str`` is sent as-is)."""
        with self._lock:
            self._failures.append(_Failure(status, body, dict(headers or {}), times))

    def malformed_next(self, times: int = 1) -> None:
        """The next ``times`` calls answer 200 with a body that is not JSON."""
        with self._lock:
            self._malformed += times

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()
            self._malformed = 0
        self.delay = 0.0

    def _take(self) -> Response | None:
        with self._lock:
            if self._failures:
                failure = self._failures[0]
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.popleft()
                if isinstance(failure.body, str):
                    return Response(
                        failure.body, status_code=failure.status, headers=failure.headers,
                        media_type="application/json",
                    )
                body = failure.body if failure.body is not None else {
                    "error": f"injected failure {failure.status}"
                }
                return JSONResponse(body, status_code=failure.status, headers=failure.headers)
            if self._malformed:
                self._malformed -= 1
                return Response(
                    "{\"status\": \"success\", <html>oops", status_code=200,
                    media_type="application/json",
                )
        return None

    async def before(self) -> Response | None:
        """Sleep for ``delay``, then return an armed fault's response (or None)."""
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        return self._take()


# ---------------------------------------------------------------------------------------
# Serving an ASGI app on 127.0.0.1


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class Served:
    """A running server: its base URL and how to stop it."""

    url: str
    port: int
    server: uvicorn.Server
    _thread: threading.Thread | None = None
    _task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """Stop a server started with :func:`serve_in_thread` (waits for its thread)."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    async def astop(self) -> None:
        """Stop a server started with :func:`serve_task`."""
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)


def _bind_free_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@dataclass(frozen=True)
class ServerTls:
    """A certificate chain and its key (PEM files) to serve HTTPS with."""

    cert_file: str
    key_file: str


def _server(app: ASGIApp, log_level: str, tls: ServerTls | None = None) -> uvicorn.Server:
    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, lifespan="auto",
        ssl_certfile=tls.cert_file if tls else None, ssl_keyfile=tls.key_file if tls else None,
    )  # fmt: skip
    return _QuietServer(config)


def bind_port() -> socket.socket:
    """A listening socket on 127.0.0.1 on a free port: bind first when the app must know
    its own URL (a login page) before it is built, then pass it to a serve function."""
    return _bind_free_port()


def serve_in_thread(
    app: ASGIApp,
    sock: socket.socket | None = None,
    log_level: str = "warning",
    tls: ServerTls | None = None,
) -> Served:
    """Serve ``app`` on 127.0.0.1 (free port, or ``sock``) in a daemon thread, over HTTPS
    when ``tls`` is given; returns once it accepts connections. Stop it with
    :meth:`Served.stop`."""
    sock = sock or _bind_free_port()
    port = sock.getsockname()[1]
    server = _server(app, log_level, tls)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"sim-{port}"
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on 127.0.0.1:{port} did not start")
        time.sleep(0.01)
    scheme = "https" if tls else "http"
    return Served(f"{scheme}://127.0.0.1:{port}", port, server, _thread=thread)


async def serve_task(
    app: ASGIApp,
    sock: socket.socket | None = None,
    log_level: str = "warning",
    tls: ServerTls | None = None,
) -> Served:
    """Serve ``app`` on 127.0.0.1 as a task of the running event loop (for ``gateway demo``),
    over HTTPS when ``tls`` is given; returns once it accepts connections. Stop it with
    :meth:`Served.astop`."""
    sock = sock or _bind_free_port()
    port = sock.getsockname()[1]
    server = _server(app, log_level, tls)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"sim-{port}")
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError(f"server on 127.0.0.1:{port} did not start")
        await asyncio.sleep(0.01)
    scheme = "https" if tls else "http"
    return Served(f"{scheme}://127.0.0.1:{port}", port, server, _task=task)
