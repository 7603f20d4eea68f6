"""Account cache and single flight around one app's connector.

* **Account cache**: per app, the employee's IdP identity (hashed) -> the
  :class:`LmsAccount` (LMS user id + digest of the last Profile sent) and ``checked_at``, when
  the account itself was last looked at (found, created or read back by a full lookup). A
  returning employee's sign-in passes it to the connector as ``known``, which then spends one
  LMS call. When the LMS says the cached user is gone, the entry is dropped and provisioning
  runs again once.
* **Revalidation**: the one-call path never looks at the account, so an account an LMS admin
  deactivated (Damstra Not Current, Litmos inactive) would get links to a refusal page for
  as long as the entry lives. Once ``checked_at`` is ``revalidate_seconds`` old (0: always),
  the connector is called with ``verify=True`` and reads the account again (reactivating it
  or raising AccountInactive). Only such a check moves ``checked_at``: the write after an
  ordinary sign-in keeps it, and the entry's TTL counts from it too, so an active employee's
  entry lives at most ``account_cache_seconds`` after its last check, never forever.
* **Single flight**: a first sign-in (no cache entry) takes a lock in the store; simultaneous
  sign-ins of the same employee (double clicks, two tabs, two replicas) wait for the winner
  to cache the account and reuse it, so exactly one LMS account is created. When the winner
  fails it releases the lock and a waiter takes over.

The store being down is never worked around: StoreUnavailable propagates and the sign-in
is refused (see issue 6, "store down").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.connectors.base import Connector, LmsAccount, ProvisionAction, SignIn
from gateway.errors import AccountGone, BudgetExhausted, StoreUnavailable
from gateway.identity import Identity, Profile
from gateway.observability import Metrics, log_event
from gateway.settings import AppSettings
from gateway.store.base import Store

log = logging.getLogger("gateway.provisioning")

# Longest value we accept back from the store for an account (ids are short; anything
# bigger is not ours).
_MAX_ENTRY = 2048


@dataclass(frozen=True, slots=True)
class _Entry:
    """A cache entry: the account and when it was last checked (wall-clock seconds, shared
    by every replica)."""

    account: LmsAccount
    checked_at: float


def _encode(account: LmsAccount, checked_at: float) -> bytes:
    return json.dumps(
        {"user_id": account.user_id, "profile_digest": account.profile_digest,
         "checked_at": round(checked_at, 3)},
        separators=(",", ":"),
    ).encode()


def _decode(raw: bytes) -> _Entry | None:
    """The cached entry, or None for anything malformed (treated as a cache miss). An entry
    without a usable ``checked_at`` (written by an older version) is due for a check."""
    if len(raw) > _MAX_ENTRY:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    user_id, digest = data.get("user_id"), data.get("profile_digest")
    if not isinstance(user_id, str) or not user_id or not isinstance(digest, str):
        return None
    checked_at = data.get("checked_at")
    if (isinstance(checked_at, bool) or not isinstance(checked_at, int | float)
            or not math.isfinite(checked_at)):
        checked_at = 0.0  # NaN would compare as "never due"
    return _Entry(LmsAccount(user_id=user_id, profile_digest=digest), float(checked_at))


class Provisioner:
    """One app's connector behind the account cache and single flight."""

    def __init__(
        self,
        app_name: str,
        app: AppSettings,
        connector: Connector,
        store: Store,
        metrics: Metrics | None = None,
        *,
        lock_ttl: float = 30.0,
        wait_timeout: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``lock_ttl`` bounds how long a crashed winner blocks others; ``wait_timeout``
        bounds how long a waiter waits for the winner before the queue page. ``clock`` is
        wall-clock time (``checked_at`` is shared by replicas); tests inject their own."""
        self.app_name = app_name
        self.app = app
        self.connector = connector
        self._store = store
        self._metrics = metrics
        self._lock_ttl = lock_ttl
        self._wait_timeout = wait_timeout
        self._clock = clock

    def _keys(self, identity: Identity) -> tuple[str, str]:
        # Hashed so the store never holds raw IdP subjects or e-mail addresses in key names,
        # and so hostile subjects cannot shape keys (length, separators).
        digest = hashlib.sha256(identity.key.encode()).hexdigest()
        return f"account:{self.app_name}:{digest}", f"account-lock:{self.app_name}:{digest}"

    @property
    def _cache_enabled(self) -> bool:
        return self.app.account_cache_seconds > 0

    async def sign_in(self, identity: Identity, profile: Profile, target: str | None) -> SignIn:
        """Provision the employee as needed and mint a sign-in link (never cached, never logged).

        Raises whatever the connector raises (ConnectorError family, BudgetExhausted),
        StoreUnavailable when the store cannot be reached, and BudgetExhausted when the
        winner of a single flight takes longer than ``wait_timeout``.
        """
        key, lock_key = self._keys(identity)
        entry = await self._cached(key)
        if entry is not None:
            try:
                return await self._returning(key, entry, profile, target)
            except AccountGone:
                # The LMS lost the account (deleted by an admin): forget it and provision anew,
                # once; a second AccountGone from a fresh sign-in is a connector bug and surfaces.
                log_event(log, logging.INFO, "cached LMS account gone", app=self.app_name)
                await self._store.delete(key)
        return await self._single_flight(key, lock_key, profile, target)

    async def cached_account(self, identity: Identity) -> LmsAccount | None:
        """The LMS account cached for ``identity`` (no LMS call), e.g. for embed pages."""
        entry = await self._cached(self._keys(identity)[0])
        return entry.account if entry is not None else None

    def _due(self, checked_at: float) -> bool:
        """Whether a cached account must be looked at again before this sign-in."""
        age = self._clock() - checked_at
        # A checked_at far in the future is not one we wrote (clock jump, foreign writer):
        # check rather than trust it for ever.
        return age >= self.app.revalidate_seconds or age < -300

    async def _returning(
        self, key: str, entry: _Entry, profile: Profile, target: str | None
    ) -> SignIn:
        verify = self._due(entry.checked_at)
        checked_at = self._clock() if verify else entry.checked_at
        result = await self.connector.sign_in(profile, entry.account, target, verify=verify)
        return await self._finish(key, result, checked_at)

    async def _single_flight(
        self, key: str, lock_key: str, profile: Profile, target: str | None
    ) -> SignIn:
        deadline = time.monotonic() + self._wait_timeout
        pause = 0.02
        while True:
            token = secrets.token_hex(8).encode()
            if await self._store.set_if_absent(lock_key, token, self._lock_ttl):
                try:
                    # Double-checked: the previous winner may have cached the account between
                    # our cache read and taking the lock.
                    entry = await self._cached(key)
                    if entry is not None:
                        return await self._returning(key, entry, profile, target)
                    checked_at = self._clock()
                    result = await self.connector.sign_in(profile, None, target)
                    return await self._finish(key, result, checked_at)
                finally:
                    # The Store interface has no compare-and-delete; a winner that outlived
                    # lock_ttl may free a successor's lock, which at worst lets one more
                    # waiter in, and that one finds the cached account first.
                    await self._best_effort("release lock", self._store.delete(lock_key))
            # Someone else is provisioning this employee: wait for their account.
            if time.monotonic() >= deadline:
                raise BudgetExhausted(
                    f"app {self.app_name}: waited {self._wait_timeout:.0f}s for a concurrent "
                    "first sign-in of the same employee",
                    retry_after=2.0,
                )
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))  # noqa: S311 - jitter only
            pause = min(pause * 1.5, 0.25)
            entry = await self._cached(key)
            if entry is not None:
                try:
                    return await self._returning(key, entry, profile, target)
                except AccountGone:
                    # Cached by the winner a moment ago and already gone: take over.
                    await self._store.delete(key)

    async def _best_effort(self, what: str, operation: Awaitable[None]) -> None:
        # After the LMS minted a link every security check is behind us; losing the store
        # now costs the next sign-in some LMS calls (or a lock that expires on its own), so
        # the employee still gets in rather than an error page for an unused link.
        try:
            await operation
        except StoreUnavailable as exc:
            log_event(log, logging.WARNING, f"could not {what}", app=self.app_name,
                      reason=exc.reason)

    async def _cached(self, key: str) -> _Entry | None:
        if not self._cache_enabled:
            return None
        raw = await self._store.get(key)
        if raw is None:
            return None
        entry = _decode(raw)
        if entry is None:
            await self._store.delete(key)
        return entry

    async def _finish(self, key: str, result: SignIn, checked_at: float) -> SignIn:
        # Written on every sign-in: it records the digest of the Profile just sent. It keeps
        # ``checked_at`` (only a check moves it) and lives account_cache_seconds from that
        # check, not from this write. The link itself is a credential: never cached.
        if self._cache_enabled:
            remaining = self.app.account_cache_seconds - (self._clock() - checked_at)
            ttl = max(1.0, min(remaining, float(self.app.account_cache_seconds)))
            write = self._store.set(key, _encode(result.account, checked_at), ttl)
            await self._best_effort("cache account", write)
        if self._metrics is not None and result.action is not ProvisionAction.NONE:
            self._metrics.provisioning.labels(self.app_name, result.action.value).inc()
        return result
