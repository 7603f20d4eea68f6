"""Abuse limits (issue 12): bounded anonymous state, operator endpoints off the public listener.

Everything runs for real: the demo stack (gateway, demo IdPs, LMS simulators on 127.0.0.1),
real redis-server processes, a real ``gateway serve`` process. Floods are sent in-process
through ``httpx.ASGITransport`` to the very app the demo serves, with the client address set
per request (as uvicorn sets it from a trusted proxy's X-Forwarded-For); a legitimate employee
meanwhile signs in through the real IdP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.app import create_app
from gateway.config import parse_settings
from gateway.errors import StoreFull, TooManyPendingLogins
from gateway.limits import PendingLogins, client_key
from gateway.sandbox.demo import DemoStack, start_demo
from gateway.store.memory import MemoryStore
from tests.flows.agent import forms_of, sign_in
from tests.support.redis_server import RedisServer, free_port
from tests.test_config import minimal

ALICE = "emp-1001"
ROOT = Path(__file__).resolve().parent.parent
BUSY_TEXT = "Too many sign-ins are being started from your network right now"


def netloc(url: str) -> str:
    return urlsplit(url).netloc


def store_of(stack: DemoStack) -> MemoryStore:
    store = stack.gateway_app.state.services.store
    assert isinstance(store, MemoryStore)
    return store


def from_address(stack: DemoStack, ip: str) -> httpx.AsyncClient:
    """A browser whose requests reach the gateway from ``ip``; the IdP and LMS over real HTTP."""
    transport = httpx.ASGITransport(app=stack.gateway_app, client=(ip, 40000))
    return httpx.AsyncClient(mounts={stack.gateway_url: transport}, timeout=30)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.asynccontextmanager
async def demo_with(store: dict[str, Any] | None = None) -> AsyncIterator[DemoStack]:
    stack = await start_demo(0, store=store)
    try:
        yield stack
    finally:
        await stack.stop()


# -- 1. return_to / target length -------------------------------------------------------------


async def test_long_return_to_or_target_is_refused_and_nothing_is_stored() -> None:
    async with demo_with() as stack, from_address(stack, "10.0.0.1") as browser:
        store = store_of(stack)
        before = store.entry_count()
        g = stack.gateway_url
        for url in (
            f"{g}/auth/demo-oidc/login?return_to=/embed/{'a' * 600}",
            f"{g}/auth/demo-saml/login?app=skyprep&return_to=/{'b' * 2000}",
            f"{g}/auth/demo-oidc/login?app=litmos&target=course:{'1' * 200}",
            f"{g}/login/litmos?idp=demo-oidc&target=course:{'1' * 5000}",
        ):
            answer = await browser.get(url)
            assert answer.status_code == 400, (url[:80], answer.text[:300])
            assert "not allowed" in answer.text
            assert "location" not in answer.headers
        assert store.entry_count() == before
        # A return path of a sensible length still starts a sign-in.
        ok = await browser.get(f"{g}/auth/demo-oidc/login?return_to=/embed/{'a' * 300}")
        assert ok.status_code == 303 and ok.headers["location"].startswith(stack.oidc_url)


# -- 2. pending logins per client address ------------------------------------------------------


async def test_per_client_cap_refuses_with_429_and_other_clients_still_get_in() -> None:
    async with demo_with() as stack:
        cap = stack.settings.gateway.max_pending_logins_per_client
        store = store_of(stack)
        start = f"{stack.gateway_url}/auth/demo-saml/login?app=skyprep"
        async with from_address(stack, "203.0.113.7") as flooder:
            for _ in range(cap):
                assert (await flooder.get(start)).status_code == 303
            held = store.entry_count()
            refused = await flooder.get(start)
            assert refused.status_code == 429
            assert BUSY_TEXT in refused.text
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert refused.headers["cache-control"] == "no-store"
            assert "location" not in refused.headers and "set-cookie" not in refused.headers
            assert store.entry_count() == held  # nothing of the refused sign-in was stored
            # /login/<app> starts sign-ins through the same gate.
            via_app = await flooder.get(f"{stack.gateway_url}/login/skyprep?idp=demo-oidc")
            assert via_app.status_code == 429
        async with from_address(stack, "203.0.113.8") as neighbour:
            page = await sign_in(
                neighbour, f"{stack.gateway_url}/login/skyprep?idp=demo-oidc", ALICE
            )
            assert page.status_code == 200 and "Alice Anderson" in page.text
            assert netloc(str(page.url)) == netloc(stack.skyprep.login_base_url)


async def test_finished_sign_ins_give_their_slot_back() -> None:
    async with demo_with() as stack:
        cap = stack.settings.gateway.max_pending_logins_per_client
        start = f"{stack.gateway_url}/auth/demo-oidc/login?app=skyprep"
        async with from_address(stack, "198.51.100.20") as office:
            for _ in range(cap - 1):  # abandoned at the IdP
                assert (await office.get(start)).status_code == 303
            for _ in range(5):  # an employee behind the same address signs in, again and again
                office.cookies.clear()
                page = await sign_in(
                    office, f"{stack.gateway_url}/login/skyprep?idp=demo-oidc", ALICE
                )
                assert page.status_code == 200 and "Alice Anderson" in page.text, page.text[:300]
            assert (await office.get(start)).status_code == 303  # the last free slot
            assert (await office.get(start)).status_code == 429


async def test_ipv6_clients_count_by_their_64_prefix() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key(None) == "unknown"


async def test_total_cap_holds_across_replicas_sharing_one_redis(redis_url: str) -> None:
    from gateway.store.redis import RedisStore

    prefix = f"t{secrets.token_hex(4)}:"
    one, two = RedisStore(redis_url, key_prefix=prefix), RedisStore(redis_url, key_prefix=prefix)
    try:
        replicas = [
            PendingLogins(s, window=600, max_total=40, max_per_client=1000) for s in (one, two)
        ]
        results = await asyncio.gather(
            *(replicas[i % 2].admit(f"192.0.2.{i % 7}") for i in range(60)),
            return_exceptions=True,
        )
        admitted = [r for r in results if r is None]
        refused = [r for r in results if isinstance(r, TooManyPendingLogins)]
        assert len(admitted) + len(refused) == 60
        assert 30 <= len(admitted) <= 40  # never more than the cap, whichever replica
        assert "try again in a minute" in refused[0].public
    finally:
        await one.aclose()
        await two.aclose()


# -- 3. the flood --------------------------------------------------------------------------------


async def test_flood_of_anonymous_login_starts_stays_bounded_and_employees_still_sign_in() -> None:
    async with demo_with() as stack:
        store = store_of(stack)
        cap = stack.settings.gateway.max_pending_logins_per_client
        addresses = [f"10.9.0.{i}" for i in range(1, 6)]  # 5 x the cap < the flood
        flooders = [from_address(stack, ip) for ip in addresses]
        url = f"{stack.gateway_url}/auth/demo-saml/login?app=skyprep&return_to=/{'x' * 500}"
        statuses: list[int] = []

        async def flood(total: int) -> None:
            for batch in range(0, total, 100):
                answers = await asyncio.gather(
                    *(flooders[i % len(flooders)].get(url) for i in range(batch, batch + 100))
                )
                statuses.extend(a.status_code for a in answers)

        try:
            await flood(300)  # warm-up: templates, code paths, allocator
            rss_before = rss_bytes()

            async def employee() -> httpx.Response:
                async with from_address(stack, "192.0.2.55") as browser:
                    await asyncio.sleep(0.5)  # well inside the flood
                    return await sign_in(
                        browser, f"{stack.gateway_url}/login/skyprep?idp=demo-oidc", ALICE
                    )

            page, _ = await asyncio.gather(employee(), flood(5000))
            growth = rss_bytes() - rss_before
        finally:
            for client in flooders:
                await client.aclose()
        assert page.status_code == 200 and "Alice Anderson" in page.text, page.text[:300]
        assert netloc(str(page.url)) == netloc(stack.skyprep.login_base_url)
        assert set(statuses) == {303, 429}
        assert statuses.count(303) == cap * len(addresses)
        # Each admitted start: SAML request id + RelayState (+ its address's counters).
        held = store.entry_count()
        assert held <= cap * len(addresses) * 2 + 2 * len(addresses) + 50, held
        assert growth < 20 * 1024 * 1024, f"RSS grew {growth / 1e6:.1f} MB"


# -- 4. a full memory store never evicts security entries ----------------------------------------


async def test_full_memory_store_refuses_new_sign_ins_but_keeps_replay_cache_and_sessions() -> None:
    async with demo_with({"backend": "memory", "memory_max_entries": 1000}) as stack:
        store = store_of(stack)
        acs = f"{stack.gateway_url}/auth/demo-saml/acs"
        async with from_address(stack, "192.0.2.77") as person:
            page = await person.get(
                f"{stack.gateway_url}/login/skyprep?idp=demo-saml", follow_redirects=True
            )
            (choose,) = forms_of(page)
            posted = await person.post(choose.action, data={**choose.fields, "sub": ALICE})
            (form,) = [f for f in forms_of(posted) if "SAMLResponse" in f.fields]
            accepted = await person.post(acs, data=form.fields)
            assert accepted.status_code == 303, accepted.text[:300]
            assert netloc(accepted.headers["location"]) == netloc(stack.skyprep.login_base_url)

            # Every request from a different address: the per-client cap never applies.
            statuses = []
            transport = httpx.ASGITransport(app=stack.gateway_app)
            async with httpx.AsyncClient(transport=transport) as bots:
                for i in range(3000):
                    transport.client = (f"10.{i // 250}.{i % 250}.9", 40000)
                    start = f"{stack.gateway_url}/auth/demo-saml/login?app=skyprep"
                    statuses.append((await bots.get(start)).status_code)
                    bots.cookies.clear()
            assert statuses.count(429) > 2000
            assert store.entry_count() <= 1000

            # The assertion's replay-cache entry survived the flood: a replay is refused (from
            # a browser without the session: one with it would carry on with its session)...
            async with from_address(stack, "192.0.2.78") as replayer:
                replay = await replayer.post(acs, data=form.fields)
            assert replay.status_code in (400, 401), replay.text[:300]
            assert "location" not in replay.headers
            # ...and the session made by the sign-in is still there (no IdP round trip).
            again = await person.get(f"{stack.gateway_url}/login/skyprep")
            assert again.status_code == 303
            assert netloc(again.headers["location"]) == netloc(stack.skyprep.login_base_url)


def test_memory_store_never_evicts_and_purges_expired_entries_first() -> None:
    now = [0.0]
    store = MemoryStore(lambda: now[0], max_entries=1000)

    async def scenario() -> None:
        for i in range(500):
            await store.set(f"saml:corp:assertion:{i}", b"1", 100)  # replay cache
        for i in range(400):
            await store.set(f"pending:{i}", b"1", 10)
        # 900 entries: anonymous state (90 % of the limit) is refused...
        with pytest.raises(StoreFull):
            await store.incr_with_ttl("pending:total:0", 10, anonymous=True)
        # ...security entries still fit, up to the limit itself, and then are refused too.
        for i in range(100):
            await store.set(f"session:{i}", b"s", 100)
        with pytest.raises(StoreFull):
            await store.set("revoked:x", b"1", 100)
        assert await store.set_if_absent("session:0", b"other", 100) is False
        await store.set("session:0", b"updated", 100)  # an existing key may change
        # Nothing was evicted to make room.
        for i in range(500):
            assert await store.get(f"saml:corp:assertion:{i}") == b"1"
        assert await store.get("session:0") == b"updated"
        # Once the pending entries expire, they (and only they) are purged for new ones.
        now[0] = 11.0
        await store.set("revoked:x", b"1", 100)
        assert await store.incr_with_ttl("pending:total:1", 10, anonymous=True) == 1
        assert store.entry_count() == 602
        assert await store.get("saml:corp:assertion:499") == b"1"

    asyncio.run(scenario())


# -- 5. operator endpoints ---------------------------------------------------------------------


def settings_data(**operator: Any) -> dict[str, Any]:
    data: dict[str, Any] = minimal()
    # Unreachable on purpose: readiness then has a problem to (not) show.
    data["idp"]["okta"]["issuer"] = "https://127.0.0.1:9"
    if operator:
        data["operator"] = operator
    return data


ENV = {"GATEWAY_SIGNING_KEY": "k" * 64, "SKYPREP_API_KEY": "sk", "OPERATOR_TOKEN": "op-" + "t" * 40}
AUTH = {"Authorization": f"Bearer {ENV['OPERATOR_TOKEN']}"}


def public_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("198.51.100.1", 1)),
        base_url="https://learn.example.com",
    )


async def test_public_listener_hides_metrics_and_readiness_details_by_default(
    demo: DemoStack,
) -> None:
    async with httpx.AsyncClient() as browser:
        metrics = await browser.get(f"{demo.gateway_url}/metrics")
        assert metrics.status_code == 404 and "gateway_" not in metrics.text
        ready = await browser.get(f"{demo.gateway_url}/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        # Even a bearer token gets nothing when no token is configured.
        guessed = await browser.get(f"{demo.gateway_url}/metrics", headers=AUTH)
        assert guessed.status_code in (401, 404) and "gateway_" not in guessed.text
        assert (await browser.get(f"{demo.gateway_url}/healthz")).text == "ok"
        # The demo keeps its metrics on the operator listener.
        operator = await browser.get(f"{demo.operator_url}/metrics")
        assert operator.status_code == 200 and "gateway_sign_ins_total" in operator.text


async def test_operator_token_opens_metrics_and_details_on_the_public_listener() -> None:
    app = create_app(parse_settings(settings_data(token={"env": "OPERATOR_TOKEN"}), ENV))
    async with public_client(app) as client:
        assert (await client.get("/metrics")).status_code == 404
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "gateway_" not in wrong.text
        basic = await client.get("/metrics", headers={"Authorization": "Basic b3A6dA=="})
        assert basic.status_code == 401
        ok = await client.get("/metrics", headers=AUTH)
        assert ok.status_code == 200 and "gateway_" in ok.text
        public = await client.get("/readyz")
        assert public.status_code == 503 and public.json() == {"ready": False}
        detail = await client.get("/readyz", headers=AUTH)
        assert detail.status_code == 503
        assert detail.json()["problems"] == ["idp okta: not loaded"]
        # Every dependency with its state, for the operator: the IdP, the store, each LMS.
        deps = {d["name"]: d for d in detail.json()["dependencies"]}
        assert deps["idp okta"]["state"] == "not loaded"
        assert deps["store"] == {"name": "store", "state": "ok", "detail": "memory (this process)"}
        assert {n: d["state"] for n, d in deps.items() if n.startswith("lms ")} == {
            f"lms {name}": "ok" for name in app.state.services.apps
        }
    assert ENV["OPERATOR_TOKEN"] not in str(app.state.services.settings)


@contextlib.contextmanager
def serve_process(
    tmp_path: Path, data: dict[str, Any]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    from tests.flows.replicas import to_toml

    config = tmp_path / "gateway.toml"
    config.write_text(to_toml(data))
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, **ENV}, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        log.close()


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer:\n{log.read_text()[-2000:]}")


def test_gateway_serve_answers_metrics_on_the_operator_port_only(tmp_path: Path) -> None:
    operator_port = free_port()
    data = settings_data(port=operator_port, host="127.0.0.1")
    data["gateway"]["public_url"] = "https://learn.example.com"
    with serve_process(tmp_path, data) as (public, process):
        operator = f"http://127.0.0.1:{operator_port}"
        wait_for(f"{public}/healthz", process, tmp_path / "serve.log")
        wait_for(f"{operator}/healthz", process, tmp_path / "serve.log")
        assert httpx.get(f"{public}/metrics").status_code == 404
        assert httpx.get(f"{public}/readyz").json() == {"ready": False}
        metrics = httpx.get(f"{operator}/metrics")
        assert metrics.status_code == 200 and "gateway_sign_ins_total" in metrics.text
        ready = httpx.get(f"{operator}/readyz")
        assert ready.status_code == 503
        (problem,) = ready.json()["problems"]
        assert problem == "idp okta: not loaded (discovery unreachable: ConnectError)"
        # Sign-in pages are not on the operator listener.
        assert httpx.get(f"{operator}/login/training").status_code == 404
        process.send_signal(signal.SIGTERM)
        # Both listeners shut down (uvicorn re-raises the signal after a graceful stop).
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(f"{operator}/healthz", timeout=1)
        raise AssertionError("operator listener still up after the gateway stopped")


# -- 6. Redis that may evict -------------------------------------------------------------------


async def test_evicting_redis_is_flagged_at_start_and_in_detailed_readiness(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer(extra_args=("--maxmemory-policy", "allkeys-lru"))
    try:
        server.start()
        data = settings_data(token={"env": "OPERATOR_TOKEN"})
        data["store"] = {"backend": "redis", "url": server.url, "key_prefix": "evict:"}
        app = create_app(parse_settings(data, ENV))
        with caplog.at_level(logging.WARNING, logger="gateway"):
            async with app.router.lifespan_context(app), public_client(app) as client:
                detail = (await client.get("/readyz", headers=AUTH)).json()
                public = (await client.get("/readyz")).json()
        assert any("allkeys-lru" in p and "noeviction" in p for p in detail["problems"])
        assert "problems" not in public
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any("allkeys-lru" in r.getMessage() for r in warned)
    finally:
        server.close()
