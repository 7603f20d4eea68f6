"""Redis as companies run it: Sentinel failover, and managed endpoints with TLS and an ACL user.

Real servers only, all on 127.0.0.1: a primary, a replica and three ``redis-sentinel``
processes (tests/support/redis_sentinel.py), and TLS redis-servers with certificates from a
throw-away CA (tests/support/redis_server.py).

The store conformance suite runs again here through Sentinel: every test of
tests/test_store_conformance.py that needs only a store (``store`` / ``stores``) is imported
below and collected in this module, where those fixtures are two RedisStores that find the
primary through the sentinels. New conformance tests are picked up the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import tests.test_store_conformance as conformance
from gateway.app import build_store
from gateway.config import parse_settings
from gateway.errors import ConfigError, StoreUnavailable
from gateway.store.base import Store
from gateway.store.redis import RedisStore
from tests.support.redis_sentinel import SERVICE, SentinelCluster
from tests.support.redis_server import RedisServer, write_tls_files
from tests.test_config import ENV, minimal

DATA_PW, SENTINEL_PW = "data-pw-8c1e", "sentinel-pw-77a0"


def sentinel_store(cluster: SentinelCluster, **overrides: Any) -> RedisStore:
    options: dict[str, Any] = {
        "sentinels": cluster.sentinel_addresses,
        "sentinel_service": cluster.service,
        "password": cluster.password,
        "sentinel_password": cluster.sentinel_password,
        "key_prefix": f"t{uuid.uuid4().hex[:8]}:",
        **overrides,
    }
    return RedisStore(**options)


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    """Shared by the conformance tests (nothing here stops its primary)."""
    with SentinelCluster(password=DATA_PW, sentinel_password=SENTINEL_PW) as c:
        yield c


@pytest.fixture
def own_cluster() -> Iterator[SentinelCluster]:
    """A cluster of the test's own: failover tests kill its primary."""
    with SentinelCluster(password=DATA_PW, sentinel_password=SENTINEL_PW) as c:
        yield c


# -- the conformance suite through Sentinel ----------------------------------------------------


@pytest.fixture
async def stores(cluster: SentinelCluster) -> AsyncIterator[tuple[Store, Store]]:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    one = sentinel_store(cluster, key_prefix=prefix)
    two = sentinel_store(cluster, key_prefix=prefix)
    # Warm pools, as a running gateway's are: the first connection also asks the sentinels,
    # which would otherwise land inside the timing-sensitive tests' measurements.
    await one.ping()
    await two.ping()
    yield one, two
    await one.aclose()
    await two.aclose()


@pytest.fixture
def store(stores: tuple[Store, Store]) -> Store:
    return stores[0]


def _store_only(test: Any) -> bool:
    params = set(inspect.signature(test).parameters)
    return bool(params) and params <= {"store", "stores"}


for _name, _test in list(vars(conformance).items()):
    if _name.startswith("test_") and callable(_test) and _store_only(_test):
        globals()[_name] = _test  # collected here, with this module's fixtures


# -- Sentinel ----------------------------------------------------------------------------------


async def test_the_store_writes_to_the_primary_the_sentinels_name(
    cluster: SentinelCluster,
) -> None:
    store = sentinel_store(cluster, key_prefix="where:")
    try:
        await store.set("k", b"v", 30)
        primary = cluster.current_primary()
        with redis.Redis(port=primary.port, password=DATA_PW) as raw:
            assert raw.get("where:k") == b"v"
        assert await store.describe() == (
            f"redis primary 127.0.0.1:{primary.port} (sentinel service '{SERVICE}')"
        )
        assert DATA_PW not in await store.describe()
    finally:
        await store.aclose()


