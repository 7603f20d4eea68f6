"""The morning-rush client: browsers doing complete OIDC sign-ins against several gateway
replicas, waiting on the queue page the way a browser does.

Each virtual browser, for one employee:

* ``GET /login/{app}?idp=demo-oidc`` -> 303 to the IdP -> its page -> ``POST /authorize``
  (choose the employee) -> 303 to ``/auth/demo-oidc/callback`` -> 303 to the LMS link
  (landed), or a page that refreshes itself;
* on the queue page (503) or the "just a moment" page (429) it waits what the page's
  ``<meta http-equiv="refresh">`` says (``Retry-After`` if the page has none) and then loads
  the page's ``url=`` (or reloads the same URL), as a browser does; it counts the pages seen.

A balancer in front of the replicas is played by the client itself: every request to the
gateway goes to the next replica in turn (round robin over all requests, so one sign-in's
hops are spread over both replicas and each depends on the shared store) with the public
``Host`` and an ``X-Forwarded-For`` of its own per employee (uvicorn trusts it from
127.0.0.1), so per-client limits see many browsers, not one.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httpcore

_TXN = re.compile(rb'name="txn" value="([^"]+)"')
_FORM = [(b"content-type", b"application/x-www-form-urlencoded")]
_TIMEOUT = {"timeout": {"connect": 30.0, "read": 60.0, "write": 30.0, "pool": 60.0}}
_REFRESH = re.compile(rb'http-equiv="refresh" content="([0-9]+)(?:; url=([^"]*))?"')
_REDIRECTS = (301, 302, 303, 307)
# A sign-in that needs more hops than this is going round in circles.
MAX_HOPS = 500


@dataclass(frozen=True, slots=True)
class Job:
    """One employee to sign in to ``app`` (whose LMS is ``connector``); ``client`` is the
    address the balancer reports for this browser."""

    app: str
    connector: str
    sub: str
    client: str


@dataclass(slots=True)
class Outcome:
    """How one employee's sign-in went; times are ``time.monotonic()`` seconds."""

    sub: str
    ok: bool
    error: str
    started: float
    ended: float
    queue_pages: int = 0
    busy_pages: int = 0
    requests: int = 0

    @property
    def wait(self) -> float:
        """Seconds from the first request to landing on the LMS (or giving up)."""
        return self.ended - self.started


class Failed(Exception):
    pass


@dataclass
class _Browser:
    jar: dict[str, str] = field(default_factory=dict)
    queue_pages: int = 0
    busy_pages: int = 0
    requests: int = 0


