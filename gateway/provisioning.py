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
  fails it releases the lock and a waiter takes over. The lock is fenced: it lives longer
  than the sign-in's deadline (which bounds everything the winner does), it is renewed and
  checked right before any call that must not be sent twice (a create: ``CallContext.fence``),
  and it is released only by its owner (compare-and-delete), so a slow winner can neither
  lose its lock to a second creator nor free a successor's lock.
* **Budget and deadline** (issue 11): each sign-in runs under a
  :class:`gateway.call_context.CallContext` with the app's ``sign_in_deadline_seconds``. With a
  budget, a first sign-in reserves every call it expects (the connector's
  ``first_sign_in_calls``) before its first call, a returning one reserves one; unspent tokens
  go back when it ends (see ``budget.py`` for why). Every change made in the LMS is audited
  (``lms_effect``) when the LMS confirms it, whatever happens to the sign-in afterwards.

The store being down is never worked around: StoreUnavailable propagates and the sign-in
is refused (see issue 6, "store down").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable

from gateway.account_entry import Entry, decode, encode
from gateway.budget import Budget
from gateway.call_context import CallContext, lms_calls
from gateway.connectors.base import Connector, LmsAccount, ProvisionAction, SignIn
from gateway.errors import (
    AccountGone,
    BudgetExhausted,
    DeadlineExceeded,
    EmployeeBusy,
    LmsUnavailable,
    StoreUnavailable,
)
from gateway.identity import Identity, Profile
from gateway.observability import Metrics, audit, log_event, request_id_var
from gateway.settings import AppSettings
from gateway.store.base import Store

log = logging.getLogger("gateway.provisioning")