async def test_failover_fails_closed_then_follows_the_promoted_replica(
    own_cluster: SentinelCluster,
) -> None:
    """The primary dies without a goodbye. Until the sentinels promote the replica every
    operation is refused quickly with StoreUnavailable (never another error, never a write
    somewhere else); then the same store object carries on on the new primary, and what was
    replicated before the crash is still there."""
    store = sentinel_store(own_cluster, key_prefix="fo:")
    try:
        await store.set("session", b"alice", 60)
        assert await store.set_if_absent("replay", b"1", 60)
        old = own_cluster.current_primary()
        own_cluster.wait_replicated()  # both writes reached the replica before the crash
        killed_at = time.monotonic()
        own_cluster.kill_primary()
        refused = 0
        recovered_at = None
        while time.monotonic() - killed_at < 30:
            started = time.monotonic()
            try:
                stored = await store.set_if_absent("after", b"1", 60)
            except StoreUnavailable as exc:
                assert time.monotonic() - started < 2.5  # each refusal is quick
                assert DATA_PW not in str(exc) and SENTINEL_PW not in str(exc)
                refused += 1
                await asyncio.sleep(0.1)
                continue
            assert stored
            recovered_at = time.monotonic()
            break
        assert recovered_at is not None, "the store never followed the failover"
        print(f"\nsentinel failover: store refused {refused} calls, back after "
              f"{recovered_at - killed_at:.2f} s")  # fmt: skip
        assert refused >= 1  # it did notice: nothing pretended to succeed meanwhile
        new = own_cluster.current_primary()
        assert new.port != old.port
        assert await store.describe() == (
            f"redis primary 127.0.0.1:{new.port} (sentinel service '{SERVICE}')"
        )
        # The replicated entries survived; the replay cache still refuses the replay.
        assert await store.get("session") == b"alice"
        assert not await store.set_if_absent("replay", b"again", 60)
        with redis.Redis(port=new.port, password=DATA_PW) as raw:
            assert raw.get("fo:after") == b"1"
        await store.ping()
    finally:
        await store.aclose()


async def test_a_demoted_primary_that_comes_back_is_never_written_to(
    own_cluster: SentinelCluster,
) -> None:
    """The old primary restarts empty and, until Sentinel demotes it, as a primary of its
    own. A pooled connection that reconnected to the last address it knew would write there
    and lose everything when Sentinel demotes it (redis-py#3874; gateway/store/redis_connect
    works around it): every write must land on the promoted replica."""
    store = sentinel_store(own_cluster, key_prefix="back:")
    try:
        await store.set("before", b"1", 60)
        old = own_cluster.kill_primary()
        new = own_cluster.wait_for_new_primary(old)
        old.start()  # empty (no persistence) and, for a moment, a primary of its own
        for i in range(20):
            deadline = time.monotonic() + 10
            while True:  # a call may meet the switch; each key is written once it succeeds
                try:
                    await store.set(f"k{i}", b"v", 60)
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.05)
        with redis.Redis(port=new.port, password=DATA_PW) as raw:
            assert all(raw.get(f"back:k{i}") == b"v" for i in range(20))
        with redis.Redis(port=old.port, password=DATA_PW) as raw:
            # Either nothing, or the same data replicated from the new primary.
            assert raw.get("back:k0") in (None, b"v")
            assert raw.info("replication")["role"] in ("master", "slave")
    finally:
        await store.aclose()


async def test_a_planned_switchover_moves_open_connections_to_the_new_primary(
    own_cluster: SentinelCluster,
) -> None:
    """``SENTINEL FAILOVER`` (maintenance): the old primary stays up and becomes a replica,
    so open connections do not break; their next write gets READONLY and is sent to the new
    primary. (A write in the moment between the promotion and the demotion lands on the old
    primary and is lost with the demotion: README, "Redis Sentinel".)"""
    store = sentinel_store(own_cluster, key_prefix="sw:")
    try:
        await store.set("before", b"1", 60)
        old = own_cluster.current_primary()
        with own_cluster.sentinels[0].client() as sentinel:
            assert sentinel.sentinel_failover(own_cluster.service)
        new = own_cluster.wait_for_new_primary(old)
        own_cluster.wait_until_replica(old)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await store.set_if_absent("after", b"1", 60)
                break
            except StoreUnavailable:  # the write that met READONLY, or the switch itself
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        with redis.Redis(port=new.port, password=DATA_PW) as raw:
            assert raw.get("sw:after") == b"1" and raw.get("sw:before") == b"1"
    finally:
        await store.aclose()


async def test_no_sentinel_reachable_is_a_quick_store_unavailable() -> None:
    ports = [RedisServer().port for _ in range(3)]  # reserved addresses nothing listens on
    store = RedisStore(sentinels=[f"127.0.0.1:{p}" for p in ports], password=DATA_PW)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.get("k")
        with pytest.raises(StoreUnavailable):
            await store.ping()
        assert time.monotonic() - started < 5
        assert "no primary known" in await store.describe()
    finally:
        await store.aclose()


