"""The load balancer of the replica tests, and a recorder of what the LMS simulators answered.

* :class:`ReplicaProxy`: one public origin in front of several gateway replicas.
* :class:`ResponseLog`: wraps a simulator's ASGI app; records arrival time and status.
* :func:`max_in_window`: the busiest sliding window in a list of arrival times.
"""

from __future__ import annotations

import http.cookiejar
import itertools
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HOP_BY_HOP = {
    b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer",
    b"proxy-authorization", b"proxy-authenticate", b"content-length", b"content-encoding",
}  # fmt: skip


# -- what the simulators answered ----------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request an LMS simulator received: arrival time (monotonic), path, status."""

    at: float
    method: str
    path: str
    status: int


class ResponseLog:
    """ASGI wrapper recording every request's arrival time and response status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.answers: list[Answer] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        at = time.monotonic()

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                with self._lock:
                    self.answers.append(
                        Answer(at, scope["method"], scope["path"], int(message["status"]))
                    )
            await send(message)

        await self.app(scope, receive, record)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open window ``(t - window, t]`` (the simulators' view)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


# -- the load balancer -----------------------------------------------------------------------


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


@dataclass(frozen=True)
class ProxyHit:
    replica: str
    method: str
    path: str
    status: int


class ReplicaProxy:
    """One public origin in front of the replicas: ``X-Replica: <name>`` picks one, otherwise
    round-robin. Preserves Host, cookies and Location, adds X-Forwarded-For/Proto."""

    def __init__(self, upstreams: Mapping[str, str]) -> None:
        self.upstreams = dict(upstreams)
        self._cycle = itertools.cycle(list(upstreams))
        self.hits: list[ProxyHit] = []
        self._client: httpx.AsyncClient | None = None

    async def _send_retrying_stale(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> httpx.Response:
        """Send once; when a kept-alive connection breaks before any answer (the replica closed
        it just as the request went out, which a loaded machine makes likelier than the
        keep-alive expiry below suggests), send once more, as browsers and load balancers do
        for a request that never reached the application."""
        assert self._client is not None
        try:
            return await self._client.request(method, url, headers=headers, content=body)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            return await self._client.request(method, url, headers=headers, content=body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._client is not None:
                        await self._client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        if self._client is None:  # built in the loop of the proxy's own thread
            self._client = httpx.AsyncClient(
                timeout=60,
                # Idle connections are dropped before uvicorn's 5 s keep-alive ends them, as
                # a load balancer's idle timeout is set below its backends': otherwise a
                # request can meet a connection the replica is just closing.
                limits=httpx.Limits(
                    max_connections=500, max_keepalive_connections=100, keepalive_expiry=2.0
                ),
                # A load balancer keeps no cookies: each browser's travel in its headers.
                cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            )
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        chosen = dict(scope["headers"]).get(b"x-replica", b"").decode()
        name = chosen if chosen in self.upstreams else next(self._cycle)
        client_ip = (scope.get("client") or ("127.0.0.1", 0))[0]
        headers += [(b"x-forwarded-for", client_ip.encode()), (b"x-forwarded-proto", b"http")]
        url = self.upstreams[name] + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        try:
            upstream = await self._send_retrying_stale(scope["method"], url, headers, body)
        except httpx.HTTPError as exc:
            # What a load balancer answers when a replica fails it; named so a test says why.
            self.hits.append(ProxyHit(name, scope["method"], scope["path"], 502))
            text = f"proxy: replica {name}: {type(exc).__name__}: {exc}".encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 502,
                    "headers": [(b"content-type", b"text/plain"), (b"x-served-by", name.encode())],
                }
            )
            await send({"type": "http.response.body", "body": text})
            return
        self.hits.append(ProxyHit(name, scope["method"], scope["path"], upstream.status_code))
        out = [(k, v) for k, v in upstream.headers.raw if k.lower() not in HOP_BY_HOP]
        out += [
            (b"content-length", str(len(upstream.content)).encode()),
            (b"x-served-by", name.encode()),
        ]
        await send({"type": "http.response.start", "status": upstream.status_code, "headers": out})
        await send({"type": "http.response.body", "body": upstream.content})
