"""In-process store: the default for a single gateway process.

Nothing here is shared between processes; run the ``redis`` store for several replicas.
Expired keys are dropped lazily on access and by a sweep every few thousand writes, so
memory stays bounded by the number of live keys.

Size limit (``[store] memory_max_entries``): the store never evicts a live entry to make
room. Replay caches, used-state markers, sessions and revocations are security entries:
dropping one would silently turn a check off. Instead, once expired entries have been purged:

* *anonymous* writes (``incr_with_ttl(..., anonymous=True)``: the pending-login admission
  counters of :mod:`gateway.limits`) are refused with :class:`StoreFull` from
  :data:`ANONYMOUS_SHARE` of the limit on. Every sign-in start passes that counter before
  any of its entries is written, so a flood is refused before it stores anything, and the
  rest of the room stays for the entries of sign-ins already admitted and finished;
* any other new key is refused with :class:`StoreFull` (503, fail closed) at the limit itself.
  Overwriting or deleting an existing key always works.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.errors import StoreFull

# Anonymous (pending-login) state may fill this share of memory_max_entries.
ANONYMOUS_SHARE = 0.9


class MemoryStore:
    """A dict with TTLs. Every method is atomic because nothing awaits inside it."""

    _SWEEP_EVERY = 4096
    # When full, purge expired entries at most this often (a purge walks every entry; a
    # flood against a full store must not make each refused request pay for one).
    _PURGE_INTERVAL = 1.0

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, max_entries: int | None = None
    ) -> None:
        self._clock = clock
        self._data: dict[str, tuple[bytes, float]] = {}
        # key -> (tokens, last refill time, paused until)
        self._buckets: dict[str, tuple[float, float, float]] = {}
        # key -> when that bucket is full again (its state then equals no state): per-employee
        # buckets come and go, so full ones are swept like expired keys.
        self._full_at: dict[str, float] = {}
        self._bucket_writes = 0
        self._writes = 0
        self._max_entries = max_entries
        self._last_purge = float("-inf")

    def entry_count(self) -> int:
        """Entries held, including expired ones not yet purged. (Deliberately not
        ``__len__``: an empty store must stay truthy in ``store or default`` code.)"""
        return len(self._data)

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._data[key]
            return None
        return item[0]

    def _purge(self, now: float) -> None:
        for stale in [k for k, (_, exp) in self._data.items() if exp <= now]:
            del self._data[stale]

    def _has_room(self, limit: float) -> bool:
        """Whether a new entry fits under ``limit`` (purging expired entries first)."""
        if len(self._data) < limit:
            return True
        now = self._clock()
        if now - self._last_purge >= self._PURGE_INTERVAL:
            self._last_purge = now
            self._purge(now)
        return len(self._data) < limit

    def _check_room(self, key: str, *, anonymous: bool) -> None:
        if self._max_entries is None:
            return
        if anonymous:
            if not self._has_room(self._max_entries * ANONYMOUS_SHARE):
                raise StoreFull("memory store full for anonymous state (memory_max_entries)")
        elif key not in self._data and not self._has_room(self._max_entries):
            raise StoreFull("memory store full (memory_max_entries); nothing is evicted")

    def _write(self, key: str, value: bytes, ttl: float) -> None:
        self._check_room(key, anonymous=False)
        self._data[key] = (value, self._clock() + ttl)
        self._writes += 1
        if self._writes % self._SWEEP_EVERY == 0:
            self._purge(self._clock())

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

    async def pop_with_ttl(self, key: str) -> tuple[bytes, float] | None:
        value = self._live(key)
        if value is None:
            return None
        expires = self._data.pop(key)[1]
        return value, expires - self._clock()

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def delete_if_equals(self, key: str, value: bytes) -> bool:
        if self._live(key) != value:
            return False
        del self._data[key]
        return True

    async def renew_if_equals(self, key: str, value: bytes, ttl: float) -> bool:
        if self._live(key) != value:
            return False
        self._data[key] = (value, self._clock() + ttl)
        return True

    async def incr_with_ttl(
        self, key: str, ttl: float, amount: int = 1, *, anonymous: bool = False
    ) -> int:
        current = self._live(key)
        if amount > 0 or current is None:
            # A decrement of a live counter frees nothing and needs no room; anything that
            # may grow anonymous state, or creates a key, is checked.
            self._check_room(key, anonymous=anonymous and amount > 0)
        if current is None:
            value, expires = 0, self._clock() + ttl
        else:
            value, expires = int(current), self._data[key][1]
        value = max(0, value + amount)
        self._data[key] = (str(value).encode(), expires)
        return value

    async def take_token(
        self, key: str, per_minute: float, capacity: float, max_wait: float = 0.0
    ) -> tuple[float, float, bool]:
        return await self.take_tokens(key, per_minute, capacity, 1, max_wait)

    def _refilled(self, key: str, per_minute: float, capacity: float) -> tuple[float, float, float]:
        """(tokens now, now, paused until) after the refill since the last call."""
        now = self._clock()
        tokens, last, paused_until = self._buckets.get(key, (capacity, now, 0.0))
        if now >= paused_until:
            tokens = min(capacity, tokens + (now - max(last, paused_until)) * per_minute / 60.0)
        return tokens, now, paused_until

    async def take_tokens(
        self, key: str, per_minute: float, capacity: float, count: int, max_wait: float = 0.0,
        *, floor: float | None = None,
    ) -> tuple[float, float, bool]:
        tokens, now, paused_until = self._refilled(key, per_minute, capacity)
        if now < paused_until:
            return paused_until - now, 0.0, False
        rate = per_minute / 60.0
        # The bucket's level must reach ``need`` for the take: ``count`` tokens, plus the
        # reserve that must stay behind when a floor is given.
        need = count + (floor if floor is not None else 0.0)
        wait = 0.0 if tokens >= need else ((need - tokens) / rate if rate > 0 else 60.0)
        taken = wait == 0.0 or (floor is None and wait <= max_wait)
        if taken:
            # Taken now, or reserved: the bucket goes below zero and the caller waits ``wait``.
            tokens -= count
        self._set_bucket(key, tokens, now, paused_until, per_minute, capacity)
        return wait, tokens, taken

    def _set_bucket(self, key: str, tokens: float, now: float, paused_until: float,
                    per_minute: float, capacity: float) -> None:
        self._buckets[key] = (tokens, now, paused_until)
        rate = per_minute / 60.0
        self._full_at[key] = now + (capacity - tokens) / rate if rate > 0 else float("inf")
        self._bucket_writes += 1
        if self._bucket_writes % self._SWEEP_EVERY == 0:
            for stale in [k for k, at in self._full_at.items() if at <= now]:
                if self._buckets[stale][2] <= now:
                    del self._buckets[stale], self._full_at[stale]

    async def give_back_tokens(
        self, key: str, per_minute: float, capacity: float, count: int
    ) -> None:
        tokens, now, paused_until = self._refilled(key, per_minute, capacity)
        if now < paused_until or key not in self._buckets:
            return
        self._set_bucket(key, min(capacity, tokens + count), now, paused_until, per_minute,
                         capacity)

    async def pause_bucket(self, key: str, seconds: float) -> None:
        now = self._clock()
        _, _, paused_until = self._buckets.get(key, (0.0, now, 0.0))
        self._buckets[key] = (0.0, now, max(paused_until, now + seconds))
        self._full_at[key] = float("inf")  # not swept: the refill rate is not known here

    async def health_problems(self) -> list[str]:
        return []

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._data.clear()
        self._buckets.clear()
        self._full_at.clear()
