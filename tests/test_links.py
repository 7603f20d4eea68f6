"""Reusable sign-in links (gateway/links.py, issue 11 items 2 and 3): sealed per employee, app
and target; kept only as long as the vendor and the app allow; dropped with the account.

Real stores (memory, and a real redis-server where sharing matters); a virtual wall clock."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest

from gateway.connectors.base import REUSE_MARGIN_SECONDS, LmsAccount, ProvisionAction, SignIn
from gateway.connectors.damstra import link_reusable_until
from gateway.connectors.skyprep import SkyPrepConnector, daily_key_reusable_until
from gateway.errors import StoreUnavailable
from gateway.identity import Identity, Profile
from gateway.links import CachedLink, RecentLinks, reuse_window
from gateway.sandbox.skyprep import SkyPrepSimulator
from gateway.settings import AppSettings, Secret, SkyPrepSettings
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.connector_conformance import make_http, profile
from tests.support.redis_server import RedisServer, redis_server, redis_url  # noqa: F401

KEY = "test-signing-key-" + "k" * 32
ALICE = Identity(idp="corp", subject="sub-alice", email="alice@example.com")
BOB = Identity(idp="corp", subject="sub-bob", email="bob@example.com")
PROFILE = Profile(email="alice@example.com", first_name="Alice", last_name="A",
                  username="alice@example.com")
LINK = "https://acme.skyprepapp.com/account/login_with_key?login_key=SECRET-KEY-123"
T0 = 1_700_000_000.0  # a wall-clock instant (14:13 UTC)


def app(**overrides: Any) -> AppSettings:
    return AppSettings(connector="skyprep", idps=("corp",), **overrides)


@dataclass
class Accounts:
    """What provisioning has cached (the AccountCache side)."""

    cached: dict[str, LmsAccount] = field(default_factory=dict)

    async def cached_account(self, identity: Identity) -> LmsAccount | None:
        return self.cached.get(identity.key)


def signed_in(url: str = LINK, *, until: float | None = T0 + 3 * 3600,
              user_id: str = "u-1") -> SignIn:
    return SignIn(url, LmsAccount(user_id, PROFILE.digest()), ProvisionAction.NONE, until)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    redis = RedisStore(request.getfixturevalue("redis_url"),
                       key_prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield redis
    await redis.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def accounts() -> Accounts:
    return Accounts({ALICE.key: LmsAccount("u-1", PROFILE.digest()),
                     BOB.key: LmsAccount("u-2", PROFILE.digest())})


async def kept(links: RecentLinks, settings: AppSettings, accounts: Accounts,
               identity: Identity = ALICE, target: str | None = None,
               name: str = "training") -> str | None:
    return await links.lookup(name, settings, accounts, identity, PROFILE, target)


# -- sealing --------------------------------------------------------------------------------


async def test_the_store_holds_neither_the_link_nor_the_email(
    store: Store, clock: Clock, accounts: Accounts
) -> None:
    links = RecentLinks(KEY, store, clock=clock)
    await links.remember("training", app(), ALICE, None, signed_in())
    (key,) = [k for k in await _keys(store) if k.startswith("link:")]
    assert "alice" not in key and "sub-alice" not in key
    raw = await store.get(key)
    assert raw is not None and b"SECRET-KEY" not in raw and b"login_key" not in raw
    assert await kept(links, app(), accounts) == LINK


async def test_a_value_copied_to_another_employee_or_app_does_not_open(
    store: Store, clock: Clock, accounts: Accounts
) -> None:
    links = RecentLinks(KEY, store, clock=clock)
    await links.remember("training", app(), ALICE, None, signed_in())
    (alice_key,) = [k for k in await _keys(store) if k.startswith("link:")]
    value = await store.get(alice_key)
    assert value is not None
    # Bob's entry and another app's entry, written with Alice's sealed value.
    await links.remember("training", app(), BOB, None, signed_in(user_id="u-2"))
    await links.remember("other", app(), ALICE, None, signed_in())
    for other in [k for k in await _keys(store) if k.startswith("link:") and k != alice_key]:
        await store.set(other, value, 60)
    accounts.cached[BOB.key] = LmsAccount("u-1", PROFILE.digest())  # even the same LMS id
    assert await kept(links, app(), accounts, BOB) is None
    assert await kept(links, app(), accounts, ALICE, name="other") is None
    # The original still opens for Alice, and only for the target it was minted for.
    assert await kept(links, app(), accounts, ALICE) == LINK
    assert await kept(links, app(), accounts, ALICE, target="course:1") is None


async def test_another_signing_key_or_a_changed_byte_opens_nothing(
    store: Store, clock: Clock, accounts: Accounts
) -> None:
    await RecentLinks(KEY, store, clock=clock).remember("training", app(), ALICE, None,
                                                        signed_in())
    assert await kept(RecentLinks(KEY + "x", store, clock=clock), app(), accounts) is None
    links = RecentLinks(KEY, store, clock=clock)
    (key,) = [k for k in await _keys(store) if k.startswith("link:")]
    value = await store.get(key)
    assert value is not None
    for tampered in (value[:-1] + bytes([value[-1] ^ 1]), value[:20], b"", b"\x01" * 5000,
                     b"\x02" + value[1:]):
        await store.set(key, tampered, 60)
        assert await kept(links, app(), accounts) is None


def test_repr_and_exceptions_never_show_the_link() -> None:
    assert "SECRET" not in repr(CachedLink(LINK, "u-1", T0, T0 + 10))
    assert "SECRET" not in repr(signed_in())


# -- how long -----------------------------------------------------------------------------


async def test_repeat_clicks_get_the_link_for_seconds_only(
    store: Store, clock: Clock, accounts: Accounts
) -> None:
    links, settings = RecentLinks(KEY, store, clock=clock), app()  # the default mode
    assert settings.reuse_links == "repeat_clicks" and settings.repeat_click_seconds == 10
    await links.remember("training", settings, ALICE, None, signed_in())
    clock.now += 9
    assert await kept(links, settings, accounts) == LINK
    clock.now += 2
    assert await kept(links, settings, accounts) is None


async def test_until_expiry_reuses_until_the_vendors_time(
    store: Store, clock: Clock, accounts: Accounts
) -> None:
    links, settings = RecentLinks(KEY, store, clock=clock), app(reuse_links="until_expiry")
    await links.remember("training", settings, ALICE, None, signed_in(until=T0 + 3600))
    clock.now += 3599
    assert await kept(links, settings, accounts) == LINK
    clock.now += 1
    assert await kept(links, settings, accounts) is None


async def test_the_store_entry_lives_only_as_long_as_the_link_is_reusable(
    clock: Clock, accounts: Accounts
) -> None:
    store = MemoryStore(clock=clock)  # the store's own expiry, on the same clock
    links, settings = RecentLinks(KEY, store, clock=clock), app(reuse_links="until_expiry")
    await links.remember("training", settings, ALICE, None, signed_in(until=T0 + 600))
    clock.now += 599
    assert len([k for k in await _keys(store) if k.startswith("link:")]) == 1
    clock.now += 2
    assert [k for k in await _keys(store) if k.startswith("link:")] == []


async def test_reuse_ends_revalidate_seconds_after_minting_at_the_latest(
    store: Store, clock: Clock, accounts: Accounts
) -> None:
    settings = app(reuse_links="until_expiry", revalidate_seconds=1800)
    assert reuse_window(settings) == 1800
    links = RecentLinks(KEY, store, clock=clock)
    await links.remember("training", settings, ALICE, None, signed_in(until=T0 + 86400))
    clock.now += 1799
    assert await kept(links, settings, accounts) == LINK
    clock.now += 1
    assert await kept(links, settings, accounts) is None
    # revalidate_seconds = 0 ("check every sign-in") or no account cache: no reuse at all.
    for off in (app(reuse_links="until_expiry", revalidate_seconds=0),
                app(reuse_links="until_expiry", account_cache_seconds=0),
                app(reuse_links="never")):
        assert reuse_window(off) == 0
        await links.remember("x", off, ALICE, None, signed_in(until=T0 + 86400 * 2))
        assert await kept(links, off, accounts, name="x") is None


async def test_the_apps_current_mode_decides_not_the_one_the_link_was_kept_under(
    store: Store, clock: Clock, accounts: Accounts
) -> None:
    links = RecentLinks(KEY, store, clock=clock)
    await links.remember("training", app(reuse_links="until_expiry"), ALICE, None, signed_in())
    clock.now += 60
    assert await kept(links, app(reuse_links="until_expiry"), accounts) == LINK
    assert await kept(links, app(), accounts) is None  # now repeat_clicks: 10 s
    assert await kept(links, app(reuse_links="never"), accounts) is None


async def test_single_use_links_are_never_kept_whatever_the_mode(
    store: Store, clock: Clock, accounts: Accounts
) -> None:
    links = RecentLinks(KEY, store, clock=clock)
    for mode in ("repeat_clicks", "until_expiry"):
        # SkyPrep otl/time keys and Litmos LoginKeys: the connector says reusable_until=None.
        await links.remember("training", app(reuse_links=mode), ALICE, None,
                             signed_in(until=None))
        assert await kept(links, app(reuse_links=mode), accounts) is None
    assert [k for k in await _keys(store) if k.startswith("link:")] == []


def test_apps_whose_links_are_single_use_never_look_for_one() -> None:
    def skyprep(key_type: Literal["daily", "time", "otl"]) -> AppSettings:
        return app(reuse_links="until_expiry", skyprep=SkyPrepSettings(
            api_key=Secret("k"), acct_key="acme.skyprepapp.com", key_type=key_type))

    assert reuse_window(skyprep("daily")) == 86400
    assert reuse_window(skyprep("otl")) == reuse_window(skyprep("time")) == 0
    assert reuse_window(AppSettings(connector="litmos", idps=("corp",),
                                    reuse_links="until_expiry")) == 0


# -- tied to the account and the person -------------------------------------------------------


async def test_no_reuse_once_provisioning_forgot_or_changed_the_account(
    store: Store, clock: Clock, accounts: Accounts
) -> None:
    links, settings = RecentLinks(KEY, store, clock=clock), app(reuse_links="until_expiry")
    await links.remember("training", settings, ALICE, None, signed_in())
    accounts.cached[ALICE.key] = LmsAccount("u-9", PROFILE.digest())  # another LMS account
    assert await kept(links, settings, accounts) is None
    accounts.cached[ALICE.key] = LmsAccount("u-1", PROFILE.digest())
    assert await kept(links, settings, accounts) is None  # dropped with the mismatch
    await links.remember("training", settings, ALICE, None, signed_in())
    del accounts.cached[ALICE.key]  # SCIM deactivated it, or the LMS lost it
    assert await kept(links, settings, accounts) is None
    assert [k for k in await _keys(store) if k.startswith("link:")] == []


async def test_a_changed_profile_is_not_answered_with_an_old_link_when_updates_are_on(
    store: Store, clock: Clock, accounts: Accounts
) -> None:
    links = RecentLinks(KEY, store, clock=clock)
    updating = app(reuse_links="until_expiry", update_on_login=True)
    await links.remember("training", updating, ALICE, None, signed_in())
    accounts.cached[ALICE.key] = LmsAccount("u-1", "digest-of-another-profile")
    assert await kept(links, updating, accounts) is None
    # Without update_on_login the profile is never sent anyway: the link stays good.
    assert await kept(links, app(reuse_links="until_expiry"), accounts) == LINK


async def test_forget_drops_every_apps_link_of_that_employee_only(
    store: Store, clock: Clock, accounts: Accounts
) -> None:
    links, settings = RecentLinks(KEY, store, clock=clock), app(reuse_links="until_expiry")
    for name in ("one", "two"):
        await links.remember(name, settings, ALICE, None, signed_in())
        await links.remember(name, settings, BOB, None, signed_in(user_id="u-2"))
    await links.forget(ALICE, ["one", "two", "three"])
    for name in ("one", "two"):
        assert await kept(links, settings, accounts, ALICE, name=name) is None
        assert await kept(links, settings, accounts, BOB, name=name) == LINK


async def test_replicas_sharing_redis_see_each_others_links(
    redis_url: str, accounts: Accounts  # noqa: F811 - fixture
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    one, two = RedisStore(redis_url, key_prefix=prefix), RedisStore(redis_url, key_prefix=prefix)
    try:
        settings = app(reuse_links="until_expiry")
        await RecentLinks(KEY, one).remember("training", settings, ALICE, None,
                                             signed_in(until=4e9))
        assert await RecentLinks(KEY, two).lookup("training", settings, accounts, ALICE,
                                                  PROFILE, None) == LINK
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_store_that_cannot_keep_the_link_costs_only_a_later_call(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    class Down(MemoryStore):
        async def set(self, key: str, value: bytes, ttl: float) -> None:
            raise StoreUnavailable("store down for the test")

    caplog.set_level(logging.DEBUG)
    await RecentLinks(KEY, Down(), clock=clock).remember("training", app(), ALICE, None,
                                                         signed_in())
    assert "could not keep a reusable sign-in link" in caplog.text
    assert "SECRET" not in caplog.text


# -- what the connectors say is reusable ------------------------------------------------------


def test_skyprep_daily_keys_are_reusable_until_the_utc_day_ends_minus_a_margin() -> None:
    midnight = (T0 // 86400 + 1) * 86400
    assert daily_key_reusable_until(T0) == midnight - REUSE_MARGIN_SECONDS
    assert daily_key_reusable_until(midnight - REUSE_MARGIN_SECONDS - 1) == (
        midnight - REUSE_MARGIN_SECONDS)
    assert daily_key_reusable_until(midnight - 60) is None  # too close to midnight
    assert daily_key_reusable_until(midnight) == midnight + 86400 - REUSE_MARGIN_SECONDS


def test_damstra_links_are_reusable_for_their_lifetime_minus_a_tenth() -> None:
    assert link_reusable_until("day", T0) == T0 + 86400 * 0.9
    assert link_reusable_until("week", T0) == T0 + 7 * 86400 * 0.9
    assert link_reusable_until("month", T0) == T0 + 28 * 86400 * 0.9
    assert link_reusable_until("year", T0) is None  # not a lifetime we configure


@pytest.mark.parametrize("key_type", ["daily", "time", "otl"])
async def test_the_skyprep_connector_marks_only_daily_keys_reusable(
    key_type: Literal["daily", "time", "otl"]
) -> None:
    sim = SkyPrepSimulator("sky-key", "acme.skyprepapp.com")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as client:
        settings = app(skyprep=SkyPrepSettings(api_key=Secret("sky-key"),
                                               acct_key="acme.skyprepapp.com",
                                               key_type=key_type))
        connector = SkyPrepConnector("sky", settings, make_http("sky", client))
        before = time.time()
        first = await connector.sign_in(profile(1), None, None)
        again = await connector.sign_in(profile(1), first.account, None)
    if key_type != "daily":
        assert first.reusable_until is None and again.reusable_until is None
        assert first.url != again.url
        return
    assert again.url == first.url  # SkyPrep's one key for the UTC day
    until = daily_key_reusable_until(before)
    assert until is not None and first.reusable_until == until


async def _keys(store: Store) -> list[str]:
    """Every key in the store, without its prefix (test introspection only)."""
    if isinstance(store, MemoryStore):
        data: dict[str, Any] = store._data
        return [k for k in list(data) if await store.get(k) is not None]
    assert isinstance(store, RedisStore)
    prefix: str = store._prefix
    client: Any = store._redis
    return [k.decode()[len(prefix):] async for k in client.scan_iter(f"{prefix}*")]
