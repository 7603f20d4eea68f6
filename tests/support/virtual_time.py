"""An asyncio event loop on virtual time, for minutes of traffic in milliseconds.

Everything that waits through the loop (``asyncio.sleep``, ``asyncio.timeout``, timers) runs
on ``loop.time()``, which jumps straight to the next timer whenever no task is ready. So
timing between many concurrent tasks is exact, unlike a fake clock that each sleeper moves
by itself. Only for code that does no real I/O (MemoryStore, httpx.MockTransport).

Use :func:`run` from a plain (non-async) test: ``run(scenario())``.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _Selector(selectors.DefaultSelector):
    """Never blocks: a wait for the next timer is a jump of the virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if not events and timeout is not None and timeout > 0 and self.loop is not None:
            self.loop.advance(timeout)
        if not events and timeout is None:
            # Nothing scheduled and nothing ready: only real I/O (the loop's self-pipe) can
            # wake it; wait for that briefly rather than spin.
            events = super().select(0.01)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``time()`` is virtual; it starts at 1000 s and only moves when every task waits."""

    def __init__(self) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self._now = 1000.0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
