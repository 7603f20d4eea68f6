"""Account cache and single flight around one app's connector.

* **Account cache**: per app, the employee's IdP identity (hashed) -> the
  :class:`LmsAccount` (LMS user id + digest of the last Profile sent), kept
  ``account_cache_seconds`` in the store. A returning employee's sign-in passes it to the
  connector as ``known``, which then spends one LMS call. When the LMS says the cached user
  is gone, the entry is dropped and provisioning runs again once.
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
import random
import secrets
import time
from collections.abc import Awaitable

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


def _encode(account: LmsAccount) -> bytes:
    return json.dumps(
        {"user_id": account.user_id, "profile_digest": account.profile_digest},
        separators=(",", ":"),
    ).encode()


def _decode(raw: bytes) -> LmsAccount | None:
    """The cached account, or None for anything malformed (treated as a cache miss)."""
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
    return LmsAccount(user_id=user_id, profile_digest=digest)


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
    ) -> None:
        """``lock_ttl`` bounds how long a crashed winner blocks others; ``wait_timeout``
        bounds how long a waiter waits for the winner before the queue page."""
        self.app_name = app_name
        self.app = app
        self.connector = connector
        self._store = store
        self._metrics = metrics
        self._lock_ttl = lock_ttl
        self._wait_timeout = wait_timeout

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
        known = await self._cached(key)
        if known is not None:
            try:
                return await self._finish(key, await self.connector.sign_in(profile, known, target))
            except AccountGone:
                # The LMS lost the account (deleted by an admin): forget it and provision anew,
                # once; a second AccountGone from a fresh sign-in is a connector bug and surfaces.
                log_event(log, logging.INFO, "cached LMS account gone", app=self.app_name)
                await self._store.delete(key)
        return await self._single_flight(key, lock_key, profile, target)

    async def cached_account(self, identity: Identity) -> LmsAccount | None:
        """The LMS account cached for ``identity`` (no LMS call), e.g. for embed pages."""
        return await self._cached(self._keys(identity)[0])

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
                    known = await self._cached(key)
                    result = await self.connector.sign_in(profile, known, target)
                    return await self._finish(key, result)
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
            known = await self._cached(key)
            if known is not None:
                try:
                    return await self._finish(
                        key, await self.connector.sign_in(profile, known, target)
                    )
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

    async def _cached(self, key: str) -> LmsAccount | None:
        if not self._cache_enabled:
            return None
        raw = await self._store.get(key)
        if raw is None:
            return None
        account = _decode(raw)
        if account is None:
            await self._store.delete(key)
        return account

    async def _finish(self, key: str, result: SignIn) -> SignIn:
        # Written on every sign-in: it records the digest of the Profile just sent and keeps
        # an active employee's entry alive. The link itself is a credential: never cached.
        if self._cache_enabled:
            write = self._store.set(key, _encode(result.account), self.app.account_cache_seconds)
            await self._best_effort("cache account", write)
        if self._metrics is not None and result.action is not ProvisionAction.NONE:
            self._metrics.provisioning.labels(self.app_name, result.action.value).inc()
        return result
