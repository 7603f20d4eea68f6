"""Morning rush without livelock (issue 11 items 1, 2 and 7), in virtual time.

Two replicas share one store and one LMS simulator that enforces 100 calls per sliding minute,
like the real LMSs. Employees follow the queue page as a browser does (come back after
``Retry-After``). Before issue 11, Damstra's 3-call first sign-ins livelocked here: every
sign-in spent its ``search`` and went to the queue page before its ``create``.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import pytest

from gateway.errors import BudgetExhausted, EmployeeBusy
from tests.support.lms_rig import FIRST_SIGN_IN_CALLS, Rig, build, identity, profile
from tests.support.virtual_time import run


@dataclass
class Rush:
    waits: list[float] = field(default_factory=list)
    queue_pages: int = 0
    saw_queue: set[int] = field(default_factory=set)
    busy_pages: int = 0
    finished_at: float = 0.0


async def rush(rig: Rig, employees: range, concurrency: int) -> Rush:
    """Every employee signs in once, ``concurrency`` browsers at a time, alternating replicas,
    following the queue page until they land."""
    loop = asyncio.get_running_loop()
    result = Rush()
    gate = asyncio.Semaphore(concurrency)

    async def employee(n: int) -> None:
        async with gate:
            started = loop.time()
            replica = rig.replicas[n % len(rig.replicas)].provisioner
            while True:
                try:
                    await replica.sign_in(identity(n), profile(n), None)
                except EmployeeBusy:
                    result.busy_pages += 1
                    raise
                except BudgetExhausted as exc:
                    result.queue_pages += 1
                    result.saw_queue.add(n)
                    assert exc.retry_after >= 1.0
                    await asyncio.sleep(exc.retry_after)
                    continue
                result.waits.append(loop.time() - started)
                return

    started = loop.time()
    await asyncio.gather(*(employee(n) for n in employees))
    result.finished_at = loop.time() - started
    return result


@pytest.mark.parametrize("kind", ["damstra", "litmos", "skyprep"])
def test_a_burst_of_first_sign_ins_lands_everyone_at_the_unloaded_cost(kind: str) -> None:
    """60 new employees, 30 at a time, 100 calls/min: every LMS call spent leads to a landing
    (calls per landed sign-in = the unloaded figure), the LMS never answers 429/503, and the
    rush ends close to its floor (calls needed / budget)."""

    async def scenario() -> tuple[Rig, Rush]:
        rig = build(kind, calls_per_minute=100)
        return rig, await rush(rig, range(60), concurrency=30)

    rig, result = run(scenario())
    per_sign_in = FIRST_SIGN_IN_CALLS[kind]
    assert len(result.waits) == 60
    assert len(rig.simulator.users) == 60
    assert rig.lms_calls() == 60 * per_sign_in  # nothing spent on sign-ins that queued
    assert rig.statuses[429] == rig.statuses[503] == 0
    budget = rig.replicas[0].budget
    floor = (60 * per_sign_in - budget.burst) / (budget.refill_per_minute / 60.0)
    print(f"{kind}: {60 * per_sign_in} calls, last landed after {result.finished_at:.1f}s "
          f"(floor {floor:.1f}s), {result.queue_pages} queue pages for "
          f"{len(result.saw_queue)} employees, max wait {max(result.waits):.1f}s")
    assert result.finished_at <= floor * 1.10 + 5.0
    assert result.busy_pages == 0


def test_unspent_reservations_are_given_back() -> None:
    """Damstra reserves 3 calls for a first sign-in; an employee whose account already exists
    needs 2 (search, link), and the third goes back to the shared bucket at once."""

    async def scenario() -> tuple[Rig, float, float]:
        rig = build("damstra", calls_per_minute=100)
        for n in range(5):
            rig.simulator.add_user("Ada", f"Lovelace{n}", f"employee{n}@example.com")
        replica = rig.replicas[0]
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(5):
            await replica.provisioner.sign_in(identity(n), profile(n), None)
        refilled = (loop.time() - started) * replica.budget.refill_per_minute / 60.0
        await replica.budget.acquire()  # see the bucket's level after the refunds
        return rig, replica.budget.burst + refilled, replica.budget.tokens_left

    rig, before, after = run(scenario())
    assert rig.lms_calls() == 5 * 2
    # Only the calls spent (and the one just acquired) are gone from the shared bucket.
    assert after == pytest.approx(before - 5 * 2 - 1, abs=0.05)
    refunded = rig.metrics.registry.get_sample_value(
        "gateway_budget_refunded_calls_total", {"app": "damstra"})
    assert refunded == 5.0


def test_one_looping_employee_cannot_starve_the_others() -> None:
    """One session clicks /login/app again and again (a returning employee: one call each)
    for two minutes while 40 colleagues sign in for the first time, one every 3 s. The
    looping employee is held to their share and gets the short "just a moment" answer; no
    colleague ever sees the queue page."""

    async def scenario() -> tuple[Rig, int, int, list[float], Rush]:
        rig = build("damstra", calls_per_minute=100)
        loop = asyncio.get_running_loop()
        looper = rig.replicas[0].provisioner
        await looper.sign_in(identity(999), profile(999), None)  # known from now on
        landed, busy, retry_afters = 0, 0, []
        stop = loop.time() + 120.0

        async def loop_clicks() -> None:
            nonlocal landed, busy
            while loop.time() < stop:
                try:
                    await looper.sign_in(identity(999), profile(999), None)
                    landed += 1
                except EmployeeBusy as exc:
                    busy += 1
                    retry_afters.append(exc.retry_after)
                    await asyncio.sleep(0.2)  # a script, not a person: ignores Retry-After

        async def colleagues() -> Rush:
            # One new colleague every 3 s: 60 calls a minute, well within the budget, which
            # the looping session alone would otherwise spend (a click costs one call).
            arrivals = []
            for n in range(40):
                await asyncio.sleep(3.0)
                arrivals.append(asyncio.create_task(rush(rig, range(n, n + 1), 1)))
            results = await asyncio.gather(*arrivals)
            total = Rush()
            for one in results:
                total.waits += one.waits
                total.queue_pages += one.queue_pages
                total.busy_pages += one.busy_pages
            return total

        _, others = await asyncio.gather(loop_clicks(), colleagues())
        return rig, landed, busy, retry_afters, others

    rig, landed, busy, retry_afters, others = run(scenario())
    assert len(others.waits) == 40
    assert others.queue_pages == 0 and others.busy_pages == 0
    # The share: 6 calls up front, then 6 a minute; two minutes of clicking buy ~18 links.
    assert 12 <= landed <= 19
    assert busy > 100 and all(1.0 <= r <= 10.0 for r in retry_afters)
    assert rig.statuses[429] == 0
    busy_metric = rig.metrics.registry.get_sample_value(
        "gateway_budget_employee_busy_total", {"app": "damstra"})
    assert busy_metric == busy


def test_the_queue_page_says_how_many_calls_are_ahead() -> None:
    """A sign-in refused by the budget learns how many reserved calls are ahead of it in the
    shared bucket and when to come back for its own."""

    async def scenario() -> tuple[BudgetExhausted, float]:
        rig = build("damstra", calls_per_minute=60, max_wait_seconds=5.0, latency=30.0)
        budget = rig.replicas[0].budget
        tasks = [asyncio.create_task(rig.replicas[n % 2].provisioner.sign_in(
            identity(n), profile(n), None)) for n in range(2)]
        await asyncio.sleep(0.01)  # both reserved their 3 calls: 6 burst tokens gone
        tasks += [asyncio.create_task(rig.replicas[0].provisioner.sign_in(
            identity(2), profile(2), None))]  # reserves 3.3 s ahead (within 5 s)
        await asyncio.sleep(0.01)
        try:
            await rig.replicas[1].provisioner.sign_in(identity(3), profile(3), None)
        except BudgetExhausted as exc:
            refused = exc
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return refused, budget.refill_per_minute / 60.0

    refused, rate = run(scenario())
    assert refused.position == 3  # the third sign-in's 3 calls, reserved below zero
    # Our 3 calls (now held under a queue ticket) mature once those 3 and ours have refilled,
    # (3 + 3) / rate; the page comes back max_wait_seconds before that, just in time.
    assert refused.retry_after == pytest.approx(6 / rate - 5.0, rel=0.02)
    assert math.isfinite(refused.retry_after)
