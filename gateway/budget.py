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

Why a queued sign-in keeps its calls reserved (issue 11, item 7): when the queue page only
said "come back later", a returning browser found its slot taken by whoever's reservation
happened to fit in ``max_wait_seconds`` at that moment, so the queue was a lottery (p95 wait
294 s for a 300-employee Damstra burst). Now a new sign-in whose calls are further away still
reserves them, up to ``max_queue_seconds`` ahead, under a ticket in the store for that employee
and app (:mod:`gateway.queue_ticket`); the queue page comes back just in time and the
employee's next sign-in, on any replica, claims those calls instead of taking new ones.

Classes (:mod:`gateway.call_context`): continuing calls wait up to the deadline; new sign-ins
up to ``max_wait_seconds`` and within the employee's share; background work (SCIM) takes only
tokens that are there now above ``scim_reserve`` and never queues.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable

from gateway.call_context import CallClass, CallContext, current
from gateway.circuit import Circuit
from gateway.errors import BudgetExhausted, DeadlineExceeded, EmployeeBusy, LmsUnavailable
from gateway.queue_ticket import claim, epoch_key, put, ticket_key
from gateway.settings import BudgetSettings
from gateway.store.base import Store

# Without Retry-After, the first 429 pauses the app this long; each further 429 in a row
# doubles it (a probe: one call after the pause tells whether the LMS has recovered).
FIRST_PAUSE = 2.0
MAX_PAUSE_WITHOUT_RETRY_AFTER = 60.0
MAX_PAUSE = 600.0


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
        self._circuit = Circuit(app, settings.circuit_failures, settings.circuit_open_seconds)
        # Tokens left in the shared bucket as of this replica's last take (for /metrics).
        self.tokens_left = self.burst
        # 429s in a row without Retry-After (grows the pause), and when this replica last
        # paused the bucket: tokens reserved before that are void (the pause emptied it).
        self._rate_limited_streak = 0
        self._paused_at = float("-inf")

    @property
    def circuit_open(self) -> bool:
        return self._circuit.is_open(self.clock())

    # -- reservations (sign-ins) --------------------------------------------------------

    async def reserve(self, ctx: CallContext, calls: int) -> float:
        """Reserve ``calls`` tokens for the sign-in of ``ctx`` in one atomic step; returns
        seconds until the first matures. They become ``ctx.prepaid``; :meth:`release` gives
        back what was not spent.

        A sign-in that has not spent calls yet is admitted within ``max_wait_seconds`` (and
        its deadline) and within the employee's share: EmployeeBusy over the share,
        BudgetExhausted (with position and retry_after) past the bound. Past the bound its
        calls stay reserved under a queue ticket when they are within ``max_queue_seconds``
        (see :meth:`_reserve_in_line`); beyond that nothing is taken. One that has already
        spent calls (continuing) waits up to its deadline instead (DeadlineExceeded);
        background work never queues.
        """
        if calls <= 0:
            return 0.0
        if self._circuit.is_open(self.clock()):
            raise LmsUnavailable(f"circuit open for app {self.app}")
        continuing = ctx.continuing
        background = ctx.call_class is CallClass.BACKGROUND
        if not (continuing or background or ctx.employee is None
                or self.settings.max_queue_seconds <= 0):
            return await self._reserve_in_line(ctx, ctx.employee, calls)
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

    async def _reserve_in_line(self, ctx: CallContext, employee: str, calls: int) -> float:
        """A new sign-in of a known employee: claim the ticket their last queue page left, or
        reserve ``calls`` now, up to ``max_queue_seconds`` ahead. When the calls it needs
        mature within ``max_wait_seconds`` (and the deadline) they become ``ctx.prepaid``;
        otherwise they stay reserved under a ticket and BudgetExhausted says when to come back,
        so nobody arriving later can take this employee's place (:mod:`gateway.queue_ticket`)."""
        key = ticket_key(self.app, employee)
        ticket = await claim(self._store, key)
        now = self.clock()
        rate = self.refill_per_minute / 60.0
        tokens: list[float] = []
        share, epoch = 0, None
        if ticket is not None:
            epoch = await self._epoch()
            if ticket.epoch == epoch:
                tokens, share = ticket.maturities(now, rate), ticket.share
            elif ticket.share:
                # Reserved before a pause, which forgave every reservation: nothing is held.
                await self._give_back_share(employee, ticket.share)
        if len(tokens) < calls:
            # No ticket, or one for fewer calls (it was left by a returning sign-in).
            extra, charged = calls - len(tokens), False
            try:
                await self._charge_share(employee, extra)
                charged = True
                left = await self._take(ctx, extra, continuing=False, queue=True)
            except BaseException:
                if charged:
                    await self._give_back_share(employee, extra)
                if tokens and epoch is not None:  # keep the place already held
                    await put(self._store, key, len(tokens), share, epoch, tokens[-1] - now)
                raise
            now, before = self.clock(), left + extra
            # Token i (0-based) matures when the bucket, refilling at ``rate``, reaches i + 1.
            tokens += [now + max(0.0, (i + 1 - before) / rate) for i in range(extra)]
            share += extra
            tokens.sort()
        remaining = ctx.remaining(now)
        bound = self.settings.max_wait_seconds if remaining is None else min(
            self.settings.max_wait_seconds, remaining)
        needed = tokens[calls - 1]
        if needed - now <= bound + 1e-6:
            ctx.prepaid.extend(tokens)
            ctx.prepaid_share += share
            ctx.prepaid_at = now
            return tokens[0] - now
        if epoch is None:
            # A fresh place in line. (A pause between our take and this read would leave the
            # ticket looking valid: at worst its calls meet one 429, retried in the deadline.)
            epoch = await self._epoch()
        await put(self._store, key, len(tokens), share, epoch, tokens[-1] - now)
        # Back just in time: its calls then mature within the wait a sign-in may spend here.
        raise BudgetExhausted(
            f"LMS budget of app {self.app} spent; this sign-in's calls are reserved, the "
            f"needed ones in {needed - now:.1f}s",
            retry_after=max(1.0, needed - now - bound + 0.01),
            position=max(0, math.ceil((tokens[0] - now) * rate - 1 - 1e-9)),
        )

    async def _epoch(self) -> str:
        raw = await self._store.get(epoch_key(self.app))
        return raw.decode(errors="replace") if raw else ""

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
        probe = self._circuit.check(self.clock())
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
            self._circuit.abandon(probe)
            raise

    async def _take(
        self, ctx: CallContext, calls: int, *, continuing: bool, queue: bool = False
    ) -> float:
        """Take ``calls`` tokens for ``ctx``'s class; returns the tokens left after them.
        With ``queue`` they may be reserved up to ``max_queue_seconds`` ahead (a ticket)."""
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
            ahead = max(left, self.settings.max_queue_seconds) if queue else left
            wait, self.tokens_left, taken = await self._store.take_tokens(
                self._key, self.refill_per_minute, self.burst, calls, ahead, floor=floor
            )
            if taken:
                return self.tokens_left
            if wait > left:
                self._refuse(ctx, wait, continuing=continuing)
            # Paused by a 429 (nothing reserved): wait it out, then queue up. Background work
            # (floor set) reserves nothing: it waits, within the same bound, until tokens above
            # the sign-ins' reserve are there, so a SCIM request needing more calls than the
            # burst holds above the reserve still finishes on an idle app, and yields to every
            # sign-in on a busy one. At least a millisecond, so float rounding cannot spin.
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
        # The pause forgave every reservation, queue tickets' too: a new epoch voids them. (A
        # day outlives any ticket; one app, one small key.)
        await self._store.set(epoch_key(self.app), secrets.token_hex(8).encode(), 86400.0)

    def record_success(self) -> None:
        self._circuit.success()
        self._rate_limited_streak = 0

    def record_failure(self) -> None:
        self._circuit.failure(self.clock())
