"""Gateway replicas in front of one LMS simulator, in one process, for budget tests.

Each replica has what ``app.py`` builds for an app (Budget, LmsHttp, connector, Provisioner)
and all of them share one store, as replicas share Redis. The simulator is reached through
:class:`SlowAsgi` (in-process, with LMS latency), so everything runs on the loop's clock and
a virtual-time loop (``tests/support/virtual_time.py``) can play minutes of a morning rush.
The simulator enforces its vendor's limit (100 calls per sliding minute) on the same clock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from gateway.budget import Budget
from gateway.connectors._http import LmsHttp
from gateway.connectors.damstra import DamstraConnector
from gateway.connectors.litmos import LitmosConnector
from gateway.connectors.skyprep import SkyPrepConnector
from gateway.identity import Identity, Profile
from gateway.observability import Metrics
from gateway.provisioning import Provisioner
from gateway.sandbox._common import RateLimiter
from gateway.sandbox.damstra import DamstraSimulator
from gateway.sandbox.litmos import LitmosSimulator
from gateway.sandbox.skyprep import SkyPrepSimulator
from gateway.settings import (
    AppSettings,
    BudgetSettings,
    DamstraSettings,
    HttpSettings,
    LitmosSettings,
    Secret,
    SkyPrepSettings,
)
from gateway.store.memory import MemoryStore

API_KEY = "rig-api-key-0123456789"
# LMS calls of a new employee's first sign-in, with no teams (the unloaded figure).
FIRST_SIGN_IN_CALLS = {"skyprep": 2, "damstra": 3, "litmos": 2}


class SlowAsgi(httpx.AsyncBaseTransport):
    """The simulator in-process, ``latency`` seconds per answer; counts answers by status.
    ``hang`` makes every request wait forever (a hung LMS). The request's read timeout is
    applied to that wait, as the production transport applies it to a silent LMS."""

    def __init__(self, app: Any, latency: float, statuses: Counter[int]) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self.latency = latency
        self.hang = False
        self.statuses = statuses
        self.timeouts_seen: list[dict[str, float | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = dict(request.extensions.get("timeout", {}))
        self.timeouts_seen.append(timeout)
        try:
            # The read timeout, as the production transport applies it to a silent LMS.
            async with asyncio.timeout(timeout.get("read")):
                if self.hang:
                    await asyncio.Event().wait()
                await asyncio.sleep(self.latency)
        except TimeoutError:
            raise httpx.ReadTimeout("no answer", request=request) from None
        response = await self._inner.handle_async_request(request)
        self.statuses[response.status_code] += 1
        return response


@dataclass
class Replica:
    budget: Budget
    http: LmsHttp
    connector: Any
    provisioner: Provisioner
    transport: SlowAsgi


@dataclass
class Rig:
    kind: str
    simulator: Any
    app: AppSettings
    store: MemoryStore
    replicas: list[Replica]
    metrics: Metrics
    statuses: Counter[int] = field(default_factory=Counter)

    def lms_calls(self) -> int:
        return len(self.simulator.calls)

    def count(self, operation: str) -> int:
        return int(self.simulator.calls.count(operation))

    def set_latency(self, seconds: float) -> None:
        for replica in self.replicas:
            replica.transport.latency = seconds

    def set_hang(self, hang: bool) -> None:
        for replica in self.replicas:
            replica.transport.hang = hang


def identity(n: int) -> Identity:
    return Identity(idp="corp", subject=f"sub-{n}", email=f"employee{n}@example.com")


def profile(n: int) -> Profile:
    return Profile(email=f"employee{n}@example.com", first_name="Ada",
                   last_name=f"Lovelace{n}", username=f"employee{n}@example.com",
                   employee_number=f"E{n}")


def _app(kind: str, budget: BudgetSettings, read_timeout: float) -> tuple[Any, AppSettings]:
    http = HttpSettings(read_timeout=read_timeout, connect_timeout=min(5.0, read_timeout))
    if kind == "skyprep":
        sim: Any = SkyPrepSimulator(API_KEY, "acme.skyprepapp.com")
        return sim, AppSettings(connector="skyprep", idps=("corp",), budget=budget,
                                skyprep=SkyPrepSettings(api_key=Secret(API_KEY),
                                                        acct_key="acme.skyprepapp.com", http=http))
    if kind == "damstra":
        sim = DamstraSimulator(API_KEY, "https://acme.velpic.test")
        return sim, AppSettings(connector="damstra", idps=("corp",), budget=budget,
                                damstra=DamstraSettings(
                                    access_key=Secret(API_KEY),
                                    api_url="https://acme.velpic.test/api/v2",
                                    login_host="acme.velpic.test", http=http))
    sim = LitmosSimulator(API_KEY, login_base_url="https://acme.litmos.com")
    return sim, AppSettings(connector="litmos", idps=("corp",), budget=budget,
                            litmos=LitmosSettings(api_key=Secret(API_KEY),
                                                  login_host="acme.litmos.com", http=http))


CONNECTORS: dict[str, Callable[..., Any]] = {
    "skyprep": SkyPrepConnector, "damstra": DamstraConnector, "litmos": LitmosConnector,
}


def build(
    kind: str,
    *,
    replicas: int = 2,
    latency: float = 0.05,
    read_timeout: float = 15.0,
    lms_limit: int = 100,
    backoff_base: float = 0.2,
    **budget: Any,
) -> Rig:
    """Replicas of app ``kind`` on the running loop's clock (call inside the loop)."""
    loop = asyncio.get_running_loop()
    settings = BudgetSettings(**budget)
    sim, app = _app(kind, settings, read_timeout)
    # The vendor's limit, on the loop's clock (virtual time in these tests).
    sim.limiter = RateLimiter(lms_limit, 60.0, clock=loop.time)
    store = MemoryStore(clock=loop.time)
    metrics = Metrics()
    statuses: Counter[int] = Counter()
    built = []
    for _ in range(replicas):
        transport = SlowAsgi(sim.app, latency, statuses)
        client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(read_timeout, connect=min(5.0, read_timeout)),
        )
        budget_ = Budget(kind, settings, store, clock=loop.time, sleep=asyncio.sleep)
        http = LmsHttp(kind, client, budget_, metrics, backoff_base=backoff_base)
        connector = CONNECTORS[kind](kind, app, http)
        provisioner = Provisioner(kind, app, connector, store, metrics, budget=budget_)
        built.append(Replica(budget_, http, connector, provisioner, transport))
    return Rig(kind, sim, app, store, built, metrics, statuses)
