"""One conformance suite for every store: memory and a real redis-server.

Timings are real (the memory store runs on the monotonic clock) and kept short: buckets
refill at 600/min (one token per 100 ms) and TTLs are a few hundred milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.errors import ConfigError, StoreUnavailable
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.redis_server import (  # noqa: F401
    RedisServer,
    redis_server,
    redis_url,
    write_tls_files,
)

# A pair of handles on one store: for Redis two clients (two replicas), for memory the same
# object twice (one process is all the memory store serves).
StorePair = tuple[Store, Store]


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[StorePair]:
    if request.param == "memory":
        memory = MemoryStore()
        yield memory, memory
        await memory.aclose()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    one, two = RedisStore(url, key_prefix=prefix), RedisStore(url, key_prefix=prefix)
    yield one, two
    await one.aclose()
    await two.aclose()


@pytest.fixture
def store(stores: StorePair) -> Store:
    return stores[0]


async def test_get_set_replace_delete(store: Store) -> None:
    assert await store.get("k") is None
    await store.set("k", b"one", 10)
    assert await store.get("k") == b"one"
    await store.set("k", b"\x00two\xff", 10)
    assert await store.get("k") == b"\x00two\xff"
    await store.delete("k")
    assert await store.get("k") is None
    await store.delete("k")  # deleting an absent key is fine


async def test_values_expire_after_their_ttl(store: Store) -> None:
    await store.set("short", b"v", 0.2)
    await store.set("long", b"v", 30)
    assert await store.get("short") == b"v"
    await asyncio.sleep(0.35)
    assert await store.get("short") is None
    assert await store.pop("short") is None
    assert await store.get("long") == b"v"


async def test_set_if_absent_has_exactly_one_winner(stores: StorePair) -> None:
    one, two = stores
    results = await asyncio.gather(
        *(
            (one if i % 2 else two).set_if_absent("lock", f"owner-{i}".encode(), 10)
            for i in range(60)
        )
    )
    assert results.count(True) == 1
    winner = results.index(True)
    assert await one.get("lock") == f"owner-{winner}".encode()
    assert await two.set_if_absent("lock", b"late", 10) is False


async def test_set_if_absent_succeeds_again_after_expiry(store: Store) -> None:
    assert await store.set_if_absent("lock", b"a", 0.2)
    assert not await store.set_if_absent("lock", b"b", 0.2)
    await asyncio.sleep(0.35)
    assert await store.set_if_absent("lock", b"c", 10)
    assert await store.get("lock") == b"c"


async def test_pop_hands_a_value_to_exactly_one_caller(stores: StorePair) -> None:
    one, two = stores
    await one.set("state", b"single-use", 10)
    results = await asyncio.gather(*((one if i % 2 else two).pop("state") for i in range(60)))
    assert [r for r in results if r is not None] == [b"single-use"]
    assert await one.get("state") is None
    assert await two.pop("never-set") is None


async def test_token_bucket_admits_the_burst_then_refills_at_the_rate(store: Store) -> None:
    waits = [(await store.take_token("bucket", 600, 5))[0] for _ in range(5)]
    assert waits == [0.0] * 5
    wait = (await store.take_token("bucket", 600, 5))[0]
    assert 0.0 < wait <= 0.1001  # one token per 100 ms
    await asyncio.sleep(wait + 0.01)
    assert (await store.take_token("bucket", 600, 5))[0] == 0.0
    # Other buckets are independent.
    assert (await store.take_token("other", 600, 5))[0] == 0.0


async def test_token_bucket_never_admits_more_than_burst_plus_rate(stores: StorePair) -> None:
    one, two = stores
    admitted = 0
    started = time.monotonic()

    async def hammer(s: Store) -> None:
        nonlocal admitted
        while time.monotonic() - started < 0.6:
            wait = (await s.take_token("busy", 600, 5))[0]
            if wait == 0.0:
                admitted += 1
            else:
                await asyncio.sleep(min(wait, 0.02))

    await asyncio.gather(*(hammer(one if i % 2 else two) for i in range(10)))
    elapsed = time.monotonic() - started
    assert admitted <= 5 + 10 * elapsed + 1
    # ... and the bucket is actually used, not starved (loosely: a loaded machine runs the
    # hammering loops slowly; the bound above is the one that matters).
    assert admitted >= 5 + 2


async def test_reservations_are_granted_in_arrival_order(stores: StorePair) -> None:
    """Callers willing to wait reserve the next tokens in the order they reach the store
    (first come, first served across replicas); a caller who may not wait that long
    reserves nothing and is told when to come back."""
    one, two = stores
    # 60/min = one token a second: long enough that a loaded machine's milliseconds between
    # two calls do not blur the schedule.
    for _ in range(5):
        assert (await one.take_token("queue", 60, 5))[2]  # the burst: 5 tokens
    answers = [await (one if i % 2 else two).take_token("queue", 60, 5, 10.0) for i in range(4)]
    waits = [wait for wait, _, _ in answers]
    assert all(taken for _, _, taken in answers)
    assert waits == sorted(waits) and waits[0] > 0.0
    # each reservation matures one interval after the last
    assert [round(b - a, 1) for a, b in itertools.pairwise(waits)] == [1.0, 1.0, 1.0]
    wait, left, taken = await one.take_token("queue", 60, 5, 0.5)
    assert not taken and wait > waits[-1] and left < 0
    again, _, taken_again = await two.take_token("queue", 60, 5, 10.0)
    assert taken_again and abs(again - (waits[-1] + 1.0)) < 0.3  # the refused one took no slot


async def test_bucket_refills_up_to_capacity_only(store: Store) -> None:
    for _ in range(3):
        assert (await store.take_token("cap", 600, 3))[0] == 0.0
    await asyncio.sleep(0.6)  # six tokens' worth of refill, but capacity is 3
    assert [(await store.take_token("cap", 600, 3))[0] for _ in range(3)] == [0.0] * 3
    assert (await store.take_token("cap", 600, 3))[0] > 0.0


async def test_pause_holds_every_caller_then_refills_from_empty(stores: StorePair) -> None:
    one, two = stores
    assert (await one.take_token("paused", 60, 5))[0] == 0.0  # four tokens left
    started = time.monotonic()
    await one.pause_bucket("paused", 0.4)
    answers = await asyncio.gather(
        *((one if i % 2 else two).take_token("paused", 60, 5) for i in range(20))
    )
    waits = [answer[0] for answer in answers]
    spent = time.monotonic() - started
    assert all(0.4 - spent - 0.01 <= w <= 0.4 for w in waits)
    await asyncio.sleep(max(waits) + 0.02)
    # The pause emptied the bucket: after it, calls come at the refill rate (1/s), no burst.
    assert 0.0 < (await two.take_token("paused", 60, 5))[0] <= 1.0


async def test_a_shorter_pause_never_cuts_a_longer_one(store: Store) -> None:
    await store.pause_bucket("p", 1.0)
    await store.pause_bucket("p", 0.1)
    assert (await store.take_token("p", 600, 5))[0] > 0.8


async def test_pause_on_a_fresh_bucket(store: Store) -> None:
    started = time.monotonic()
    await store.pause_bucket("fresh", 0.2)
    wait = (await store.take_token("fresh", 600, 5))[0]
    assert 0.2 - (time.monotonic() - started) - 0.01 <= wait <= 0.2


# -- issue 11: multi-token reservations, give-back, reserve floor, fenced locks -------------


async def test_take_tokens_reserves_a_whole_sign_in_at_once_in_arrival_order(
    stores: StorePair,
) -> None:
    """A first sign-in reserves all its calls in one step: either every token matures within
    the bound or nothing is taken; reservations keep first-come-first-served order."""
    one, two = stores
    wait, left, taken = await one.take_tokens("n", 600, 5, 3)
    assert (wait, taken) == (0.0, True) and abs(left - 2.0) < 0.05
    # Two left: three more mature 0.1 s after the last one available (one every 0.1 s).
    wait, left, taken = await two.take_tokens("n", 600, 5, 3, 1.0)
    assert taken and 0.09 <= wait <= 0.1001 and left < 0
    # Not within 0.15 s: the third token of this reservation is 0.4 s away; nothing taken.
    refused, left_refused, taken = await one.take_tokens("n", 600, 5, 3, 0.15)
    assert not taken and 0.3 <= refused <= 0.4001 and abs(left_refused - left) < 0.05
    wait, _, taken = await two.take_tokens("n", 600, 5, 1, 1.0)
    assert taken and 0.1 <= wait <= 0.2001  # the refused one held no slot


async def test_take_tokens_with_a_floor_never_reserves_nor_digs_into_the_reserve(
    stores: StorePair,
) -> None:
    one, two = stores
    # Capacity 5, reserve 3: background work may take 2 of a full bucket, then must wait.
    # 60/min (one token a second) so a loaded machine's milliseconds do not matter.
    assert (await one.take_tokens("bg", 60, 5, 1, floor=3))[2]
    assert (await two.take_tokens("bg", 60, 5, 1, floor=3))[2]
    wait, left, taken = await one.take_tokens("bg", 60, 5, 1, 10.0, floor=3)
    assert not taken and 0.0 < wait <= 1.001 and abs(left - 3.0) < 0.3
    # Sign-ins still get the reserve, and then background work waits for the refill.
    assert (await two.take_tokens("bg", 60, 5, 3))[2]
    wait, _, taken = await one.take_tokens("bg", 60, 5, 1, floor=3)
    assert not taken and 3.0 <= wait <= 4.001


async def test_give_back_tokens_returns_unused_calls_up_to_capacity(stores: StorePair) -> None:
    one, two = stores
    assert (await one.take_tokens("gb", 600, 5, 5))[2]
    await two.give_back_tokens("gb", 600, 5, 2)
    assert [(await one.take_token("gb", 600, 5))[0] for _ in range(2)] == [0.0, 0.0]
    assert (await one.take_token("gb", 600, 5))[0] > 0.0
    await two.give_back_tokens("full", 600, 5, 3)  # a bucket never used is full already
    assert [(await one.take_token("full", 600, 5))[0] for _ in range(5)] == [0.0] * 5
    assert (await one.take_token("full", 600, 5))[0] > 0.0
    # A pause emptied the bucket; giving back during it does not refill it.
    await one.pause_bucket("gbp", 0.2)
    await two.give_back_tokens("gbp", 600, 5, 5)
    await asyncio.sleep(0.22)
    assert (await one.take_token("gbp", 600, 5))[0] > 0.0


async def test_delete_if_equals_releases_only_the_owners_lock(stores: StorePair) -> None:
    one, two = stores
    assert await one.set_if_absent("lock", b"owner-a", 10)
    assert not await two.delete_if_equals("lock", b"owner-b")
    assert await one.get("lock") == b"owner-a"
    assert await two.delete_if_equals("lock", b"owner-a")
    assert await one.get("lock") is None
    assert not await one.delete_if_equals("lock", b"owner-a")  # gone: nothing to release


async def test_renew_if_equals_extends_only_the_owners_lock(stores: StorePair) -> None:
    one, two = stores
    assert await one.set_if_absent("renew", b"owner-a", 0.2)
    assert not await two.renew_if_equals("renew", b"owner-b", 10)
    assert await two.renew_if_equals("renew", b"owner-a", 0.6)
    await asyncio.sleep(0.3)
    assert await one.get("renew") == b"owner-a"  # outlived its first TTL
    await asyncio.sleep(0.4)
    assert await one.get("renew") is None
    assert not await one.renew_if_equals("renew", b"owner-a", 10)  # expired: not revived
    assert await one.get("renew") is None


async def test_ping(store: Store) -> None:
    await store.ping()


async def test_incr_with_ttl_counts_atomically_across_handles(stores: StorePair) -> None:
    one, two = stores
    results = await asyncio.gather(
        *((one if i % 2 else two).incr_with_ttl("n", 10) for i in range(50))
    )
    # Every increment saw a distinct value: none was lost to a read-modify-write race.
    assert sorted(results) == list(range(1, 51))
    assert await one.get("n") == b"50"
    assert await two.incr_with_ttl("n", 10, 5, anonymous=True) == 55
    assert await one.incr_with_ttl("n", 10, -55) == 0


async def test_incr_with_ttl_never_goes_below_zero(store: Store) -> None:
    assert await store.incr_with_ttl("fresh", 10, -1) == 0
    assert await store.incr_with_ttl("fresh", 10) == 1
    assert await store.incr_with_ttl("fresh", 10, -3) == 0
    assert await store.incr_with_ttl("fresh", 10) == 1


async def test_incr_with_ttl_is_a_fixed_window(store: Store) -> None:
    await store.incr_with_ttl("w", 0.4)
    await asyncio.sleep(0.25)
    # A later increment does not extend the counter's life...
    assert await store.incr_with_ttl("w", 0.4) == 2
    await asyncio.sleep(0.25)
    # ...so it is gone 0.4 s after its creation and starts again from zero.
    assert await store.get("w") is None
    assert await store.incr_with_ttl("w", 0.4) == 1


async def test_health_problems_of_a_default_store_are_none(store: Store) -> None:
    # redis-server's default maxmemory-policy is noeviction; memory never evicts.
    assert await store.health_problems() == []


# --- Redis only ---------------------------------------------------------------------------


async def test_redis_keys_carry_the_prefix(redis_url: str) -> None:  # noqa: F811
    raw = aioredis.from_url(redis_url, decode_responses=True)
    a, b = RedisStore(redis_url, key_prefix="tenant-a:"), RedisStore(redis_url, key_prefix="b:")
    try:
        await a.set("k", b"1", 10)
        await a.set_if_absent("lock", b"1", 10)
        (await a.take_token("bucket", 600, 5))[0]
        await a.pause_bucket("paused", 5)
        await a.incr_with_ttl("count", 10)
        keys = sorted(str(k) for k in await raw.keys("*"))
        mine = [k for k in keys if k.startswith("tenant-a:")]
        assert mine == [
            "tenant-a:bucket", "tenant-a:count", "tenant-a:k", "tenant-a:lock", "tenant-a:paused"
        ]  # fmt: skip
        # Every other key belongs to another test's prefix; none is bare.
        assert all(k.startswith("t") and ":" in k for k in keys)
        assert not {"k", "lock", "bucket", "paused", "count"} & set(keys)
        assert 0 < await raw.ttl("tenant-a:count") <= 10
        assert 0 < await raw.ttl("tenant-a:k") <= 10
        assert await raw.ttl("tenant-a:bucket") > 0  # buckets expire too
        assert await b.get("k") is None  # another prefix sees nothing
    finally:
        await raw.aclose()
        await a.aclose()
        await b.aclose()


OPERATIONS: list[tuple[str, Callable[[Store], Awaitable[object]]]] = [
    ("get", lambda s: s.get("k")),
    ("set", lambda s: s.set("k", b"v", 10)),
    ("set_if_absent", lambda s: s.set_if_absent("k", b"v", 10)),
    ("pop", lambda s: s.pop("k")),
    ("delete", lambda s: s.delete("k")),
    ("take_token", lambda s: s.take_token("b", 600, 5)),
    ("pause_bucket", lambda s: s.pause_bucket("b", 1)),
    ("incr_with_ttl", lambda s: s.incr_with_ttl("n", 10)),
    ("ping", lambda s: s.ping()),
]


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
async def test_redis_that_may_evict_is_flagged(policy: str) -> None:
    # Every key here has a TTL, so the volatile-* policies may evict replay-cache entries too.
    server = RedisServer(extra_args=("--maxmemory-policy", policy))
    try:
        server.start()
        store = RedisStore(server.url)
        try:
            (problem,) = await store.health_problems()
            assert policy in problem and "noeviction" in problem
        finally:
            await store.aclose()
    finally:
        server.close()


async def test_redis_without_config_permission_reports_unknown_without_failing() -> None:
    # Managed Redis services often disable CONFIG; the check must not break the store.
    server = RedisServer(extra_args=("--rename-command", "CONFIG", ""))
    try:
        server.start()
        store = RedisStore(server.url)
        try:
            (problem,) = await store.health_problems()
            assert "unknown" in problem and "noeviction" in problem
            await store.set("k", b"v", 10)
            assert await store.get("k") == b"v"
        finally:
            await store.aclose()
    finally:
        server.close()


async def test_redis_stopped_then_restarted(redis_server: RedisServer) -> None:  # noqa: F811
    store = RedisStore(redis_server.url)
    try:
        await store.set("k", b"v", 10)
        redis_server.stop()
        for name, op in OPERATIONS:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                await op(store)
            assert time.monotonic() - started < 2.5, name
            assert "127.0.0.1" not in str(caught.value)
        redis_server.start()
        # Same store object, no reconnect call: it recovers by itself (data was not saved).
        assert await store.get("k") is None
        assert await store.set_if_absent("k", b"again", 10)
        assert await store.pop("k") == b"again"
        assert (await store.take_token("b", 600, 5))[0] == 0.0
        await store.ping()
    finally:
        await store.aclose()


async def test_redis_that_stops_answering_times_out_quickly(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    store = RedisStore(redis_server.url, socket_timeout=0.5)
    try:
        await store.set("k", b"v", 10)
        redis_server.freeze()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.set_if_absent("replay", b"1", 10)
        assert time.monotonic() - started < 1.5
        redis_server.thaw()
        assert await store.get("k") == b"v"
    finally:
        await store.aclose()


async def test_redis_password() -> None:
    server = RedisServer(password="s3cret-pw")
    try:
        server.start()
        good = RedisStore(server.url, password="s3cret-pw")
        bad = RedisStore(server.url, password="wrong-pw")
        none = RedisStore(server.url)
        try:
            await good.set("k", b"v", 10)
            assert await good.get("k") == b"v"
            for store in (bad, none):
                with pytest.raises(StoreUnavailable) as caught:
                    await store.get("k")
                assert "pw" not in str(caught.value)
                with pytest.raises(StoreUnavailable):
                    await store.ping()
        finally:
            for store in (good, bad, none):
                await store.aclose()
    finally:
        server.close()


def test_redis_config_mistakes_are_refused_at_start() -> None:
    with pytest.raises(ConfigError):
        RedisStore("redis://127.0.0.1:6379/0", tls_ca_file="/etc/ssl/ca.pem")
    with pytest.raises(ConfigError):
        RedisStore("http://127.0.0.1:6379/0")


async def test_redis_over_tls_verifies_the_server(tmp_path: Path) -> None:
    server = RedisServer(password="tls-pw", tls=True)
    try:
        server.start()
        assert server.ca_file is not None
        store = RedisStore(server.url, password="tls-pw", tls_ca_file=str(server.ca_file))
        # A certificate from another CA, and the right CA but another host name.
        other_ca = write_tls_files(tmp_path, name="other-ca")[0]
        impostor = RedisStore(server.url, password="tls-pw", tls_ca_file=str(other_ca))
        wrong_name = RedisStore(
            server.url.replace("127.0.0.1", "localhost"),
            password="tls-pw",
            tls_ca_file=str(server.ca_file),
        )
        plain = RedisStore(server.url.replace("rediss://", "redis://"), password="tls-pw")
        try:
            await store.set("k", b"v", 10)
            assert await store.get("k") == b"v"
            for refused in (impostor, wrong_name, plain):
                with pytest.raises(StoreUnavailable):
                    await refused.get("k")
        finally:
            for s in (store, impostor, wrong_name, plain):
                await s.aclose()
    finally:
        server.close()
