"""The store: a small async key-value interface shared by every replica.

Implementations: ``memory`` (one process, the default) and ``redis`` (several replicas).
Values are bytes; every key has a TTL so nothing lives forever. Operations that must be
atomic across replicas (set-if-absent, pop, token bucket) are single calls here, so a
Redis implementation can make them one round trip.

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

    async def delete(self, key: str) -> None:
        """Remove the key if present."""

    async def take_token(
        self, key: str, per_minute: float, capacity: float
    ) -> tuple[float, float]:
        """Token bucket: take one token. Returns ``(wait, tokens_left)``: wait is 0.0 when
        the token was taken, else the seconds until one is free (nothing taken).

        The bucket refills at ``per_minute`` tokens per minute up to ``capacity``.
        """

    async def pause_bucket(self, key: str, seconds: float) -> None:
        """Empty the bucket and hold it empty for ``seconds`` (the LMS said slow down)."""

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached."""

    async def aclose(self) -> None:
        """Release connections."""
