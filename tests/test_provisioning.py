"""Account cache and single flight (issue 6 items 2 and 3), with a fake LMS that counts calls.

The fake LMS behaves like the real ones where it matters here: a first sign-in looks the
employee up by e-mail, creates the account when absent and mints a link (three calls), each
call takes a little time, so simultaneous first sign-ins without single flight would all
miss the lookup and create duplicates.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from dataclasses import dataclass, field, replace

import pytest
import redis.asyncio as aioredis

from gateway.connectors.base import LmsAccount, ProvisionAction, SignIn
from gateway.errors import AccountGone, BudgetExhausted, LmsUnavailable, StoreUnavailable
from gateway.identity import Identity, Profile
from gateway.observability import Metrics
from gateway.provisioning import Provisioner
from gateway.settings import AppSettings
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.redis_server import RedisServer, redis_server, redis_url  # noqa: F401

ALICE = Identity(idp="corp", subject="sub-alice-1", email="alice@example.com")
ALICE_PROFILE = Profile(
    email="alice@example.com", first_name="Alice", last_name="A", username="alice@example.com"
)


@dataclass
class FakeLms:
    """The LMS side: accounts by id, and a log of every API call."""

    latency: float = 0.01
    accounts: dict[str, Profile] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))
    fail_creates: int = 0  # the next N creates answer 503
    hang_creates: bool = False

    async def call(self, operation: str) -> None:
        self.calls.append(operation)
        await asyncio.sleep(self.latency)


class FakeConnector:
    """Follows the Connector contract in gateway/connectors/base.py."""

    def __init__(self, lms: FakeLms, *, update_on_login: bool = True) -> None:
        self.lms = lms
        self.update_on_login = update_on_login
        self.known_seen: list[LmsAccount | None] = []
        self.verify_seen: list[bool] = []

    async def test_connection(self) -> None:
        await self.lms.call("ping")

    async def sign_in(
        self, profile: Profile, known: LmsAccount | None, target: str | None, *,
        verify: bool = False,
    ) -> SignIn:
        self.known_seen.append(known)
        self.verify_seen.append(verify)
        lms = self.lms
        action = ProvisionAction.NONE
        if known is not None:
            if known.profile_digest != profile.digest() and self.update_on_login:
                await lms.call("update")
                if known.user_id not in lms.accounts:
                    raise AccountGone("user not found")
                lms.accounts[known.user_id] = profile
                action = ProvisionAction.UPDATED
            user_id = known.user_id
        else:
            await lms.call("find")
            found = [uid for uid, p in lms.accounts.items() if p.email == profile.email]
            if found:
                user_id = found[0]
            else:
                await lms.call("create")
                if lms.hang_creates:
                    await asyncio.sleep(3600)
                if lms.fail_creates:
                    lms.fail_creates -= 1
                    raise LmsUnavailable("create: LMS server error 503")
                user_id = str(next(lms.ids))
                lms.accounts[user_id] = profile
                action = ProvisionAction.CREATED
        await lms.call("login_link")
        if user_id not in lms.accounts:
            raise AccountGone("user not found")
        return SignIn(
            url=f"https://lms.example/login?key=secret-{uuid.uuid4().hex}",
            account=LmsAccount(user_id=user_id, profile_digest=profile.digest()),
            action=action,
        )

    async def aclose(self) -> None:
        return None


def app_settings(**overrides: object) -> AppSettings:
    return AppSettings(connector="skyprep", idps=("corp",), **overrides)  # type: ignore[arg-type]


@pytest.fixture
def lms() -> FakeLms:
    return FakeLms()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def provisioner(
    lms: FakeLms,
    store: Store,
    *,
    app: str = "training",
    metrics: Metrics | None = None,
    **kwargs: object,
) -> Provisioner:
    settings = app_settings(**{k: v for k, v in kwargs.items()
                               if k in ("account_cache_seconds", "revalidate_seconds")})
    timing = {k: v for k, v in kwargs.items() if k in ("lock_ttl", "wait_timeout", "clock")}
    return Provisioner(app, settings, FakeConnector(lms), store, metrics, **timing)  # type: ignore[arg-type]


async def test_first_sign_in_creates_and_returning_costs_one_call(
    lms: FakeLms, store: MemoryStore
) -> None:
    prov = provisioner(lms, store)
    first = await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert first.action is ProvisionAction.CREATED
    assert lms.calls == ["find", "create", "login_link"]

    lms.calls.clear()
    again = await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert lms.calls == ["login_link"]
    assert again.action is ProvisionAction.NONE
    assert again.account == first.account
    assert again.url != first.url


async def test_changed_profile_is_updated_and_the_new_digest_cached(
    lms: FakeLms, store: MemoryStore
) -> None:
    prov = provisioner(lms, store)
    await prov.sign_in(ALICE, ALICE_PROFILE, None)
    renamed = replace(ALICE_PROFILE, last_name="Married-Name")
    lms.calls.clear()
    result = await prov.sign_in(ALICE, renamed, None)
    assert result.action is ProvisionAction.UPDATED
    assert lms.calls == ["update", "login_link"]
    assert lms.accounts[result.account.user_id].last_name == "Married-Name"
    lms.calls.clear()
    await prov.sign_in(ALICE, renamed, None)
    assert lms.calls == ["login_link"]


async def test_account_deleted_in_the_lms_is_provisioned_again(
    lms: FakeLms, store: MemoryStore
) -> None:
    prov = provisioner(lms, store)
    first = await prov.sign_in(ALICE, ALICE_PROFILE, None)
    lms.accounts.clear()  # an LMS admin deleted the user
    lms.calls.clear()
    result = await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert result.action is ProvisionAction.CREATED
    assert result.account.user_id != first.account.user_id
    assert lms.calls == ["login_link", "find", "create", "login_link"]
    lms.calls.clear()
    await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert lms.calls == ["login_link"]  # the new account is what is cached now


async def test_account_gone_is_retried_once_only(store: MemoryStore) -> None:
    class AlwaysGone(FakeConnector):
        async def sign_in(
            self, profile: Profile, known: LmsAccount | None, target: str | None, *,
            verify: bool = False,
        ) -> SignIn:
            self.known_seen.append(known)
            raise AccountGone("user not found")

    connector = AlwaysGone(FakeLms())
    prov = Provisioner("training", app_settings(), connector, store)
    cached = LmsAccount("42", ALICE_PROFILE.digest())
    # Seed the cache through a successful sign-in of a well-behaved connector.
    lms = FakeLms()
    lms.accounts["42"] = ALICE_PROFILE
    await Provisioner("training", app_settings(), FakeConnector(lms), store).sign_in(
        ALICE, ALICE_PROFILE, None
    )
    with pytest.raises(AccountGone):
        await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert connector.known_seen == [cached, None]


async def test_five_simultaneous_first_sign_ins_create_one_account(
    lms: FakeLms, store: MemoryStore
) -> None:
    metrics = Metrics()
    prov = provisioner(lms, store, metrics=metrics)
    results = await asyncio.gather(*(prov.sign_in(ALICE, ALICE_PROFILE, None) for _ in range(5)))
    assert len(lms.accounts) == 1
    assert lms.calls.count("create") == 1
    assert {r.account.user_id for r in results} == set(lms.accounts)
    assert [r.action for r in results].count(ProvisionAction.CREATED) == 1
    assert len({r.url for r in results}) == 5  # everyone got a link of their own
    # The four waiters reused the cached account: one call each.
    assert len(lms.calls) == 3 + 4
    created = metrics.registry.get_sample_value(
        "gateway_provisioning_actions_total", {"app": "training", "action": "created"}
    )
    assert created == 1.0


async def test_without_single_flight_the_fake_lms_would_duplicate(lms: FakeLms) -> None:
    # Guards the test above: this fake LMS does create duplicates under a plain race.
    connectors = [FakeConnector(lms) for _ in range(5)]
    await asyncio.gather(*(c.sign_in(ALICE_PROFILE, None, None) for c in connectors))
    assert len(lms.accounts) > 1


async def test_two_replicas_sharing_redis_create_one_account(redis_url: str) -> None:  # noqa: F811
    lms = FakeLms(latency=0.02)
    prefix = f"p{uuid.uuid4().hex[:8]}:"
    stores = [RedisStore(redis_url, key_prefix=prefix) for _ in range(2)]
    replicas = [provisioner(lms, s) for s in stores]
    raw = aioredis.from_url(redis_url)
    try:
        results = await asyncio.gather(
            *(replicas[i % 2].sign_in(ALICE, ALICE_PROFILE, None) for i in range(6))
        )
        assert len(lms.accounts) == 1
        assert lms.calls.count("create") == 1
        assert {r.account.user_id for r in results} == set(lms.accounts)
        lms.calls.clear()
        await replicas[1].sign_in(ALICE, ALICE_PROFILE, None)
        assert lms.calls == ["login_link"]
        # What the store holds: no subject or e-mail in key names, no sign-in link anywhere.
        keys = await raw.keys(prefix + "*")
        assert keys and all(b"alice" not in k and b"sub-alice" not in k for k in keys)
        for k in keys:
            value = await raw.get(k)
            assert value is not None and b"secret-" not in value and b"https" not in value
        assert len(await raw.keys(prefix + "account-lock:*")) == 0  # locks released
    finally:
        await raw.aclose()
        for s in stores:
            await s.aclose()


async def test_when_the_winner_fails_a_waiter_takes_over(lms: FakeLms, store: MemoryStore) -> None:
    lms.fail_creates = 1
    prov = provisioner(lms, store)
    results = await asyncio.gather(
        *(prov.sign_in(ALICE, ALICE_PROFILE, None) for _ in range(5)), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], LmsUnavailable)
    assert len(lms.accounts) == 1
    assert {r.account.user_id for r in results if isinstance(r, SignIn)} == set(lms.accounts)


async def test_waiters_give_up_with_the_queue_page_when_the_winner_hangs(
    lms: FakeLms, store: MemoryStore
) -> None:
    lms.hang_creates = True
    prov = provisioner(lms, store, wait_timeout=0.3)
    winner = asyncio.create_task(prov.sign_in(ALICE, ALICE_PROFILE, None))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BudgetExhausted) as caught:
        await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert 0.2 < loop.time() - started < 1.0
    assert caught.value.retry_after > 0
    winner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await winner
    # The cancelled winner released its lock: the next sign-in goes straight through.
    lms.hang_creates = False
    assert (await prov.sign_in(ALICE, ALICE_PROFILE, None)).action is ProvisionAction.CREATED


async def test_a_crashed_winners_lock_expires(lms: FakeLms, store: MemoryStore) -> None:
    prov = provisioner(lms, store, lock_ttl=0.3, wait_timeout=2.0)
    key = prov._keys(ALICE)[1]
    # Another replica took the lock and died without releasing it.
    assert await store.set_if_absent(key, b"dead-replica", 0.3)
    result = await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert result.action is ProvisionAction.CREATED


async def test_cache_is_per_app_and_per_employee(lms: FakeLms, store: MemoryStore) -> None:
    training, safety = (
        provisioner(lms, store, app="training"),
        provisioner(lms, store, app="safety"),
    )
    await training.sign_in(ALICE, ALICE_PROFILE, None)
    lms.calls.clear()
    await safety.sign_in(ALICE, ALICE_PROFILE, None)
    assert lms.calls == ["find", "login_link"]  # not cached for this app yet; found, not created
    bob = Identity(idp="corp", subject="sub-bob")
    same_subject_other_idp = Identity(idp="contractors", subject="sub-alice-1")
    bob_profile = replace(ALICE_PROFILE, email="bob@example.com")
    for identity in (bob, same_subject_other_idp):
        lms.calls.clear()
        await training.sign_in(identity, bob_profile, None)
        assert lms.calls[0] == "find"


async def test_cache_entries_expire(lms: FakeLms) -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    prov = provisioner(lms, store, account_cache_seconds=3600)
    await prov.sign_in(ALICE, ALICE_PROFILE, None)
    now[0] += 3601
    lms.calls.clear()
    result = await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert lms.calls == ["find", "login_link"]
    assert result.action is ProvisionAction.NONE


async def test_cache_disabled_still_creates_one_account(lms: FakeLms, store: MemoryStore) -> None:
    prov = provisioner(lms, store, account_cache_seconds=0)
    await asyncio.gather(*(prov.sign_in(ALICE, ALICE_PROFILE, None) for _ in range(4)))
    assert len(lms.accounts) == 1
    lms.calls.clear()
    await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert lms.calls == ["find", "login_link"]


async def test_garbage_in_the_cache_is_a_miss(lms: FakeLms, store: MemoryStore) -> None:
    prov = provisioner(lms, store)
    key = prov._keys(ALICE)[0]
    for junk in (b"not json", b"[]", b'{"user_id": 5}', b'{"user_id": ""}', b"{" * 5000):
        await store.set(key, junk, 60)
        lms.calls.clear()
        await prov.sign_in(ALICE, ALICE_PROFILE, None)
        assert lms.calls[0] == "find"
        await store.delete(key)


async def test_store_down_refuses_without_calling_the_lms(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    lms = FakeLms()
    store = RedisStore(redis_server.url)
    prov = provisioner(lms, store)
    try:
        redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await prov.sign_in(ALICE, ALICE_PROFILE, None)
        assert lms.calls == []
        redis_server.start()
        assert (await prov.sign_in(ALICE, ALICE_PROFILE, None)).action is ProvisionAction.CREATED
    finally:
        await store.aclose()


async def test_store_lost_after_the_link_was_minted_still_signs_in(lms: FakeLms) -> None:
    class FailingWrites(MemoryStore):
        async def set(self, key: str, value: bytes, ttl: float) -> None:
            raise StoreUnavailable("redis set failed: ConnectionError")

        async def delete(self, key: str) -> None:
            raise StoreUnavailable("redis delete failed: ConnectionError")

    prov = provisioner(lms, FailingWrites())
    result = await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert result.action is ProvisionAction.CREATED  # the employee gets in
    assert len(lms.accounts) == 1



# -- revalidation: checked_at is moved by checks only (issue 10 item 7) ----------------------


def clocked() -> tuple[list[float], MemoryStore]:
    """One clock for the store's TTLs and the provisioner's checked_at."""
    now = [1_800_000_000.0]
    return now, MemoryStore(clock=lambda: now[0])


async def test_returning_sign_ins_do_not_postpone_the_check(lms: FakeLms) -> None:
    now, store = clocked()
    prov = provisioner(lms, store, revalidate_seconds=3600, clock=lambda: now[0])
    connector = prov.connector
    assert isinstance(connector, FakeConnector)
    await prov.sign_in(ALICE, ALICE_PROFILE, None)  # found/created: checked now
    # Sign-ins every 20 minutes: each is one call and none extends the check.
    for _ in range(2):
        now[0] += 1200
        lms.calls.clear()
        await prov.sign_in(ALICE, ALICE_PROFILE, None)
        assert lms.calls == ["login_link"]
    now[0] += 1200  # 3600 s after the check, although the last sign-in was 20 min ago
    await prov.sign_in(ALICE, ALICE_PROFILE, None)
    now[0] += 1200
    await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert connector.verify_seen == [False, False, False, True, False]


async def test_revalidate_zero_checks_every_sign_in(lms: FakeLms, store: MemoryStore) -> None:
    prov = provisioner(lms, store, revalidate_seconds=0)
    connector = prov.connector
    assert isinstance(connector, FakeConnector)
    for _ in range(3):
        await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert connector.verify_seen == [False, True, True]


async def test_an_active_employees_entry_expires_from_its_check_not_its_last_use(
    lms: FakeLms,
) -> None:
    now, store = clocked()
    prov = provisioner(lms, store, account_cache_seconds=3600, revalidate_seconds=86400,
                       clock=lambda: now[0])
    await prov.sign_in(ALICE, ALICE_PROFILE, None)
    now[0] += 3000
    lms.calls.clear()
    await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert lms.calls == ["login_link"]
    now[0] += 601  # 3601 s after the entry was written by a check: gone, although used
    lms.calls.clear()
    await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert lms.calls == ["find", "login_link"]


@pytest.mark.parametrize("checked_at", [None, "yesterday", True, 4_000_000_000.0,
                                        float("nan"), float("inf")])
async def test_entries_without_a_believable_check_time_are_checked(
    lms: FakeLms, checked_at: object
) -> None:
    now, store = clocked()
    prov = provisioner(lms, store, clock=lambda: now[0])
    connector = prov.connector
    assert isinstance(connector, FakeConnector)
    first = await prov.sign_in(ALICE, ALICE_PROFILE, None)
    entry: dict[str, object] = {"user_id": first.account.user_id,
                                "profile_digest": first.account.profile_digest}
    if checked_at is not None:
        entry["checked_at"] = checked_at  # older versions wrote none; the future is not ours
    await store.set(prov._keys(ALICE)[0], json.dumps(entry).encode(), 3600)
    await prov.sign_in(ALICE, ALICE_PROFILE, None)
    assert connector.verify_seen == [False, True]
