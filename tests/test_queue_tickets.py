"""The queue keeps each employee's place (issue 11 item 7), in virtual time.

Before queue tickets the queue was a lottery: a queued browser came back after
``Retry-After`` and a newcomer whose reservation happened to fit in ``max_wait_seconds`` had
already taken the slot (h11c's benchmark: Damstra p95 wait 294 s, 2,568 queue pages for 83
employees). Now a queued sign-in's calls stay reserved under a ticket in the store, and the
employee's next sign-in, on any replica, claims them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from gateway.budget import Budget
from gateway.call_context import CallClass, CallContext
from gateway.errors import BudgetExhausted, EmployeeBusy
from gateway.queue_ticket import ticket_key
from gateway.settings import BudgetSettings
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.lms_rig import FIRST_SIGN_IN_CALLS, Rig, build, identity, profile
from tests.support.redis_server import redis_url  # noqa: F401
from tests.support.virtual_time import run


@dataclass
class Line:
    arrived: dict[int, float] = field(default_factory=dict)
    landed: dict[int, float] = field(default_factory=dict)
    pages: dict[int, int] = field(default_factory=dict)


async def arrivals(rig: Rig, count: int, every: float, *, gone: frozenset[int] = frozenset(),
                   late: dict[int, float] | None = None) -> Line:
    """``count`` new employees, one every ``every`` seconds; each follows the queue page as a
    browser does (back after ``Retry-After``), each visit on the next replica in turn (a
    balancer without sticky sessions). Employees in ``gone`` close the tab on the first queue
    page; ``late[n]`` seconds are added to employee n's first wait (a slow page load)."""
    loop = asyncio.get_running_loop()
    line = Line()
    late = late or {}

    async def employee(n: int) -> None:
        line.arrived[n] = loop.time()
        visit = n
        while True:
            provisioner = rig.replicas[visit % len(rig.replicas)].provisioner
            visit += 1
            try:
                await provisioner.sign_in(identity(n), profile(n), None)
            except BudgetExhausted as exc:
                assert not isinstance(exc, EmployeeBusy)
                line.pages[n] = line.pages.get(n, 0) + 1
                if n in gone:
                    return
                await asyncio.sleep(exc.retry_after + late.pop(n, 0.0))
                continue
            line.landed[n] = loop.time()
            return

    tasks = []
    for n in range(count):
        tasks.append(asyncio.create_task(employee(n)))
        await asyncio.sleep(every)
    await asyncio.gather(*tasks)
    return line


@pytest.mark.parametrize("kind", ["damstra", "litmos"])
def test_a_queue_is_a_line_first_come_first_served(kind: str) -> None:
    """80 new employees arrive one every 0.5 s, faster than the budget serves them (a Damstra
    first sign-in costs 3 calls: 2 s of budget). Nobody is overtaken by a later arrival, each
    waits no longer than the calls ahead of them in line take to refill, a queued browser sees
    the queue page once, and every call spent lands someone, with no 429 from the LMS."""

    async def scenario() -> tuple[Rig, Line, float]:
        rig = build(kind, calls_per_minute=100)
        started = asyncio.get_running_loop().time()
        return rig, await arrivals(rig, 80, 0.5), started

    rig, line, started = run(scenario())
    calls = FIRST_SIGN_IN_CALLS[kind]
    budget = rig.replicas[0].budget
    rate = budget.refill_per_minute / 60.0
    assert len(line.landed) == 80
    order = sorted(line.landed, key=line.landed.__getitem__)
    assert order == list(range(80))  # FIFO: landed in the order they arrived
    waits = [line.landed[n] - line.arrived[n] for n in range(80)]
    # The line's floor: employee n lands once the calls of everyone up to n have refilled
    # (less the burst), plus the LMS answering its calls (latency 50 ms each).
    for n in range(80):
        floor = max(0.0, ((n + 1) * calls - budget.burst) / rate) - (line.arrived[n] - started)
        assert waits[n] <= max(floor, 0.0) + calls * 0.05 + 0.5, n
    queued = [n for n in range(80) if line.pages.get(n)]
    assert len(queued) > 50  # the burst did queue most of them
    assert max(line.pages.values()) == 1  # ... and each saw the queue page once
    assert rig.lms_calls() == 80 * calls
    assert rig.statuses[429] == rig.statuses[503] == 0
    print(f"{kind}: max wait {max(waits):.1f}s, {sum(line.pages.values())} queue pages for "
          f"{len(queued)} employees, last landed {max(line.landed.values()) - started:.1f}s")