# The single-flight lock outlives the sign-in's deadline by this much (store round trips,
# a replica's clock running a little fast), and is renewed before every create.
LOCK_MARGIN = 15.0


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
        budget: Budget | None = None,
        lock_ttl: float | None = None,
        wait_timeout: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``budget`` (the one the connector's LmsHttp spends) lets sign-ins reserve their
        calls up front; without it every call queues on its own. ``lock_ttl`` bounds how
        long a crashed winner blocks others (default: the deadline plus LOCK_MARGIN);
        ``wait_timeout`` bounds how long a waiter waits for the winner before the queue
        page (and the deadline does too). ``clock`` is wall-clock time (``checked_at`` is
        shared by replicas); tests inject their own."""
        self.app_name = app_name
        self.app = app
        self.connector = connector
        self._store = store
        self._metrics = metrics
        self._budget = budget
        self._deadline = app.budget.sign_in_deadline_seconds
        self._lock_ttl = self._deadline + LOCK_MARGIN if lock_ttl is None else lock_ttl
        self._wait_timeout = wait_timeout
        self._clock = clock
        # Deadlines are on the budget's clock (monotonic; virtual in tests).
        self._monotonic = budget.clock if budget is not None else time.monotonic

    def _keys(self, identity: Identity) -> tuple[str, str]:
        digest = identity.key_digest
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
        ctx = CallContext(
            deadline=self._monotonic() + self._deadline,
            employee=identity.key_digest,  # a hash, never an e-mail
            on_effect=self._auditor(identity),
        )
        with lms_calls(ctx):
            try:
                entry = await self._cached(key)
                if entry is not None:
                    try:
                        return await self._returning(ctx, key, entry, profile, target)
                    except AccountGone:
                        # The LMS lost the account (deleted by an admin): forget it and
                        # provision anew, once; a second AccountGone from a fresh sign-in is a
                        # connector bug and surfaces.
                        log_event(log, logging.INFO, "cached LMS account gone",
                                  app=self.app_name)
                        await self._store.delete(key)
                return await self._single_flight(ctx, key, lock_key, profile, target)
            finally:
                await self._release(ctx)

    def _auditor(self, identity: Identity) -> Callable[[str, str], None]:
        """The ``on_effect`` hook: one audit event per change the LMS confirmed, at once
        (the same fields as the sign-in's audit event, minus the e-mail address)."""
        reference = request_id_var.get()

        def on_effect(operation: str, action: str) -> None:
            audit("lms_effect", subject=identity.subject, idp=identity.idp, app=self.app_name,
                  action=action, operation=operation, outcome="done", reference=reference)

        return on_effect

    async def _reserve(self, ctx: CallContext, calls: int) -> None:
        if self._budget is None:
            return
        try:
            await self._budget.reserve(ctx, calls)
        except BudgetExhausted as exc:
            if self._metrics is not None:
                counter = (self._metrics.employee_busy if isinstance(exc, EmployeeBusy)
                           else self._metrics.budget_exhausted)
                counter.labels(self.app_name).inc()
            raise

    async def _release(self, ctx: CallContext) -> None:
        if self._budget is None or not ctx.prepaid:
            ctx.prepaid.clear()
            return
        try:
            refunded = await self._budget.release(ctx)
        except StoreUnavailable as exc:
            # Unspent tokens then simply mature unused: the budget errs on the LMS's side.
            log_event(log, logging.WARNING, "could not give back LMS calls", app=self.app_name,
                      reason=exc.reason)
            return
        if self._metrics is not None and refunded:
            self._metrics.budget_refunds.labels(self.app_name).inc(refunded)

    def _first_sign_in_calls(self, profile: Profile) -> int:
        """What the connector says a first sign-in costs (1 for a connector that says
        nothing: its further calls then queue as continuing calls)."""
        estimate = getattr(self.connector, "first_sign_in_calls", None)
        calls = estimate(profile) if callable(estimate) else 1
        return max(1, calls) if isinstance(calls, int) else 1

    def _owner_key(self, user_id: str) -> str:
        return f"account-owner:{self.app_name}:{hashlib.sha256(user_id.encode()).hexdigest()}"

    async def _index(self, account: LmsAccount, key: str, ttl: float) -> None:
        # LMS user id -> cache key, so SCIM (which never sees IdP subjects) can drop the entry.
        await self._store.set(self._owner_key(account.user_id), key.encode(), ttl)

    async def forget_user(self, user_id: str) -> None:
        """Drop the cached account of LMS user ``user_id`` (SCIM deactivated or changed it):
        the next sign-in of that employee looks the account up again (and is refused when it
        is inactive and the app does not reactivate)."""
        owner = self._owner_key(user_id)
        key = await self._store.get(owner)
        if key is not None and key.startswith(f"account:{self.app_name}:".encode()):
            await self._store.delete(key.decode())
        await self._store.delete(owner)

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
        self, ctx: CallContext, key: str, entry: Entry, profile: Profile, target: str | None
    ) -> SignIn:
        verify = self._due(entry.checked_at)
        checked_at = self._clock() if verify else entry.checked_at
        await self._reserve(ctx, 1)
        result = await self.connector.sign_in(profile, entry.account, target, verify=verify)
        return await self._finish(key, result, checked_at)

    async def _single_flight(
        self, ctx: CallContext, key: str, lock_key: str, profile: Profile, target: str | None
    ) -> SignIn:
        left = ctx.remaining(self._monotonic())
        by_deadline = left is not None and left < self._wait_timeout
        deadline = self._monotonic() + (self._wait_timeout if left is None
                                        else min(self._wait_timeout, left))
        pause = 0.02
        while True:
            token = secrets.token_hex(8).encode()
            if await self._store.set_if_absent(lock_key, token, self._lock_ttl):
                ctx.fence = self._fence(lock_key, token)
                try:
                    # Double-checked: the previous winner may have cached the account between
                    # our cache read and taking the lock.
                    entry = await self._cached(key)
                    if entry is not None:
                        return await self._returning(ctx, key, entry, profile, target)
                    await self._reserve(ctx, self._first_sign_in_calls(profile))
                    checked_at = self._clock()
                    result = await self.connector.sign_in(profile, None, target)
                    return await self._finish(key, result, checked_at)
                finally:
                    ctx.fence = None
                    # Only our own lock: past its TTL a successor may hold it.
                    await self._best_effort(
                        "release lock", self._store.delete_if_equals(lock_key, token)
                    )
            # Someone else is provisioning this employee: wait for their account.
            if self._monotonic() >= deadline:
                if by_deadline:
                    raise DeadlineExceeded(
                        f"app {self.app_name}: a concurrent first sign-in of the same employee "
                        "did not finish before this sign-in's deadline"
                    )
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
                    return await self._returning(ctx, key, entry, profile, target)
                except AccountGone:
                    # Cached by the winner a moment ago and already gone: take over.
                    await self._store.delete(key)

    def _fence(self, lock_key: str, token: bytes) -> Callable[[], Awaitable[None]]:
        """Before a create: renew our lock, and refuse the call when it is no longer ours
        (expired and taken by another sign-in, which may be creating the account now)."""

        async def fence() -> None:
            if not await self._store.renew_if_equals(lock_key, token, self._lock_ttl):
                raise LmsUnavailable(
                    f"app {self.app_name}: single-flight lock lost before a create; not "
                    "creating a second account"
                )

        return fence

    async def _best_effort(self, what: str, operation: Awaitable[object]) -> None:
        # After the LMS minted a link every security check is behind us; losing the store
        # now costs the next sign-in some LMS calls (or a lock that expires on its own), so
        # the employee still gets in rather than an error page for an unused link.
        try:
            await operation
        except StoreUnavailable as exc:
            log_event(log, logging.WARNING, f"could not {what}", app=self.app_name,
                      reason=exc.reason)

    async def _cached(self, key: str) -> Entry | None:
        if not self._cache_enabled:
            return None
        raw = await self._store.get(key)
        if raw is None:
            return None
        entry = decode(raw)
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
            write = self._store.set(key, encode(result.account, checked_at), ttl)
            await self._best_effort("cache account", write)
            await self._best_effort("index account", self._index(result.account, key, ttl))
        if self._metrics is not None and result.action is not ProvisionAction.NONE:
            self._metrics.provisioning.labels(self.app_name, result.action.value).inc()
        return result
