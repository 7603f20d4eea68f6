"""The store: a small async key-value interface shared by every replica.

Implementations: ``memory`` (one process, the default) and ``redis`` (several replicas).
Values are bytes; every key has a TTL so nothing lives forever. Operations that must be
atomic across replicas (set-if-absent, pop, compare-and-delete, token bucket) are single
calls here, so a Redis implementation can make them one round trip.

Any failure to reach the backing service raises :class:`gateway.errors.StoreUnavailable`;
callers never skip a check (e.g. a replay cache) because the store is down.
"""

from __future__ import annotations

from typing import Protocol


class Store(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds, replacing any previous value."""

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """Store only if the key is absent; True when this call stored it (atomic)."""

    async def pop(self, key: str) -> bytes | None:
        """Get and delete in one atomic step (single-use values: state, nonces)."""

    async def pop_with_ttl(self, key: str) -> tuple[bytes, float] | None:
        """Like :meth:`pop`, with the seconds the key had left to live (on the store's clock,
        so every replica reads the same time: the LMS queue's tickets keep their maturity so)."""

    async def delete(self, key: str) -> None:
        """Remove the key if present."""

    async def delete_if_equals(self, key: str, value: bytes) -> bool:
        """Remove the key only while it holds ``value`` (atomic compare-and-delete: a lock is
        released only by its owner); True when this call removed it."""

    async def renew_if_equals(self, key: str, value: bytes, ttl: float) -> bool:
        """Give the key a new ``ttl`` only while it holds ``value`` (atomic: an owner renews
        its lock and learns it still holds it); False when absent or held by another value."""

    async def take_token(
        self, key: str, per_minute: float, capacity: float, max_wait: float = 0.0
    ) -> tuple[float, float, bool]:
        """Token bucket: take (or reserve) one token. Returns ``(wait, tokens_left, taken)``.

        A token available now is taken (wait 0). One that matures within ``max_wait`` seconds
        is *reserved*: the bucket goes below zero, ``taken`` is True and the caller must wait
        ``wait`` seconds before using it. Reservations are granted in the order calls reach
        the store, which makes waiting callers first come, first served, and the calls still
        follow the bucket's schedule. Otherwise nothing is taken and ``wait`` says when to
        come back. The bucket refills at ``per_minute`` tokens per minute up to ``capacity``.
        """

    async def take_tokens(
        self, key: str, per_minute: float, capacity: float, count: int, max_wait: float = 0.0,
        *, floor: float | None = None,
    ) -> tuple[float, float, bool]:
        """Token bucket: take (or reserve) ``count`` tokens in one atomic step, on the same
        bucket and with the same arithmetic as :meth:`take_token` (``count=1`` is the same
        call). Returns ``(wait, tokens_left, taken)``; ``wait`` is when the *last* of the
        ``count`` tokens matures, so the whole reservation is within ``max_wait`` or nothing is
        taken. ``tokens_left`` below zero is the calls already reserved by earlier callers.

        With ``floor`` nothing is ever reserved ahead: the tokens are taken only when they are
        there now *and* at least ``floor`` tokens stay in the bucket (a reserve kept for more
        urgent callers); otherwise ``wait`` says when that would be so.
        """

    async def give_back_tokens(
        self, key: str, per_minute: float, capacity: float, count: int
    ) -> None:
        """Return ``count`` unused tokens to the bucket (never above ``capacity``; nothing
        while the bucket is paused, which emptied it anyway)."""

    async def pause_bucket(self, key: str, seconds: float) -> None:
        """Empty the bucket and hold it empty for ``seconds`` (the LMS said slow down)."""

    async def incr_with_ttl(
        self, key: str, ttl: float, amount: int = 1, *, anonymous: bool = False
    ) -> int:
        """Add ``amount`` (may be negative) to the integer counter at ``key`` and return the
        new value, atomically. A counter that did not exist starts at 0 and lives ``ttl``
        seconds from its creation (later calls never extend it: a fixed window). Counters
        never go below 0. ``get`` reads one as decimal bytes (``b"3"``).

        ``anonymous=True`` says an unauthenticated caller causes this write (the pending-login
        admission counters): a store with a size limit refuses it with
        :class:`gateway.errors.StoreFull` when full instead of making room. Security entries
        (replay caches, sessions, revocations) are never evicted to admit anything.
        """

    async def health_problems(self) -> list[str]:
        """Deployment problems an operator should fix that do not stop the store working
        (e.g. a Redis eviction policy that could drop replay-cache entries); [] when none.
        Never raises: what cannot be checked is reported as unknown."""

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached."""

    async def aclose(self) -> None:
        """Release connections."""
