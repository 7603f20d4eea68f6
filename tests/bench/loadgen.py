"""The load generator: virtual employees doing complete sign-ins over HTTP, as a browser would.

* OIDC: ``GET /login/{app}?idp=demo-oidc`` (303) -> IdP ``/authorize`` (choose page) ->
  ``POST /authorize`` (303 with code) -> ``GET /auth/demo-oidc/callback`` (303 to the LMS link).
* SAML: ``GET /login/{app}?idp=demo-saml`` (303) -> IdP ``/sso`` (choose page) -> ``POST /sso``
  (auto-post page) -> ``POST /auth/demo-saml/acs`` (303 to the LMS link).
* click: the "second click within the session": ``GET /login/{app}`` with the session cookie
  (303 to the LMS link).

A sign-in succeeds when the gateway's last answer is a 303 to the app's LMS; the LMS page
itself is not fetched (that is the LMS's work, not the gateway's). httpcore is used directly
(no cookie jar, no URL merging) to keep the generator's own CPU per request low; each virtual
employee keeps its gateway cookies in a dict.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import re
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any
from urllib.parse import urlencode

import httpcore

_TXN = re.compile(rb'name="txn" value="([^"]+)"')
_SAML = re.compile(rb'name="SAMLResponse" value="([^"]+)"')
_RELAY = re.compile(rb'name="RelayState" value="([^"]*)"')
_FORM = [(b"content-type", b"application/x-www-form-urlencoded")]
_TIMEOUT = {"timeout": {"connect": 30.0, "read": 60.0, "write": 30.0, "pool": 60.0}}
VUS_PER_POOL = 16


@dataclass(frozen=True, slots=True)
class Job:
    """One sign-in to do: ``kind`` is oidc, saml or click; ``session`` is the gateway session
    cookie to send (click only)."""

    kind: str
    app: str
    connector: str
    sub: str
    session: str | None = None


@dataclass(slots=True)
class Sample:
    """What one sign-in cost, in seconds (``server``/``upstream`` from the gateway's
    instrumentation headers; ``gw_client`` is the gateway hops as the client saw them)."""

    kind: str
    app: str
    ok: bool
    error: str
    wall: float
    gw_client: float
    server: float
    upstream: float
    peer: float
    sub: str
    session: str | None = None
    retries: int = 0

    @property
    def own(self) -> float:
        """Gateway time minus the IdP's and LMS's reported service time."""
        return max(0.0, self.server - self.peer)

    @property
    def own_excluding_calls(self) -> float:
        """Gateway time minus the whole of its upstream calls (client work included)."""
        return max(0.0, self.server - self.upstream)


class Failed(Exception):
    pass


@dataclass
class _Vu:
    jar: dict[str, str] = field(default_factory=dict)
    gw_client: float = 0.0
    server: float = 0.0
    upstream: float = 0.0
    peer: float = 0.0
    retries: int = 0


class Driver:
    """Runs jobs against one stack (``urls`` as in :class:`tests.bench.stack.BenchStack`)."""

    def __init__(self, urls: dict[str, str], concurrency: int) -> None:
        self.urls = urls
        self.gw = urls["gateway"]
        self.pools = [
            httpcore.AsyncConnectionPool(
                max_connections=VUS_PER_POOL * 3, max_keepalive_connections=VUS_PER_POOL * 3
            )
            for _ in range(max(1, -(-concurrency // VUS_PER_POOL)))
        ]

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()

    async def _send(
        self,
        pool: httpcore.AsyncConnectionPool,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        vu: _Vu | None = None,
    ) -> httpcore.Response:
        try:
            return await pool.request(
                method, url, headers=headers or [], content=body, extensions=_TIMEOUT
            )
        except (httpcore.ReadError, httpcore.WriteError, httpcore.RemoteProtocolError):
            # A kept-alive connection the server closed (idle timeout) just as it was reused:
            # browsers retry such a request once on a new connection, and so do we (counted).
            if vu is not None:
                vu.retries += 1
            return await pool.request(
                method, url, headers=headers or [], content=body, extensions=_TIMEOUT
            )

    async def _gateway(
        self,
        pool: httpcore.AsyncConnectionPool,
        vu: _Vu,
        method: str,
        url: str,
        body: bytes | None = None,
    ) -> tuple[int, str]:
        headers = list(_FORM) if body is not None else []
        if vu.jar:
            cookie = "; ".join(f"{k}={v}" for k, v in vu.jar.items())
            headers.append((b"cookie", cookie.encode()))
        started = time.perf_counter()
        response = await self._send(pool, method, url, headers, body, vu)
        vu.gw_client += time.perf_counter() - started
        location = ""
        for name, value in response.headers:
            name = name.lower()
            if name == b"location":
                location = value.decode()
            elif name == b"set-cookie":
                text = value.decode()
                pair, _, attrs = text.partition(";")
                key, _, val = pair.partition("=")
                if "max-age=0" in attrs.lower() or val in ("", '""'):
                    vu.jar.pop(key.strip(), None)
                else:
                    vu.jar[key.strip()] = val
            elif name == b"x-bench-server-us":
                vu.server += int(value) / 1e6
            elif name == b"x-bench-upstream-us":
                vu.upstream += int(value) / 1e6
            elif name == b"x-bench-peer-us":
                vu.peer += int(value) / 1e6
        return response.status, location

    def _expect_lms(self, status: int, location: str, job: Job, step: str) -> None:
        if status != 303 or not location.startswith(self.urls[job.connector] + "/"):
            raise Failed(f"{step}:{status}")

    async def sign_in(self, pool: httpcore.AsyncConnectionPool, job: Job) -> Sample:
        vu = _Vu()
        if job.session is not None:
            vu.jar["gw_session"] = job.session
        started = time.perf_counter()
        error = ""
        try:
            if job.kind == "click":
                login = f"{self.gw}/login/{job.app}"
                status, location = await self._gateway(pool, vu, "GET", login)
                self._expect_lms(status, location, job, "click")
            else:
                await self._through_idp(pool, vu, job)
        except Failed as exc:
            error = str(exc)
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            error = type(exc).__name__
        return Sample(
            job.kind,
            job.app,
            not error,
            error,
            time.perf_counter() - started,
            vu.gw_client,
            vu.server,
            vu.upstream,
            vu.peer,
            job.sub,
            vu.jar.get("gw_session"),
            vu.retries,
        )

    async def _through_idp(self, pool: httpcore.AsyncConnectionPool, vu: _Vu, job: Job) -> None:
        idp = "demo-oidc" if job.kind == "oidc" else "demo-saml"
        idp_url = self.urls["oidc" if job.kind == "oidc" else "saml"]
        status, location = await self._gateway(
            pool, vu, "GET", f"{self.gw}/login/{job.app}?idp={idp}"
        )
        if status != 303 or not location.startswith(idp_url + "/"):
            raise Failed(f"login:{status}")
        page = await self._send(pool, "GET", location, vu=vu)
        txn = _TXN.search(page.content)
        if page.status != 200 or txn is None:
            raise Failed(f"idp-page:{page.status}")
        choice = urlencode({"txn": html.unescape(txn.group(1).decode()), "sub": job.sub}).encode()
        if job.kind == "oidc":
            answer = await self._send(pool, "POST", f"{idp_url}/authorize", _FORM, choice, vu)
            callback = dict(answer.headers).get(b"location", b"").decode()
            if answer.status != 303 or not callback.startswith(self.gw + "/"):
                raise Failed(f"idp-choose:{answer.status}")
            status, location = await self._gateway(pool, vu, "GET", callback)
            self._expect_lms(status, location, job, "callback")
            return
        answer = await self._send(pool, "POST", f"{idp_url}/sso", _FORM, choice, vu)
        saml, relay = _SAML.search(answer.content), _RELAY.search(answer.content)
        if answer.status != 200 or saml is None:
            raise Failed(f"idp-choose:{answer.status}")
        form = {"SAMLResponse": html.unescape(saml.group(1).decode())}
        if relay is not None:
            form["RelayState"] = html.unescape(relay.group(1).decode())
        status, location = await self._gateway(
            pool, vu, "POST", f"{self.gw}/auth/demo-saml/acs", urlencode(form).encode()
        )
        self._expect_lms(status, location, job, "acs")

    async def run(
        self, jobs: Sequence[Job], concurrency: int, duration: float | None = None
    ) -> list[Sample]:
        """Run ``jobs`` with ``concurrency`` virtual employees: each job once, or, with
        ``duration``, round and round until that many seconds have passed."""
        samples: list[Sample] = []
        counter = itertools.count()
        deadline = None if duration is None else time.perf_counter() + duration

        async def vu(index: int) -> None:
            pool = self.pools[index // VUS_PER_POOL]
            while True:
                i = next(counter)
                if deadline is None and i >= len(jobs):
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                samples.append(await self.sign_in(pool, jobs[i % len(jobs)]))

        vus = concurrency if deadline is not None else min(concurrency, len(jobs))
        await asyncio.gather(*(vu(i) for i in range(vus)))
        return samples


async def _drive_async(
    urls: dict[str, str],
    jobs: Sequence[Job],
    concurrency: int,
    duration: float | None,
    start_at: float,
) -> tuple[list[Sample], float, float]:
    driver = Driver(urls, concurrency)
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        begun = time.time()
        samples = await driver.run(jobs, concurrency, duration)
        return samples, begun, time.time()
    finally:
        await driver.aclose()


def _drive_proc(args: tuple[Any, ...]) -> tuple[list[Sample], float, float]:
    return asyncio.run(_drive_async(*args))


def drive(
    urls: dict[str, str],
    jobs: Sequence[Job],
    concurrency: int,
    *,
    duration: float | None = None,
    procs: int = 1,
) -> tuple[list[Sample], float]:
    """Run ``jobs`` from ``procs`` generator processes; returns the samples and the wall
    time from the first start to the last finish."""
    if procs <= 1:
        samples, begun, ended = asyncio.run(
            _drive_async(urls, jobs, concurrency, duration, time.time())
        )
        return samples, ended - begun
    share = [list(jobs[i::procs]) for i in range(procs)]
    conc = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    start_at = time.time() + 2.0  # every process imported and ready before anyone starts
    with ProcessPoolExecutor(procs, mp_context=get_context("spawn")) as pool:
        results = list(
            pool.map(
                _drive_proc,
                [(urls, share[i], conc[i], duration, start_at) for i in range(procs) if share[i]],
            )
        )
    samples = [s for r in results for s in r[0]]
    return samples, max(r[2] for r in results) - min(r[1] for r in results)