def test_a_browser_that_comes_back_a_little_late_keeps_its_place_and_one_that_left_costs_little(
) -> None:
    """Employee 10 closes the tab on the queue page: their ticket's calls mature unused, the
    ticket disappears GRACE seconds later, and everyone behind still lands in order. Employee
    20's page loads 5 s late (within GRACE): they still land before employee 21."""

    async def scenario() -> tuple[Rig, Line, bytes | None, bytes | None]:
        rig = build("damstra", calls_per_minute=100)
        gone_key = ticket_key("damstra", _employee_key(rig, 10))
        line_task = asyncio.create_task(arrivals(rig, 30, 0.5, gone=frozenset({10}),
                                                 late={20: 5.0}))
        await asyncio.sleep(6.0)
        held = await rig.store.get(gone_key)  # employee 10 has left; the place is still held
        line = await line_task  # ~50 s: well past the abandoned ticket's maturity + GRACE
        return rig, line, held, await rig.store.get(gone_key)

    rig, line, held, later = run(scenario())
    assert held is not None and later is None
    assert 10 not in line.landed and len(line.landed) == 29
    order = sorted(line.landed, key=line.landed.__getitem__)
    assert order == [n for n in range(30) if n != 10]
    assert line.pages[20] == 1
    assert rig.lms_calls() == 29 * 3  # the abandoned place cost budget time, no LMS call
    assert rig.statuses[429] == 0


def _employee_key(rig: Rig, n: int) -> str:
    key, _ = rig.replicas[0].provisioner._keys(identity(n))
    return key.rsplit(":", 1)[1]


def test_reloads_in_the_queue_cost_no_share_and_no_place() -> None:
    """A queued employee who reloads the queue page every second (ignoring Retry-After) is
    neither sent to the "just a moment" page (their share was charged once, for the ticket) nor
    moved back in line: they land when their reserved calls mature."""

    async def scenario() -> tuple[Line, int, float, float]:
        rig = build("damstra", calls_per_minute=100)
        loop = asyncio.get_running_loop()
        ahead = asyncio.create_task(arrivals(rig, 20, 0.0))  # 60 calls queued at once
        await asyncio.sleep(0.1)
        reloads, started = 0, loop.time()
        while True:
            try:
                await rig.replicas[reloads % 2].provisioner.sign_in(
                    identity(99), profile(99), None)
                break
            except EmployeeBusy:
                raise
            except BudgetExhausted:
                reloads += 1
                await asyncio.sleep(1.0)
        landed = loop.time()
        line = await ahead
        return line, reloads, started, landed

    line, reloads, started, landed = run(scenario())
    assert reloads > 20
    # 20 employees x 3 calls were ahead (less the burst of 10), then our 3, at 1.5 calls/s.
    assert landed - started == pytest.approx((63 - 10) / 1.5, abs=1.0)
    assert max(line.landed.values()) < landed  # nobody who came earlier was overtaken


async def _budget(store: Store, loop: asyncio.AbstractEventLoop, **overrides: float) -> Budget:
    settings = BudgetSettings(**overrides)  # type: ignore[arg-type]
    return Budget("training", settings, store, clock=loop.time, sleep=asyncio.sleep)


