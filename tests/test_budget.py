"""The LMS call budget (issue 6 item 4): token bucket shared by replicas, pauses, circuit.

Minutes of traffic run in virtual time (a fake clock shared by the MemoryStore and the
Budget); a short real-time run against a real redis-server checks the same bound with two
replicas sharing the bucket.
"""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid

import pytest

from gateway.budget import Budget
from gateway.call_context import CallClass, CallContext
from gateway.errors import BudgetExhausted, DeadlineExceeded, EmployeeBusy, LmsUnavailable
from gateway.settings import BudgetSettings
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.redis_server import redis_url  # noqa: F401


class FakeClock:
    """Virtual time: ``sleep`` yields to the other tasks, then moves the clock to its wake-up
    time (never backwards). Tasks that slept together wake together, like real sleepers."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        wake = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, wake)


def settings(**overrides: float) -> BudgetSettings:
    return BudgetSettings(**overrides)  # type: ignore[arg-type]


def virtual_budget(
    clock: FakeClock, store: MemoryStore | None = None, **overrides: float
) -> Budget:
    store = store or MemoryStore(clock=clock)
    return Budget("training", settings(**overrides), store, clock=clock, sleep=clock.sleep)


def max_in_window(times: list[float], window: float) -> int:
    """Most calls in any closed window [t, t + window] (windows starting at a call suffice)."""
    ordered = sorted(times)
    return (
        max(bisect.bisect_right(ordered, t + window) - i for i, t in enumerate(ordered))
        if ordered
        else 0
    )


@pytest.mark.parametrize("per_minute", [7, 100])
async def test_no_sliding_minute_ever_exceeds_the_budget(per_minute: int) -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    # Two replicas sharing the store, each its own Budget object.
    replicas = [
        virtual_budget(clock, store, calls_per_minute=per_minute, max_wait_seconds=20)
        for _ in range(2)
    ]
    admitted: list[float] = []
    employees = per_minute * 4

    async def employee(i: int) -> None:
        # Arrivals in waves (9:00 rush, then stragglers); the queue page retries by itself.
        await clock.sleep((i % 3) * 45.0)
        while True:
            try:
                await replicas[i % 2].acquire()
            except BudgetExhausted as exc:
                await clock.sleep(exc.retry_after)
                continue
            admitted.append(clock())
            return

    started = clock()
    await asyncio.gather(*(employee(i) for i in range(employees)))
    assert len(admitted) == employees  # every employee eventually got through
    assert max_in_window(admitted, 60.0) <= per_minute
    # ... and the budget is used, not wasted: the whole rush is served close to the rate.
    minutes = (clock() - started) / 60.0
    one = replicas[0]
    assert minutes <= (employees - one.burst) / one.refill_per_minute + 1.5 + 0.5  # 1.5: waves


async def test_real_time_with_two_replicas_on_redis(redis_url: str) -> None:  # noqa: F811
    prefix = f"b{uuid.uuid4().hex[:8]}:"
    stores = [RedisStore(redis_url, key_prefix=prefix) for _ in range(2)]
    replicas = [
        Budget("training", settings(calls_per_minute=600, max_wait_seconds=1.0), s) for s in stores
    ]
    burst, rate = 60, 9.0  # 10 % of 600 up front, the rest at 540/min
    admitted: list[float] = []
    for s in stores:
        await s.ping()  # connect first: the test is about the bucket, not the handshake
    started = time.monotonic()

    async def caller(i: int) -> None:
        while time.monotonic() - started < 1.2:
            try:
                await replicas[i % 2].acquire()
                admitted.append(time.monotonic())
            except BudgetExhausted:
                pass  # the queue page; this caller tries again

    try:
        await asyncio.gather(*(caller(i) for i in range(100)))
    finally:
        for s in stores:
            await s.aclose()
    for window in (0.25, 0.5, 1.0):
        assert max_in_window(admitted, window) <= burst + rate * window + 1
    # The bucket is used, not starved: while callers queue, admissions keep to the rate.
    elapsed = admitted[-1] - admitted[0]
    assert len(admitted) >= burst + rate * elapsed - 3


async def test_past_the_wait_bound_the_queue_page_comes_at_once() -> None:
    clock = FakeClock()
    budget = virtual_budget(clock, calls_per_minute=60, max_wait_seconds=0.5)
    assert [await budget.acquire() for _ in range(6)] == [0.0] * 6  # burst: 10 % of 60
    with pytest.raises(BudgetExhausted) as caught:
        await budget.acquire()
    # One token per 60/54 s; nobody was made to wait for nothing.
    assert caught.value.retry_after == pytest.approx(60 / 54, rel=0.01)
    assert clock.slept == []


async def test_within_the_wait_bound_the_call_waits_for_its_token() -> None:
    clock = FakeClock()
    budget = virtual_budget(clock, calls_per_minute=60, max_wait_seconds=2.0)
    for _ in range(6):
        await budget.acquire()
    waited = await budget.acquire()
    assert waited == pytest.approx(60 / 54, rel=0.01)


async def test_retry_after_is_at_least_a_second() -> None:
    clock = FakeClock()
    budget = virtual_budget(clock, calls_per_minute=6000, max_wait_seconds=0)
    for _ in range(600):
        await budget.acquire()
    with pytest.raises(BudgetExhausted) as caught:
        await budget.acquire()
    assert caught.value.retry_after == 1.0


async def test_pause_from_one_replica_holds_every_replica() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    a, b = (
        virtual_budget(clock, store, calls_per_minute=100, max_wait_seconds=5) for _ in range(2)
    )
    await a.acquire()
    await a.pause(20.0)  # the LMS answered 429 with Retry-After: 20
    with pytest.raises(BudgetExhausted) as caught:
        await b.acquire()
    assert caught.value.retry_after == pytest.approx(20.0)
    clock.now += 20.0
    # After the pause the bucket starts empty: calls resume at the refill rate, no burst.
    waits = [await b.acquire() for _ in range(3)]
    assert all(w == pytest.approx(60 / 90, rel=0.01) for w in waits)


async def test_pause_is_clamped() -> None:
    clock = FakeClock()
    budget = virtual_budget(clock, max_wait_seconds=0)
    await budget.pause(0.0)  # a zero Retry-After still backs off a little
    with pytest.raises(BudgetExhausted) as caught:
        await budget.acquire()
    assert caught.value.retry_after == pytest.approx(1.0)
    await budget.pause(86400.0)  # a silly Retry-After does not stop sign-ins for a day
    with pytest.raises(BudgetExhausted) as caught:
        await budget.acquire()
    assert caught.value.retry_after == pytest.approx(600.0)


async def test_pause_on_redis_holds_another_replica(redis_url: str) -> None:  # noqa: F811
    prefix = f"b{uuid.uuid4().hex[:8]}:"
    one, two = RedisStore(redis_url, key_prefix=prefix), RedisStore(redis_url, key_prefix=prefix)
    try:
        a = Budget("training", settings(calls_per_minute=600, max_wait_seconds=0), one)
        b = Budget("training", settings(calls_per_minute=600, max_wait_seconds=3), two)
        await a.pause(1.0)
        with pytest.raises(BudgetExhausted) as caught:
            await a.acquire()
        assert 0.8 < caught.value.retry_after <= 1.0
        waited = await b.acquire()
        assert 0.9 < waited < 1.5
    finally:
        await one.aclose()
        await two.aclose()


class CountingStore(MemoryStore):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.takes = 0

    async def take_token(
        self, key: str, per_minute: float, capacity: float, max_wait: float = 0.0
    ) -> tuple[float, float, bool]:
        self.takes += 1
        return await super().take_token(key, per_minute, capacity, max_wait)

    async def take_tokens(
        self, key: str, per_minute: float, capacity: float, count: int, max_wait: float = 0.0,
        *, floor: float | None = None,
    ) -> tuple[float, float, bool]:
        self.takes += 1
        return await super().take_tokens(key, per_minute, capacity, count, max_wait,
                                         floor=floor)


def circuit_budget(clock: FakeClock, store: MemoryStore | None = None) -> Budget:
    return Budget(
        "training",
        settings(circuit_failures=3, circuit_open_seconds=30, max_wait_seconds=0),
        store or MemoryStore(clock=clock),
        clock=clock,
        sleep=clock.sleep,
    )


async def test_circuit_opens_after_repeated_failures_and_fails_fast() -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    budget = circuit_budget(clock, store)
    budget.record_failure()
    budget.record_failure()
    await budget.acquire()  # two failures: still closed
    budget.record_failure()
    assert budget.circuit_open
    takes = store.takes
    for _ in range(5):
        with pytest.raises(LmsUnavailable):
            await budget.acquire()
    assert store.takes == takes  # refused without spending budget or waiting
    assert clock.slept == []


async def test_a_success_resets_the_failure_count() -> None:
    clock = FakeClock()
    budget = circuit_budget(clock)
    for _ in range(5):
        budget.record_failure()
        budget.record_failure()
        budget.record_success()
    assert not budget.circuit_open
    await budget.acquire()


async def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = FakeClock()
    budget = circuit_budget(clock)
    for _ in range(3):
        budget.record_failure()
    clock.now += 30.0
    await budget.acquire()  # the probe
    with pytest.raises(LmsUnavailable):
        await budget.acquire()  # others are refused while it is in flight
    budget.record_success()
    assert not budget.circuit_open
    await budget.acquire()
    await budget.acquire()


async def test_a_failed_probe_opens_the_circuit_again() -> None:
    clock = FakeClock()
    budget = circuit_budget(clock)
    for _ in range(3):
        budget.record_failure()
    clock.now += 30.0
    await budget.acquire()
    budget.record_failure()
    assert budget.circuit_open
    clock.now += 29.0
    with pytest.raises(LmsUnavailable):
        await budget.acquire()
    clock.now += 1.0
    await budget.acquire()  # next probe


async def test_a_probe_that_never_reached_the_lms_frees_the_slot() -> None:
    clock = FakeClock()
    budget = circuit_budget(clock)
    for _ in range(3):
        budget.record_failure()
    await budget.pause(60.0)  # no tokens: the probe will end on the queue page
    clock.now += 30.0
    with pytest.raises(BudgetExhausted):
        await budget.acquire()
    clock.now += 31.0  # pause over; the circuit must not be stuck "probe in flight"
    await budget.acquire()


async def test_a_probe_that_never_reports_back_is_given_up() -> None:
    clock = FakeClock()
    budget = circuit_budget(clock)
    for _ in range(3):
        budget.record_failure()
    clock.now += 30.0
    await budget.acquire()  # e.g. ends in a 429: neither success nor failure recorded
    clock.now += 10.0
    with pytest.raises(LmsUnavailable):
        await budget.acquire()
    clock.now += 20.0
    await budget.acquire()  # a new probe after another open period


# -- issue 11: classes, reservations, the employee's share -----------------------------------


async def test_background_work_only_spends_above_the_sign_ins_reserve() -> None:
    """SCIM (background) takes only tokens above ``scim_reserve``, reserving nothing: at the
    reserve it waits (within max_wait_seconds) for the refill to lift the bucket above it, so
    a request needing more calls than that still finishes on an idle app; when sign-ins have
    reserved the bucket further ahead than that, it is refused with a Retry-After."""
    clock = FakeClock()
    budget = virtual_budget(clock, calls_per_minute=100, scim_reserve=5)  # burst 10, 1.5/s
    scim = CallContext(call_class=CallClass.BACKGROUND)
    for _ in range(5):
        assert await budget.acquire(scim) == 0.0
    # The sixth waits for one token of refill (2/3 s) instead of dipping into the reserve.
    assert await budget.acquire(scim) == pytest.approx(2 / 3, abs=0.01)
    # Sign-ins still have the reserve, and may queue beyond it: a sign-in under way reserving
    # 15 calls puts the bucket ~10 s from lifting above the reserve again, past
    # max_wait_seconds (5 s): SCIM is told to come back later.
    await budget.reserve(CallContext(call_class=CallClass.CONTINUING), 15)
    slept = len(clock.slept)
    with pytest.raises(BudgetExhausted) as caught:
        await budget.acquire(scim)
    assert caught.value.retry_after > 5.0
    assert len(clock.slept) == slept  # refused at once, nothing reserved for SCIM


async def test_a_reservation_is_all_or_nothing() -> None:
    clock = FakeClock()
    # Burst 6; a queue ticket may reserve up to 3 s ahead (beyond it: refused, nothing held).
    budget = virtual_budget(clock, calls_per_minute=60, max_wait_seconds=2.0,
                            max_queue_seconds=3.0)
    first = CallContext(employee="a")
    await budget.reserve(first, 3)
    assert first.prepaid == [clock.now] * 3
    second = CallContext(employee="b")
    await budget.reserve(second, 3)
    # Third sign-in: its 3rd token would mature 3 / 0.9 s from now, past 3 s: nothing taken.
    third = CallContext(employee="c")
    with pytest.raises(BudgetExhausted) as caught:
        await budget.reserve(third, 3)
    assert third.prepaid == [] and caught.value.position == 0
    assert caught.value.retry_after == pytest.approx(3 / 0.9)
    # One call still fits (1.1 s): refused sign-ins held no tokens.
    fourth = CallContext(employee="d")
    assert await budget.reserve(fourth, 1) == pytest.approx(1 / 0.9)
    assert fourth.prepaid == [pytest.approx(clock.now + 1 / 0.9)]


async def test_prepaid_tokens_are_spent_on_their_schedule_without_the_store() -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    budget = Budget("training", settings(calls_per_minute=60, max_wait_seconds=5.0), store,
                    clock=clock, sleep=clock.sleep)
    for _ in range(5):
        await budget.acquire(CallContext())  # one token left of the burst of 6
    ctx = CallContext(employee="e")
    await budget.reserve(ctx, 3)  # 1 now, then one every 1/0.9 s
    takes = store.takes
    waited = [await budget.acquire(ctx) for _ in range(3)]
    assert store.takes == takes  # no store round trip per call
    assert waited == [0.0, pytest.approx(1 / 0.9), pytest.approx(1 / 0.9)]


async def test_continuing_calls_wait_up_to_the_deadline_not_max_wait() -> None:
    """A sign-in that has spent calls never drops to the queue page: its next call waits up to
    the deadline; past the deadline it ends with DeadlineExceeded (the unavailable page)."""
    clock = FakeClock()
    budget = virtual_budget(clock, calls_per_minute=60, max_wait_seconds=0.5)
    for _ in range(6):
        await budget.acquire(CallContext())
    with pytest.raises(BudgetExhausted):
        await budget.acquire(CallContext())  # a new sign-in: 1.1 s > 0.5 s
    ongoing = CallContext(deadline=clock.now + 10.0, calls_spent=2)
    assert await budget.acquire(ongoing) == pytest.approx(1 / 0.9)
    late = CallContext(deadline=clock.now + 1.0, calls_spent=1)
    with pytest.raises(DeadlineExceeded):
        await budget.acquire(late)


async def test_over_the_share_an_employee_gets_a_short_wait_and_costs_nothing() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    budget = Budget("training", settings(per_employee_calls_per_minute=6), store,
                    clock=clock, sleep=clock.sleep)
    for _ in range(2):
        await budget.reserve(CallContext(employee="loop"), 3)  # two first sign-ins fit
    left = budget.tokens_left
    with pytest.raises(EmployeeBusy) as caught:
        await budget.reserve(CallContext(employee="loop"), 1)
    assert caught.value.status == 429 and caught.value.retry_after == pytest.approx(10.0)
    await budget.reserve(CallContext(employee="colleague"), 3)  # others are not held back
    assert budget.tokens_left == pytest.approx(left - 3)  # the refused one took nothing
    # Given back: an employee whose sign-in spent 1 of 3 reserved calls has 2 to spend again.
    clock.now += 60.0
    ctx = CallContext(employee="refund")
    await budget.reserve(ctx, 3)
    await budget.acquire(ctx)
    assert await budget.release(ctx) == 2
    await budget.reserve(CallContext(employee="refund"), 5)  # 6 - 1 spent


async def test_a_sign_in_bigger_than_the_share_still_fits_once() -> None:
    clock = FakeClock()
    budget = virtual_budget(clock, per_employee_calls_per_minute=2, max_wait_seconds=10)
    ctx = CallContext(employee="many-teams")
    await budget.reserve(ctx, 5)  # Litmos with 3 teams
    assert len(ctx.prepaid) == 5


async def test_a_queue_page_gives_the_employees_share_back() -> None:
    clock = FakeClock()
    budget = virtual_budget(clock, calls_per_minute=60, max_wait_seconds=0,
                            per_employee_calls_per_minute=6)
    for _ in range(6):
        await budget.acquire(CallContext())
    for _ in range(10):  # the queue page, again and again
        with pytest.raises(BudgetExhausted) as caught:
            await budget.reserve(CallContext(employee="patient"), 3)
        assert not isinstance(caught.value, EmployeeBusy)
