"""Morning-rush benchmark (issue 11): a burst of first sign-ins, then of returning sign-ins,
per connector, against LMS simulators that enforce their per-minute limit.

    python -m tests.bench.rush [--quick] [--n 300] [--concurrency 30]
        [--calls-per-minute 100] [--connectors skyprep,damstra,litmos]
        [--lms-latency-ms 0] [--sequential] [--json PATH]

What runs, all on 127.0.0.1 (``tests/bench/stack.py``): the demo IdPs and the three LMS
simulators (one process each, limits set to ``--calls-per-minute`` per sliding minute), a
real redis-server, and TWO gateway processes on it with the same config (each app's budget
``--calls-per-minute``). The client (``rush_client.py``) plays the balancer, alternating
replicas per request, and the browsers, which wait on the queue page as told.

Per connector (connectors run side by side unless ``--sequential``; each has its own app,
budget and simulator): two employees sign in one at a time (the unloaded LMS calls of a
first and of a returning sign-in), then, each time after the budget has refilled, N new
employees in a burst (``--concurrency`` browsers at a time) and the same N again with fresh
browsers (returning: the LMS knows them, the IdP round trip is done again).

The floor of a burst is the least time the gateway's budget allows for the calls it needs:
``(N x unloaded calls - burst) / refill per second``, with the gateway's token bucket shape
(burst 10 % of the budget, the rest refilled over the minute; ``gateway/budget.py``) and a
full bucket at the start. Target: the last employee lands within 10 % of it, every call
spent lands someone (calls per landed sign-in = unloaded), no 429/503 from the LMS.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.budget import Budget
from gateway.settings import AppSettings, BudgetSettings
from gateway.store.memory import MemoryStore
from tests.bench.report import machine
from tests.bench.rush_client import Job, Outcome, RushClient
from tests.bench.rush_report import burst_row, table, targets
from tests.bench.stack import CONNECTORS, BenchStack


@dataclass(frozen=True)
class Plan:
    """What to run."""

    n: int = 300
    concurrency: int = 30
    calls_per_minute: int = 100
    connectors: tuple[str, ...] = CONNECTORS
    lms_latency_ms: float = 0.0
    sequential: bool = False
    quick: bool = False
    # The apps' ``reuse_links`` (None: the gateway's default).
    reuse_links: str | None = None


QUICK = Plan(n=50, concurrency=20, calls_per_minute=600, quick=True)


def repeat_click_seconds() -> int:
    """How long the gateway hands a just-minted link to a repeat sign-in by default: a
    returning burst starts later than that, so it measures yesterday's employees, not
    double clicks."""
    default = {f.name: f.default for f in dataclasses.fields(AppSettings)}
    value = default["repeat_click_seconds"]
    assert isinstance(value, int)
    return value


def bucket_shape(calls_per_minute: int) -> tuple[float, float]:
    """(burst tokens, refill per second) of the gateway's budget for ``calls_per_minute``,
    read from :class:`gateway.budget.Budget` itself so the floor follows the code."""
    budget = Budget("floor", BudgetSettings(calls_per_minute=calls_per_minute), MemoryStore())
    return budget.burst, budget.refill_per_minute / 60.0


def floor_seconds(calls: float, calls_per_minute: int) -> float:
    """Least seconds in which a full bucket serves ``calls`` calls."""
    burst, rate = bucket_shape(calls_per_minute)
    return max(0.0, (calls - burst) / rate)


class Rush:
    """The phases of one run against a started :class:`BenchStack`."""

    def __init__(self, stack: BenchStack, plan: Plan) -> None:
        self.stack = stack
        self.plan = plan
        self._subs = itertools.count(1)
        self.client = RushClient(
            stack.urls["gateway"],
            [stack.urls["gateway"], stack.urls["gateway-2"]],
            stack.urls["oidc"],
            {c: stack.urls[c] for c in CONNECTORS},
            plan.concurrency * len(plan.connectors),
        )

    def jobs(self, connector: str, n: int) -> list[Job]:
        """``n`` employees the LMS has never seen, each behind its own client address."""
        jobs = []
        for _ in range(n):
            i = next(self._subs)
            client = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            jobs.append(Job(connector, connector, f"bench-{i}", client))
        return jobs

    async def _stats(self, connector: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.stack.stats, connector)

    async def _pause(self) -> None:
        """Wait until the app's bucket is full again (it was drained at most to empty) and
        the links just minted are no longer handed out as repeat clicks."""
        burst, rate = bucket_shape(self.plan.calls_per_minute)
        await asyncio.sleep(max(burst / rate, repeat_click_seconds()) + 1.0)

    async def _measure(
        self, connector: str, jobs: Sequence[Job], concurrency: int, give_up_s: float
    ) -> tuple[list[Outcome], float, int, int]:
        """Run ``jobs``; returns outcomes, the start time and the LMS calls and 429/503
        answers counted by the simulator meanwhile."""
        before = await self._stats(connector)
        started = time.monotonic()
        outcomes = await self.client.run(jobs, concurrency, started + give_up_s)
        after = await self._stats(connector)
        calls = after["calls"] - before["calls"]
        limited = sum(
            after["statuses"].get(s, 0) - before["statuses"].get(s, 0) for s in ("429", "503")
        )
        return outcomes, started, calls, limited

    async def connector(self, connector: str) -> list[dict[str, Any]]:
        """Calibrate, then the first and the returning burst of one connector."""
        first_costs, again_costs = [], []
        calibration = self.jobs(connector, 2)
        for job in calibration:
            _, _, calls, _ = await self._measure(connector, [job], 1, 60)
            first_costs.append(calls)
        await self._pause()
        for job in calibration:
            _, _, calls, _ = await self._measure(connector, [job], 1, 60)
            again_costs.append(calls)
        # The least of two: a first call on a cold connection pool or token is not the rule.
        unloaded = {"first": min(first_costs), "returning": min(again_costs)}
        employees = self.jobs(connector, self.plan.n)
        rows = []
        for burst in ("first", "returning"):
            await self._pause()
            floor = floor_seconds(self.plan.n * unloaded[burst], self.plan.calls_per_minute)
            outcomes, started, calls, limited = await self._measure(
                connector, employees, self.plan.concurrency, max(120.0, 3 * floor + 60)
            )
            rows.append(burst_row(connector, burst, outcomes, started, calls, limited,
                                  unloaded[burst], floor))  # fmt: skip
        return rows

    async def run(self) -> list[dict[str, Any]]:
        try:
            if self.plan.sequential:
                rows = []
                for connector in self.plan.connectors:
                    rows += await self.connector(connector)
                return rows
            parts = await asyncio.gather(*(self.connector(c) for c in self.plan.connectors))
            return [row for part in parts for row in part]
        finally:
            await self.client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.rush",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke run (N=50, 600/min)")
    parser.add_argument("--n", type=int, help="employees per burst (default 300)")
    parser.add_argument("--concurrency", type=int, help="browsers per connector (default 30)")
    parser.add_argument("--calls-per-minute", type=int, help="LMS limit and budget (100)")
    parser.add_argument("--connectors", help="comma-separated (default all three)")
    parser.add_argument("--lms-latency-ms", type=float, help="added to every LMS answer")
    parser.add_argument("--sequential", action="store_true", help="one connector at a time")
    parser.add_argument(
        "--reuse-links",
        choices=("repeat_clicks", "until_expiry", "never"),
        help="set every app's reuse_links (default: the gateway's default)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the report here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    if args.n is not None:
        plan = replace(plan, n=args.n)
    if args.concurrency is not None:
        plan = replace(plan, concurrency=args.concurrency)
    if args.calls_per_minute is not None:
        plan = replace(plan, calls_per_minute=args.calls_per_minute)
    if args.lms_latency_ms is not None:
        plan = replace(plan, lms_latency_ms=args.lms_latency_ms)
    if args.connectors:
        chosen = tuple(c.strip() for c in args.connectors.split(",") if c.strip())
        unknown = sorted(set(chosen) - set(CONNECTORS))
        if unknown or not chosen:
            parser.error(f"--connectors: choose from {', '.join(CONNECTORS)}")
        plan = replace(plan, connectors=chosen)
    plan = replace(plan, sequential=args.sequential, reuse_links=args.reuse_links)
    if plan.n < 1 or plan.concurrency < 1 or plan.calls_per_minute < 1:
        parser.error("--n, --concurrency and --calls-per-minute must be positive")

    overrides = {"reuse_links": plan.reuse_links} if plan.reuse_links else {}
    stack = BenchStack(workers=1, store="redis", replicas=1, gateways=2, app_overrides=overrides)
    meta = {
        **machine(),
        "mode": "quick" if plan.quick else "full",
        "gateways": 2,
        "store": "redis",
        "n": plan.n,
        "concurrency": plan.concurrency,
        "calls_per_minute": plan.calls_per_minute,
        "connectors": list(plan.connectors),
        "lms_latency_ms": plan.lms_latency_ms,
        "sequential": plan.sequential,
        "reuse_links": plan.reuse_links or "default",
        "bucket": dict(zip(("burst", "refill_per_s"), bucket_shape(plan.calls_per_minute),
                           strict=True)),
    }  # fmt: skip
    started = time.monotonic()
    stack.start(calls_per_minute=plan.calls_per_minute)
    try:
        stack.set_rate_limits(plan.calls_per_minute)
        stack.set_latency(0, plan.lms_latency_ms)
        rows = asyncio.run(Rush(stack, plan).run())
        report: dict[str, Any] = {"meta": meta, "rows": rows, "targets": targets(rows)}
        report["gateway_failures"] = stack.gateway_failures(by_code=True)
    except BaseException:
        print(stack.log_tail("gateway"), file=sys.stderr)
        raise
    finally:
        stack.stop()
    report["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    print(table(report))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