class RushClient:
    """Virtual browsers against ``replicas`` (base URLs) serving ``public`` (the URL the IdP
    sends browsers back to); ``lms`` maps a connector to its simulator's base URL."""

    def __init__(
        self,
        public: str,
        replicas: Sequence[str],
        idp: str,
        lms: dict[str, str],
        concurrency: int,
    ) -> None:
        self.public = public.rstrip("/")
        self.host = urlsplit(self.public).netloc.encode()
        self.replicas = [r.rstrip("/") for r in replicas]
        self.idp = idp.rstrip("/")
        self.lms = lms
        self._turn = itertools.count()
        self.pool = httpcore.AsyncConnectionPool(
            max_connections=max(8, concurrency * 3),
            max_keepalive_connections=max(8, concurrency * 3),
        )

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def _send(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> httpcore.Response:
        try:
            return await self.pool.request(
                method, url, headers=headers, content=body, extensions=_TIMEOUT
            )
        except (httpcore.ReadError, httpcore.WriteError, httpcore.RemoteProtocolError):
            # A kept-alive connection closed by the server as it was reused: browsers retry.
            return await self.pool.request(
                method, url, headers=headers, content=body, extensions=_TIMEOUT
            )

    def _gateway_path(self, location: str) -> str | None:
        """The path of a gateway URL (absolute on the public URL, or relative), else None."""
        if location.startswith("/") and not location.startswith("//"):
            return location
        if location.startswith(self.public + "/"):
            return location[len(self.public) :]
        return None

    async def _gateway(
        self, browser: _Browser, job: Job, method: str, path: str, body: bytes | None = None
    ) -> httpcore.Response:
        replica = self.replicas[next(self._turn) % len(self.replicas)]
        headers = [(b"host", self.host), (b"x-forwarded-for", job.client.encode())]
        if body is not None:
            headers += _FORM
        if browser.jar:
            cookie = "; ".join(f"{k}={v}" for k, v in browser.jar.items())
            headers.append((b"cookie", cookie.encode()))
        browser.requests += 1
        response = await self._send(method, replica + path, headers, body)
        for name, value in response.headers:
            if name.lower() != b"set-cookie":
                continue
            pair, _, attrs = value.decode().partition(";")
            key, _, val = pair.partition("=")
            if "max-age=0" in attrs.lower() or val in ("", '""'):
                browser.jar.pop(key.strip(), None)
            else:
                browser.jar[key.strip()] = val
        return response

    async def _idp(self, browser: _Browser, location: str, job: Job) -> str:
        """Choose ``job.sub`` on the IdP's page; returns the gateway path it sends us to."""
        browser.requests += 2
        page = await self._send("GET", location, [], None)
        txn = _TXN.search(page.content)
        if page.status != 200 or txn is None:
            raise Failed(f"idp-page:{page.status}")
        choice = urlencode({"txn": html.unescape(txn.group(1).decode()), "sub": job.sub})
        answer = await self._send("POST", f"{self.idp}/authorize", list(_FORM), choice.encode())
        callback = dict(answer.headers).get(b"location", b"").decode()
        path = self._gateway_path(callback)
        if answer.status != 303 or path is None:
            raise Failed(f"idp-choose:{answer.status}")
        return path

    async def sign_in(self, job: Job, give_up: float) -> Outcome:
        """Sign ``job``'s employee in, following queue pages until landed or ``give_up``
        (a ``time.monotonic()`` instant)."""
        browser = _Browser()
        started = time.monotonic()
        error = ""
        try:
            await self._follow(browser, job, give_up)
        except Failed as exc:
            error = str(exc)
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            error = type(exc).__name__
        return Outcome(
            job.sub,
            not error,
            error,
            started,
            time.monotonic(),
            browser.queue_pages,
            browser.busy_pages,
            browser.requests,
        )

    async def _follow(self, browser: _Browser, job: Job, give_up: float) -> None:
        lms = self.lms[job.connector] + "/"
        path, step = f"/login/{job.app}?idp=demo-oidc", "login"
        for _ in range(MAX_HOPS):
            answer = await self._gateway(browser, job, "GET", path)
            location = dict((k.lower(), v) for k, v in answer.headers).get(b"location", b"")
            target = location.decode()
            if answer.status in _REDIRECTS:
                if target.startswith(lms):
                    return  # landed
                if target.startswith(self.idp + "/"):
                    path, step = await self._idp(browser, target, job), "callback"
                    continue
                next_path = self._gateway_path(target)
                if next_path is None:
                    raise Failed(f"{step}:redirect-elsewhere")
                path, step = next_path, "redirect"
                continue
            refresh = _REFRESH.search(answer.content)
            if answer.status not in (429, 503) or refresh is None:
                raise Failed(f"{step}:{answer.status}")
            # The queue (503) or "just a moment" (429) page: wait as it says, then carry on.
            if answer.status == 503:
                browser.queue_pages += 1
            else:
                browser.busy_pages += 1
            delay = float(refresh.group(1))
            if time.monotonic() + delay > give_up:
                raise Failed(f"{step}:gave-up-in-queue")
            await asyncio.sleep(delay)
            if refresh.group(2):
                resume = self._gateway_path(html.unescape(refresh.group(2).decode()))
                if resume is None:
                    raise Failed(f"{step}:refresh-elsewhere")
                path = resume
            step = "resume"
        raise Failed(f"{step}:too-many-hops")

    async def run(self, jobs: Sequence[Job], concurrency: int, give_up: float) -> list[Outcome]:
        """Sign in every job, ``concurrency`` browsers at a time (each takes the next
        employee as soon as its current one has landed or failed)."""
        outcomes: list[Outcome] = []
        queue = iter(jobs)

        async def browser() -> None:
            for job in queue:
                outcomes.append(await self.sign_in(job, give_up))

        await asyncio.gather(*(browser() for _ in range(min(concurrency, len(jobs)))))
        return outcomes