async def test_wrong_sentinel_credentials_or_service_fail_closed(
    cluster: SentinelCluster,
) -> None:
    stores = [
        sentinel_store(cluster, sentinel_password="wrong-sentinel-pw"),
        sentinel_store(cluster, sentinel_password=None),
        sentinel_store(cluster, password="wrong-data-pw"),
        sentinel_store(cluster, sentinel_service="no-such-service"),
    ]
    try:
        for store in stores:
            with pytest.raises(StoreUnavailable) as caught:
                await store.set_if_absent("replay", b"1", 60)
            assert "pw" not in str(caught.value)
        assert "no primary known" in await stores[0].describe()
    finally:
        for store in stores:
            await store.aclose()


# -- managed Redis: TLS + ACL user -------------------------------------------------------------


@pytest.fixture(scope="module")
def managed() -> Iterator[RedisServer]:
    """TLS only, the default user off, one ACL user limited to its key prefix (as a managed
    Redis service hands them out): no CONFIG, no FLUSHALL, no other keys."""
    server = RedisServer(
        password="acl-pw-31f9",
        username="gateway",
        acl_rules="~gw:* +@read +@write +@scripting +@connection +time -@dangerous",
        tls=True,
    )
    try:
        server.start()
        yield server
    finally:
        server.close()


def managed_store(server: RedisServer, **overrides: Any) -> RedisStore:
    options: dict[str, Any] = {
        "username": "gateway",
        "password": "acl-pw-31f9",
        "tls_ca_file": str(server.ca_file),
        "key_prefix": "gw:",
        **overrides,
    }
    return RedisStore(server.url, **options)


async def test_tls_and_acl_user_with_least_privilege(managed: RedisServer) -> None:
    store = managed_store(managed)
    try:
        await store.set("k", b"v", 10)
        assert await store.get("k") == b"v"
        assert await store.set_if_absent("replay", b"1", 10)
        assert not await store.set_if_absent("replay", b"1", 10)
        assert await store.pop("k") == b"v"
        assert (await store.take_token("bucket", 600, 5))[2]
        await store.pause_bucket("paused", 1)
        assert await store.incr_with_ttl("n", 10) == 1
        await store.ping()
        # CONFIG is not permitted to this user: the eviction check says so, nothing breaks.
        (problem,) = await store.health_problems()
        assert "unknown" in problem
        assert await store.describe() == f"redis 127.0.0.1:{managed.port} (TLS)"
    finally:
        await store.aclose()


async def test_tls_and_acl_mistakes_fail_closed(managed: RedisServer, tmp_path: Path) -> None:
    other_ca = write_tls_files(tmp_path, name="other-ca")[0]
    refused = {
        "wrong password": managed_store(managed, password="wrong-pw-0000"),
        "no user (default user is off)": managed_store(managed, username=None),
        "another user": managed_store(managed, username="admin"),
        "untrusted CA": managed_store(managed, tls_ca_file=str(other_ca)),
        "keys outside the user's prefix": managed_store(managed, key_prefix="other:"),
    }
    try:
        for why, store in refused.items():
            with pytest.raises(StoreUnavailable) as caught:
                await store.set_if_absent("replay", b"1", 10)
            assert "pw" not in str(caught.value), why
    finally:
        for store in refused.values():
            await store.aclose()


async def test_client_certificate_when_redis_requires_one() -> None:
    server = RedisServer(password="cert-pw", tls=True, tls_client_certs=True)
    try:
        server.start()
        assert server.ca_file and server.client_cert and server.client_key
        with_cert = RedisStore(
            server.url,
            password="cert-pw",
            tls_ca_file=str(server.ca_file),
            tls_cert_file=str(server.client_cert),
            tls_key_file=str(server.client_key),
        )
        without = RedisStore(server.url, password="cert-pw", tls_ca_file=str(server.ca_file))
        try:
            await with_cert.set("k", b"v", 10)
            assert await with_cert.get("k") == b"v"
            with pytest.raises(StoreUnavailable):
                await without.get("k")
        finally:
            await with_cert.aclose()
            await without.aclose()
    finally:
        server.close()


