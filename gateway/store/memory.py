"""In-process store: the default for a single gateway process.

Nothing here is shared between processes; run the ``redis`` store for several replicas.
Expired keys are dropped lazily on access and by a sweep every few thousand writes, so
memory stays bounded by the number of live keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class MemoryStore:
    """A dict with TTLs. Every method is atomic because nothing awaits inside it."""

    _SWEEP_EVERY = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, tuple[bytes, float]] = {}
        # key -> (tokens, last refill time, paused until)
        self._buckets: dict[str, tuple[float, float, float]] = {}
        self._writes = 0

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._data[key]
            return None
        return item[0]

    def _write(self, key: str, value: bytes, ttl: float) -> None:
        self._data[key] = (value, self._clock() + ttl)
        self._writes += 1
        if self._writes % self._SWEEP_EVERY == 0:
            now = self._clock()
            for stale in [k for k, (_, exp) in self._data.items() if exp <= now]:
                del self._data[stale]

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._write(key, value, ttl)

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        self._write(key, value, ttl)
        return True

    async def pop(self, key: str) -> bytes | None:
        value = self._live(key)
        self._data.pop(key, None)
        return value

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def take_token(
        self, key: str, per_minute: float, capacity: float, max_wait: float = 0.0
    ) -> tuple[float, float, bool]:
        now = self._clock()
        tokens, last, paused_until = self._buckets.get(key, (capacity, now, 0.0))
        if now < paused_until:
            return paused_until - now, 0.0, False
        rate = per_minute / 60.0
        tokens = min(capacity, tokens + (now - max(last, paused_until)) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now, paused_until)
            return 0.0, tokens - 1.0, True
        wait = (1.0 - tokens) / rate if rate > 0 else 60.0
        if wait <= max_wait:
            # A reservation: the bucket goes below zero and the caller waits ``wait``.
            self._buckets[key] = (tokens - 1.0, now, paused_until)
            return wait, tokens - 1.0, True
        self._buckets[key] = (tokens, now, paused_until)
        return wait, tokens, False

    async def pause_bucket(self, key: str, seconds: float) -> None:
        now = self._clock()
        _, _, paused_until = self._buckets.get(key, (0.0, now, 0.0))
        self._buckets[key] = (0.0, now, max(paused_until, now + seconds))

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._data.clear()
        self._buckets.clear()
