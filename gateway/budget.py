"""Per-app LMS call budget: a token bucket in the store (shared by all replicas) plus a
circuit breaker (per process).

Why the bucket is shaped this way: a token bucket with burst ``B`` and refill ``r`` admits at
most ``B + r*T`` calls in any window of ``T`` seconds. With ``B = 10 %`` of the budget and
``r = (budget - B) / 60 s``, no 60-second window, sliding or fixed, ever sees more than the
budget, so an LMS that counts 100 calls per minute never answers 429 because of us.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.errors import BudgetExhausted, LmsUnavailable
from gateway.settings import BudgetSettings
from gateway.store.base import Store


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
        self._clock = clock
        self._sleep = sleep
        self._key = f"budget:{app}"
        self.burst = max(1.0, float(settings.calls_per_minute // 10))
        self.refill_per_minute = max(0.1, settings.calls_per_minute - self.burst)
        self._circuit = _Circuit()
        # Tokens left in the shared bucket as of this replica's last take (for /metrics).
        self.tokens_left = self.burst

    @property
    def circuit_open(self) -> bool:
        return self._circuit.open_until > self._clock()

    async def acquire(self) -> float:
        """Take one call's token, waiting up to ``max_wait_seconds``; returns seconds waited.

        Raises BudgetExhausted past the bound (the employee sees the queue page) and
        LmsUnavailable while the circuit is open.
        """
        probe = self._check_circuit()
        try:
            return await self._take()
        except BaseException:
            # A probe that never reached the LMS (queue page, store down, client gone)
            # proved nothing: free the slot so the next sign-in can probe.
            if probe is not None and self._circuit.probe_started == probe:
                self._circuit.probe_started = None
            raise

    async def _take(self) -> float:
        started = self._clock()
        deadline = started + self.settings.max_wait_seconds
        while True:
            remaining = max(0.0, deadline - self._clock())
            # Reserve a token that matures within our bound: waiters are then served in the
            # order they reached the store (first come, first served), on every replica.
            wait, self.tokens_left, taken = await self._store.take_token(
                self._key, self.refill_per_minute, self.burst, remaining
            )
            if taken:
                if wait > 0:
                    await self._sleep(wait)
                return self._clock() - started
            if wait > remaining:
                # The queue is longer than we may wait: the queue page comes back when this
                # token would have matured, so earlier arrivals come back earlier.
                raise BudgetExhausted(
                    f"LMS budget of app {self.app} spent; next call in {wait:.1f}s",
                    retry_after=max(1.0, wait),
                )
            # Paused by a 429/503 (nothing reserved): wait it out, then queue up. At least a
            # millisecond, so float rounding can never make this spin on the store.
            await self._sleep(max(wait, 0.001))

    async def pause(self, seconds: float) -> None:
        """The LMS said slow down: hold every replica's calls for ``seconds``."""
        await self._store.pause_bucket(self._key, max(1.0, min(seconds, 600.0)))

    def _check_circuit(self) -> float | None:
        """Refuse at once while open; while half-open let one probe through and return
        the time it started (None when the circuit is closed)."""
        circuit = self._circuit
        if circuit.open_until == 0.0:
            return None
        now = self._clock()
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

    def record_failure(self) -> None:
        circuit = self._circuit
        circuit.failures += 1
        circuit.probe_started = None
        if circuit.failures >= self.settings.circuit_failures:
            circuit.open_until = self._clock() + self.settings.circuit_open_seconds