async def test_sentinel_over_tls() -> None:
    """TLS to the sentinels and to the primary they name (``sentinel_tls``)."""
    with SentinelCluster(password=DATA_PW, tls=True) as tls_cluster:
        assert tls_cluster.ca_file is not None
        store = sentinel_store(tls_cluster, sentinel_tls=True, tls_ca_file=tls_cluster.ca_file)
        plain = sentinel_store(tls_cluster)
        try:
            await store.set("k", b"v", 10)
            assert await store.get("k") == b"v"
            with pytest.raises(StoreUnavailable):
                await plain.get("k")
        finally:
            await store.aclose()
            await plain.aclose()


# -- check-config ------------------------------------------------------------------------------


def store_problems(store: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    data = minimal()
    data["store"] = {"backend": "redis", **store}
    try:
        parse_settings(data, {**ENV, **(env or {})})
    except ConfigError as exc:
        return [p for p in exc.problems if p.startswith("store")]
    return []


def test_sentinel_settings_are_accepted_and_build_a_store(tmp_path: Path) -> None:
    data = minimal()
    data["store"] = {
        "backend": "redis",
        "sentinels": ["10.0.0.1:26379", "[fd00::2]:26379", "redis-sentinel-3:26379"],
        "sentinel_service": "gateway",
        "sentinel_password": {"env": "SENTINEL_PW"},
        "username": "gateway",
        "password": {"env": "REDIS_PW"},
    }
    settings = parse_settings(data, {**ENV, "SENTINEL_PW": "sentinel-pw-x", "REDIS_PW": "r"})
    assert settings.store.sentinels[1] == "[fd00::2]:26379"
    assert "sentinel-pw-x" not in repr(settings.store)
    store = build_store(settings)  # no I/O until first use
    assert isinstance(store, RedisStore)
    asyncio.run(store.aclose())


def test_store_config_mistakes_are_all_reported(tmp_path: Path) -> None:
    ca, cert, key = write_tls_files(tmp_path)
    assert store_problems({"url": "redis://10.0.0.1/0", "sentinels": ["10.0.0.2:26379"]}) == [
        "store.sentinels: set either store.url or store.sentinels, not both"
    ]
    assert store_problems({"sentinels": ["10.0.0.2", "10.0.0.3:99999", "a b:1"]}) == [
        "store.sentinels: '10.0.0.2' is not host:port",
        "store.sentinels: '10.0.0.3:99999' is not host:port",
        "store.sentinels: 'a b:1' is not host:port",
    ]
    assert store_problems({"url": "redis://:hunter2@10.0.0.1/0"}) == [
        "store.url: must not carry credentials (use store.username and store.password)"
    ]
    assert store_problems({"url": "redis://10.0.0.1/0", "sentinel_tls": True}) == [
        "store.sentinel_tls: only used with store.sentinels"
    ]
    assert store_problems({"url": "redis://10.0.0.1/0", "tls_ca_file": str(ca)}) == [
        "store.tls_ca_file: TLS is off (use a rediss:// URL, or store.sentinel_tls = true)"
    ]
    assert store_problems({"url": "rediss://10.0.0.1/0", "tls_cert_file": str(cert)}) == [
        "store.tls_cert_file: goes together with store.tls_key_file"
    ]
    assert store_problems(
        {"url": "rediss://10.0.0.1/0", "tls_cert_file": str(cert), "tls_key_file": str(ca)}
    ) == [
        f"store.tls_cert_file: {str(cert)!r} and {str(ca)!r} are not a PEM certificate and "
        "its unencrypted private key"
    ]
    assert store_problems(
        {"url": "rediss://10.0.0.1/0", "tls_ca_file": str(tmp_path / "nope.pem")}
    ) == [f"store.tls_ca_file: no such file {str(tmp_path / 'nope.pem')!r}"]
    assert store_problems({"url": "redis://10.0.0.1/0", "username": "gateway"}) == [
        "store.username: needs store.password (an ACL user's password)"
    ]
    assert store_problems({"sentinels": ["10.0.0.2:26379"], "sentinel_tls": True,
                           "tls_ca_file": str(ca), "tls_cert_file": str(cert),
                           "tls_key_file": str(key)}) == []  # fmt: skip