def test_a_returning_sign_in_claims_a_first_sign_in_ticket_and_gives_the_surplus_back() -> None:
    """A ticket for 3 calls claimed by a sign-in that needs 1 (the account was cached in the
    meantime): one is spent and two go back to the shared bucket and the employee's share."""

    async def scenario() -> tuple[int, float, float, float]:
        loop = asyncio.get_running_loop()
        store = MemoryStore(clock=loop.time)
        budget = await _budget(store, loop, calls_per_minute=60, max_wait_seconds=2.0)
        for n in range(2):
            await budget.reserve(CallContext(employee=f"e{n}"), 3)  # the burst of 6
        with pytest.raises(BudgetExhausted) as caught:
            await budget.reserve(CallContext(employee="late"), 3)
        await asyncio.sleep(caught.value.retry_after)
        returning = CallContext(employee="late")
        await budget.reserve(returning, 1)
        await budget.acquire(returning)
        refunded = await budget.release(returning)
        # The bucket's level now: what the next caller sees.
        level = (await store.take_tokens("budget:training", budget.refill_per_minute,
                                         budget.burst, 0))[1]
        share = (await store.take_tokens("budget-share:training:late", 6, 6, 0))[1]
        return refunded, level, share, caught.value.retry_after

    refunded, level, share, waited = run(scenario())
    assert refunded == 2
    # The ticket's 3 calls put the bucket at -3; it refilled while the page waited (0.9/s),
    # and the 2 calls not needed came back.
    assert level == pytest.approx(-3 + waited * 0.9 + 2, abs=0.01)
    # The share was charged 3 once, for the ticket; the 2 unused calls came back.
    assert share == pytest.approx(3 + waited * 0.1 + 2, abs=0.01)


def test_a_pause_voids_tickets_and_gives_their_share_back() -> None:
    """The LMS said slow down: the pause empties the bucket and forgives every reservation,
    so a ticket from before it holds nothing; its holder queues again after the pause."""

    async def scenario() -> tuple[BudgetExhausted, BudgetExhausted, bytes | None, float]:
        loop = asyncio.get_running_loop()
        store = MemoryStore(clock=loop.time)
        budget = await _budget(store, loop, calls_per_minute=60, max_wait_seconds=2.0)
        for n in range(2):
            await budget.reserve(CallContext(employee=f"e{n}"), 3)
        with pytest.raises(BudgetExhausted) as first:
            await budget.reserve(CallContext(employee="late"), 3)
        await budget.pause(30.0)
        await asyncio.sleep(first.value.retry_after)
        with pytest.raises(BudgetExhausted) as again:
            await budget.reserve(CallContext(employee="late"), 3)
        share = (await store.take_tokens("budget-share:training:late", 6, 6, 0))[1]
        return first.value, again.value, await store.get(ticket_key("training", "late")), share

    first, again, ticket, share = run(scenario())
    assert first.retry_after < 2.0
    assert again.retry_after == pytest.approx(30.0 - first.retry_after, abs=0.1)
    assert ticket is None and share == pytest.approx(6.0)


def test_background_work_and_continuing_calls_never_get_tickets() -> None:
    async def scenario() -> tuple[bytes | None, bytes | None]:
        loop = asyncio.get_running_loop()
        store = MemoryStore(clock=loop.time)
        budget = await _budget(store, loop, calls_per_minute=60, max_wait_seconds=0.5)
        await budget.reserve(CallContext(employee="a"), 6)
        scim = CallContext(call_class=CallClass.BACKGROUND, employee="scim")
        with pytest.raises(BudgetExhausted):
            await budget.reserve(scim, 1)
        # A sign-in that already spent calls waits (up to its deadline) for more, in line.
        going = CallContext(employee="going", calls_spent=1, deadline=loop.time() + 10.0)
        await budget.reserve(going, 3)
        assert len(going.prepaid) == 3
        return (await store.get(ticket_key("training", "scim")),
                await store.get(ticket_key("training", "going")))

    assert run(scenario()) == (None, None)


async def test_pop_with_ttl_on_redis_and_memory(redis_url: str) -> None:  # noqa: F811
    """The claim is atomic and reads the TTL on the store's clock (Redis TIME for Redis)."""
    redis = RedisStore(redis_url, key_prefix="tickets-test:")
    try:
        for store in (MemoryStore(), redis):
            assert await store.pop_with_ttl("t") is None
            await store.set("t", b"ticket", 30.0)
            found = await store.pop_with_ttl("t")
            assert found is not None and found[0] == b"ticket"
            assert 29.0 < found[1] <= 30.0
            assert await store.pop_with_ttl("t") is None and await store.get("t") is None
    finally:
        await redis.aclose()

