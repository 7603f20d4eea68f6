"""Per-app LMS call budget: a token bucket in the store (shared by all replicas), a share per
employee, and a circuit breaker (per process).

Why the bucket is shaped this way: a token bucket with burst ``B`` and refill ``r`` admits at
most ``B + r*T`` calls in any window of ``T`` seconds. With ``B = 10 %`` of the budget and
``r = (budget - B) / 60 s``, no 60-second window, sliding or fixed, ever sees more than the
budget, so an LMS that counts 100 calls per minute never answers 429 because of us.

Why sign-ins reserve all their calls at once (issue 11): when each call of a 3-call first
sign-in queued on its own, a burst filled the queue with first calls; the sign-in that had
spent its ``search`` found its ``create`` past ``max_wait_seconds``, went to the queue page and
started again, and the LMS received nothing but searches (a livelock). Now a sign-in is
admitted whole or not at all (:meth:`Budget.reserve`, one atomic multi-token take, first come
first served), spends its prepaid tokens on their schedule without asking the store again,
and gives back what it did not need. A call beyond the reservation (retries, an unexpected
extra call) is a *continuing* call: it waits up to the sign-in's deadline, never the queue
page. So every call spent leads to a landing unless the LMS itself fails.

Classes (:mod:`gateway.call_context`): continuing calls wait up to the deadline; new sign-ins
up to ``max_wait_seconds`` and within the employee's share; background work (SCIM) takes only
tokens that are there now above ``scim_reserve`` and never queues.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.call_context import CallClass, CallContext, current
from gateway.errors import BudgetExhausted, DeadlineExceeded, EmployeeBusy, LmsUnavailable
from gateway.settings import BudgetSettings
from gateway.store.base import Store

# Without Retry-After, the first 429 pauses the app this long; each further 429 in a row
# doubles it (a probe: one call after the pause tells whether the LMS has recovered).
FIRST_PAUSE = 2.0
MAX_PAUSE_WITHOUT_RETRY_AFTER = 60.0
MAX_PAUSE = 600.0


@dataclass
class _Circuit:
    failures: int = 0
    open_until: float = 0.0
    # When the half-open probe was let through (None: no probe in flight).
    probe_started: float | None = None


class Budget:
    """The LMS calls one app may spend, shared by every replica through the store."""

    def __init__(
        self,
        app: str,
        settings: BudgetSettings,
        store: Store,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``clock`` and ``sleep`` are injectable so tests can run minutes of traffic in
        virtual time (the clock must be the store's clock for that to mean anything)."""
        self.app = app
        self.settings = settings
        self._store = store
        self.clock = clock
        self.sleep = sleep
        self._key = f"budget:{app}"
        self.burst = max(1.0, float(settings.calls_per_minute // 10))
        self.refill_per_minute = max(0.1, settings.calls_per_minute - self.burst)
        # Background work leaves this many tokens for sign-ins (below the burst, so it can
        # run at all on an idle bucket).
        self.reserve_floor = float(min(settings.scim_reserve, self.burst - 1))
        self._circuit = _Circuit()
        # Tokens left in the shared bucket as of this replica's last take (for /metrics).
        self.tokens_left = self.burst
        # 429s in a row without Retry-After (grows the pause), and when this replica last
        # paused the bucket: tokens reserved before that are void (the pause emptied it).
        self._rate_limited_streak = 0
        self._paused_at = float("-inf")

    @property
    def circuit_open(self) -> bool:
        return self._circuit.open_until > self.clock()

    # -- reservations (sign-ins) --------------------------------------------------------

    async def reserve(self, ctx: CallContext, calls: int) -> float:
        """Reserve ``calls`` tokens for the sign-in of ``ctx`` in one atomic step; returns
        seconds until the first matures. They become ``ctx.prepaid``; :meth:`release` gives
        back what was not spent.

        A sign-in that has not spent calls yet is admitted within ``max_wait_seconds`` (and
        its deadline) and within the employee's share, or refused whole: EmployeeBusy over the
        share, BudgetExhausted (with position and retry_after) past the bound. One that has
        already spent calls (continuing) waits up to its deadline instead (DeadlineExceeded).
        """
        if calls <= 0:
            return 0.0
        if self._circuit.open_until > self.clock():
            raise LmsUnavailable(f"circuit open for app {self.app}")
        continuing = ctx.continuing
        background = ctx.call_class is CallClass.BACKGROUND
        share = 0 if continuing or background or ctx.employee is None else calls
        if share:
            await self._charge_share(ctx.employee or "", share)
        try:
            tokens = await self._take(ctx, calls, continuing=continuing)
        except BaseException:
            if share:
                await self._give_back_share(ctx.employee or "", share)
            raise
        rate = self.refill_per_minute / 60.0
        now = self.clock()
        before = tokens + calls  # the bucket's level when our tokens were taken
        # Token i (0-based) matures when the bucket, refilling at ``rate``, reaches i + 1.
        ctx.prepaid.extend(now + max(0.0, (i + 1 - before) / rate) for i in range(calls))
        ctx.prepaid_share += share
        ctx.prepaid_at = now
        return max(0.0, (1 - before) / rate)

    async def release(self, ctx: CallContext) -> int:
        """Give back the prepaid tokens ``ctx`` did not spend (to the app's bucket and the
        employee's share); returns how many. Call once the sign-in is over, however it ended."""
        unused, share = len(ctx.prepaid), min(ctx.prepaid_share, len(ctx.prepaid))
        ctx.prepaid.clear()
        ctx.prepaid_share = 0
        if unused and ctx.prepaid_at > self._paused_at:
            await self._store.give_back_tokens(
                self._key, self.refill_per_minute, self.burst, unused
            )
        if share and ctx.employee is not None:
            await self._give_back_share(ctx.employee, share)
        return unused

    def _share_key(self, employee: str) -> str:
        return f"budget-share:{self.app}:{employee}"

    def _share_capacity(self, calls: int) -> float:
        # A first sign-in needing more calls than the share (Litmos with many teams) must
        # still fit once, or that employee could never sign in.
        return float(max(self.settings.per_employee_calls_per_minute, calls))

    async def _charge_share(self, employee: str, calls: int) -> None:
        per_minute = float(self.settings.per_employee_calls_per_minute)
        wait, _, taken = await self._store.take_tokens(
            self._share_key(employee), per_minute, self._share_capacity(calls), calls
        )
        if not taken:
            raise EmployeeBusy(
                f"app {self.app}: employee spent their share of LMS calls; next in {wait:.1f}s",
                retry_after=max(1.0, min(wait, 60.0)),
            )

    async def _give_back_share(self, employee: str, calls: int) -> None:
        per_minute = float(self.settings.per_employee_calls_per_minute)
        await self._store.give_back_tokens(
            self._share_key(employee), per_minute, self._share_capacity(calls), calls
        )

    # -- one call -------------------------------------------------------------------------

    async def acquire(self, ctx: CallContext | None = None) -> float:
        """A token for one call of ``ctx`` (default: the task's context); returns seconds
        waited. A prepaid token is used first; otherwise one is taken by the call's class.

        Raises BudgetExhausted past the class's bound (the queue page; EmployeeBusy over the
        employee's share), DeadlineExceeded when a continuing call cannot get one before the
        deadline, and LmsUnavailable while the circuit is open.
        """
        ctx = current() if ctx is None else ctx
        probe = self._check_circuit()
        started = self.clock()
        try:
            if ctx.prepaid and ctx.prepaid_at <= self._paused_at:
                # The LMS said slow down since we reserved: the pause emptied the bucket, so
                # these tokens are void; queue up behind the pause like everyone else.
                ctx.prepaid.clear()
                ctx.prepaid_share = 0
            if not ctx.prepaid:
                await self.reserve(ctx, 1)
            matures = ctx.prepaid.pop(0)
            # A spent token's share is spent: only unspent ones can be given back.
            ctx.prepaid_share = min(ctx.prepaid_share, len(ctx.prepaid))
            now = self.clock()
            if matures > now:
                await self.sleep(matures - now)
            return self.clock() - started
        except BaseException:
            # A probe that never reached the LMS (queue page, store down, client gone)
            # proved nothing: free the slot so the next sign-in can probe.
            if probe is not None and self._circuit.probe_started == probe:
                self._circuit.probe_started = None
            raise

    async def _take(self, ctx: CallContext, calls: int, *, continuing: bool) -> float:
        """Take ``calls`` tokens for ``ctx``'s class; returns the tokens left after them."""
        started = self.clock()
        remaining = ctx.remaining(started)
        if continuing:
            bound = self.settings.sign_in_deadline_seconds if remaining is None else remaining
        else:
            bound = self.settings.max_wait_seconds
            if remaining is not None:
                bound = min(bound, remaining)
        floor = self.reserve_floor if ctx.call_class is CallClass.BACKGROUND else None
        until = started + bound
        while True:
            left = max(0.0, until - self.clock())
            wait, self.tokens_left, taken = await self._store.take_tokens(
                self._key, self.refill_per_minute, self.burst, calls, left, floor=floor
            )
            if taken:
                return self.tokens_left
            if wait > left or floor is not None:
                self._refuse(ctx, wait, continuing=continuing)
            # Paused by a 429 (nothing reserved): wait it out, then queue up. At least a
            # millisecond, so float rounding can never make this spin on the store.
            await self.sleep(max(wait, 0.001))

    def _refuse(self, ctx: CallContext, wait: float, *, continuing: bool) -> None:
        if continuing and ctx.deadline is not None:
            raise DeadlineExceeded(
                f"app {self.app}: next LMS call in {wait:.1f}s, past the sign-in's deadline"
            )
        # The queue is longer than we may wait: the queue page comes back when these tokens
        # would have matured, so earlier arrivals come back earlier.
        raise BudgetExhausted(
            f"LMS budget of app {self.app} spent; next call in {wait:.1f}s",
            retry_after=max(1.0, wait),
            position=max(0, math.ceil(-self.tokens_left - 1e-9)),
        )

    # -- back-pressure and failures -------------------------------------------------------

    def pause_for(self, retry_after: float | None) -> float:
        """How long to pause after a rate-limit answer: ``Retry-After`` when the LMS sent one
        (at most 600 s), else short and doubling while rate-limit answers keep coming."""
        self._rate_limited_streak += 1
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_PAUSE)
        doubling = FIRST_PAUSE * 2.0 ** min(self._rate_limited_streak - 1, 16)
        return min(doubling, MAX_PAUSE_WITHOUT_RETRY_AFTER)

    async def pause(self, seconds: float) -> None:
        """The LMS said slow down: hold every replica's calls for ``seconds``."""
        seconds = max(1.0, min(seconds, MAX_PAUSE))
        self._paused_at = self.clock()
        await self._store.pause_bucket(self._key, seconds)

    def _check_circuit(self) -> float | None:
        """Refuse at once while open; while half-open let one probe through and return
        the time it started (None when the circuit is closed)."""
        circuit = self._circuit
        if circuit.open_until == 0.0:
            return None
        now = self.clock()
        if circuit.open_until > now:
            raise LmsUnavailable(f"circuit open for app {self.app}")
        # One probe at a time while half-open; the others are refused at once. A probe that
        # never reports back (e.g. its call ended in a 429, which is neither success nor
        # failure) is given up after another open period, so the circuit cannot stick.
        if (
            circuit.probe_started is not None
            and now - circuit.probe_started < self.settings.circuit_open_seconds
        ):
            raise LmsUnavailable(f"circuit half-open for app {self.app}, probe in flight")
        circuit.probe_started = now
        return now

    def record_success(self) -> None:
        self._circuit = _Circuit()
        self._rate_limited_streak = 0

    def record_failure(self) -> None:
        circuit = self._circuit
        circuit.failures += 1
        circuit.probe_started = None
        if circuit.failures >= self.settings.circuit_failures:
            circuit.open_until = self.clock() + self.settings.circuit_open_seconds
