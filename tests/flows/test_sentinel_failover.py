"""Redis Sentinel failover under a running gateway, end to end (issue 16, item 9).

The demo stack (gateway, demo IdPs, LMS simulators over real HTTP on 127.0.0.1) runs with
``[store]`` pointing at three real sentinels that watch a primary and its replica. Employees
sign in; the primary is SIGKILLed; while the sentinels promote the replica a sign-in gets the
clear 503 page (never a 500, never an LMS call past an unchecked store); then sign-ins work
again on the promoted replica, with the same gateway process, and the operator's readiness
names the new primary.
"""

from __future__ import annotations

import asyncio
import html
import os
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.sandbox.demo import DemoStack, start_demo
from gateway.sandbox.employees import find_employee
from tests.flows.agent import choose_employee, sign_in
from tests.support.redis_sentinel import SERVICE, SentinelCluster

ALICE, BOB, CHLOE = "emp-1001", "emp-1002", "emp-1003"
DATA_PW, SENTINEL_PW = "failover-data-pw", "failover-sentinel-pw"


@pytest.fixture
async def cluster_and_demo() -> AsyncIterator[tuple[SentinelCluster, DemoStack]]:
    with SentinelCluster(password=DATA_PW, sentinel_password=SENTINEL_PW) as cluster:
        store = {
            "backend": "redis",
            "sentinels": cluster.sentinel_addresses,
            "sentinel_service": SERVICE,
            "password": {"env": "GW_REDIS_PASSWORD"},
            "sentinel_password": {"env": "GW_SENTINEL_PASSWORD"},
            "key_prefix": "failover:",
        }
        environ = {**os.environ, "GW_REDIS_PASSWORD": DATA_PW,
                   "GW_SENTINEL_PASSWORD": SENTINEL_PW}  # fmt: skip
        stack = await start_demo(0, store=store, environ=environ)
        try:
            yield cluster, stack
        finally:
            await stack.stop()


async def readiness(stack: DemoStack) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as operator:
        return await operator.get(f"{stack.operator_url}/readyz")


def lands_as(page: httpx.Response, name: str) -> bool:
    return page.status_code == 200 and name in html.unescape(page.text)


async def test_sign_ins_resume_on_the_promoted_replica_without_a_restart(
    cluster_and_demo: tuple[SentinelCluster, DemoStack],
) -> None:
    cluster, stack = cluster_and_demo
    login = f"{stack.gateway_url}/login/skyprep"
    async with httpx.AsyncClient(timeout=20) as alice:
        assert lands_as(await sign_in(alice, f"{login}?idp=demo-oidc", ALICE), "Alice Anderson")
        ready = await readiness(stack)
        assert ready.status_code == 200
        old = cluster.current_primary()
        assert ready.json()["store"] == (
            f"redis primary 127.0.0.1:{old.port} (sentinel service '{SERVICE}')"
        )
        cluster.wait_replicated()  # Alice's session reached the replica (see README)
        killed_at = time.monotonic()
        cluster.kill_primary()

        # Bob keeps trying, as a person reloading would: refusals are the clear 503 page.
        statuses: list[int] = []
        while True:
            assert time.monotonic() - killed_at < 45, f"no recovery; saw {statuses}"
            async with httpx.AsyncClient(timeout=20) as bob:
                start = await bob.get(f"{login}?idp=demo-saml", follow_redirects=True)
                at_idp = "Choose a demo employee" in start.text
                page = await choose_employee(bob, start, BOB) if at_idp else start
            if lands_as(page, "Bob Brown"):
                break
            statuses.append(page.status_code)
            assert page.status_code == 503, page.text[:400]
            assert "temporarily unavailable" in page.text
            await _pause()
        recovered = time.monotonic() - killed_at
        print(f"\nsign-ins back {recovered:.2f} s after the primary was killed "
              f"({len(statuses)} refused attempts)")  # fmt: skip
        assert statuses, "the outage went unnoticed: something answered for the dead primary"

        # The same gateway, now on the promoted replica: readiness says which.
        new = cluster.current_primary()
        assert new.port != old.port
        ready = await readiness(stack)
        assert ready.status_code == 200
        assert ready.json()["store"] == (
            f"redis primary 127.0.0.1:{new.port} (sentinel service '{SERVICE}')"
        )
        assert DATA_PW not in ready.text and SENTINEL_PW not in ready.text
        # Alice's session was replicated before the crash: her next click needs no IdP.
        again = await alice.get(login, follow_redirects=True)
        assert lands_as(again, "Alice Anderson")
        assert httpx.URL(stack.oidc_url).netloc.decode() not in [
            r.url.netloc.decode() for r in again.history
        ]
        # And someone new gets in over OIDC too.
        async with httpx.AsyncClient(timeout=20) as chloe:
            page = await sign_in(chloe, f"{login}?idp=demo-oidc", CHLOE)
            assert lands_as(page, name_of(CHLOE))


async def test_readiness_while_no_primary_is_known(
    cluster_and_demo: tuple[SentinelCluster, DemoStack],
) -> None:
    """With every data node gone, readiness is 503 and says why, without credentials."""
    cluster, stack = cluster_and_demo
    for server in cluster.servers.values():
        server.kill()
    deadline = time.monotonic() + 20
    while True:
        ready = await readiness(stack)
        body = ready.json()
        if ready.status_code == 503 and "no primary known" in body["store"]:
            break
        assert time.monotonic() < deadline, body
        await _pause()
    assert "store: unreachable" in body["problems"]
    assert DATA_PW not in ready.text and SENTINEL_PW not in ready.text


async def _pause() -> None:
    await asyncio.sleep(0.2)


def name_of(sub: str) -> str:
    employee = find_employee(sub)
    assert employee is not None
    return employee.display_name
