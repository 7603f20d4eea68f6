"""Abuse limits on anonymous state: sign-ins started and not (yet) finished.

Every ``GET /auth/<idp>/login`` and every sign-in started by ``/login/<app>`` stores a
pending login (OIDC state; SAML request id and RelayState) for ``login_timeout_seconds``.
Anyone can start one without credentials, so without a limit a flood grows the store without
bound, and on a Redis that evicts under memory pressure it could push out replay-cache and
session entries. :class:`PendingLogins` admits a start only while

* the starts from one client address (an IPv6 client counts by its /64: one host gets a
  whole /64), and
* all starts together

that may still be pending stay under ``max_pending_logins_per_client`` and
``max_pending_logins``. The counters live in the store, so the limits hold across replicas.

Counting: fixed windows of ``login_timeout_seconds``; the count is the current window's plus
the previous one's. A pending login lives at most one window, so it is always inside those
two: the count is an upper bound of what is really pending, and the store never holds more
than the limits allow. A finished sign-in gives its slot back, so an employee (or an office
behind one NAT address) who completes sign-ins is not blocked by earlier abandoned ones.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable

from gateway.errors import StoreFull, StoreUnavailable, TooManyPendingLogins
from gateway.store.base import Store

log = logging.getLogger("gateway.limits")

_BUSY = "Too many sign-ins are being started right now; please try again in a minute."


# Parsing an address costs more than all of a sign-in's counter updates in the memory store;
# a bounded cache (one entry per recent client) keeps it off the hot path.
@functools.lru_cache(maxsize=4096)
def client_key(host: str | None) -> str:
    """The address a per-client limit counts by: IPv4 as is, IPv6 by its /64 prefix."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # Not an IP (a unix socket path, a test client name): bounded and key-safe.
        return "h-" + hashlib.sha256(host.encode()).hexdigest()[:16]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class PendingLogins:
    """Admission control for sign-in starts (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        window: float,
        max_total: int,
        max_per_client: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._window = float(window)
        self._max_total = max_total
        self._max_per_client = max_per_client
        self._clock = clock

    def _windows(self) -> tuple[int, float]:
        now = self._clock()
        index = math.floor(now / self._window)
        # Retry-After: when the previous window stops counting, but "a minute" at most; a
        # finished sign-in nearby may free a slot sooner.
        return index, min(60.0, max(1.0, (index + 1) * self._window - now))

    async def _count(self, prefix: str, index: int, amount: int, anonymous: bool) -> int:
        current = await self._store.incr_with_ttl(
            f"{prefix}:{index}", 2 * self._window, amount, anonymous=anonymous
        )
        previous = await self._store.get(f"{prefix}:{index - 1}")
        return current + (int(previous) if previous else 0)

    async def admit(self, client: str | None) -> None:
        """Count one more pending sign-in for ``client`` or raise TooManyPendingLogins
        (nothing counted then). StoreUnavailable passes through: fail closed."""
        index, retry = self._windows()
        total_key = "pending:total"
        per_client = f"pending:client:{client_key(client)}"
        # Total first: a refused start then creates no per-client counter, so the number of
        # counters is bounded by the admitted starts too.
        try:
            total = await self._count(total_key, index, 1, anonymous=True)
        except StoreFull:
            raise TooManyPendingLogins(
                "memory store full of anonymous state", public=_BUSY, retry_after=retry
            ) from None
        if total > self._max_total:
            await self._store.incr_with_ttl(f"{total_key}:{index}", 2 * self._window, -1)
            raise TooManyPendingLogins(
                "max_pending_logins reached", public=_BUSY, retry_after=retry
            )
        try:
            mine = await self._count(per_client, index, 1, anonymous=True)
        except StoreFull:
            await self._store.incr_with_ttl(f"{total_key}:{index}", 2 * self._window, -1)
            raise TooManyPendingLogins(
                "memory store full of anonymous state", public=_BUSY, retry_after=retry
            ) from None
        if mine > self._max_per_client:
            await self._store.incr_with_ttl(f"{per_client}:{index}", 2 * self._window, -1)
            await self._store.incr_with_ttl(f"{total_key}:{index}", 2 * self._window, -1)
            # The address is not logged: the log line's reference finds the request.
            raise TooManyPendingLogins("max_pending_logins_per_client reached", retry_after=retry)

    async def release(self, client: str | None) -> None:
        """Give back one slot of ``client`` (its sign-in finished, or never started at the
        IdP). Best effort: a store hiccup here must not fail a completed sign-in."""
        index, _ = self._windows()
        try:
            for prefix in ("pending:total", f"pending:client:{client_key(client)}"):
                # The slot was counted in the current window or the previous one.
                current = await self._store.get(f"{prefix}:{index}")
                slot = index if current and int(current) > 0 else index - 1
                await self._store.incr_with_ttl(f"{prefix}:{slot}", 2 * self._window, -1)
        except StoreUnavailable as exc:
            log.warning("pending-login slot not released: %s", exc.reason)
