"""Sign-ins first: while a burst of first sign-ins spends an app's LMS budget, SCIM is
answered 429 + Retry-After (the IdP retries later) and every sign-in still lands.

Real time, the demo's budget (100 calls/min: a burst of 10, 5 kept for sign-ins)."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.flows.agent import sign_in
from tests.scim_support import entra_user, roomy_demo, scim

EMPLOYEES = ("emp-1001", "emp-1002", "emp-1003", "emp-1004")


async def test_scim_yields_to_a_sign_in_burst() -> None:
    async with roomy_demo(calls_per_minute=100) as stack, scim(stack, "litmos") as client:
        statuses: list[int] = []
        retry_after: list[int] = []
        done = asyncio.Event()

        async def provisioning() -> None:
            # An IdP's provisioning cycle, running flat out during the morning rush.
            i = 0
            while not done.is_set():
                i += 1
                response = await client.post(
                    "/Users", json=entra_user(f"joiner{i}@example.com", "J", f"Oiner{i}"))
                statuses.append(response.status_code)
                if response.status_code == 429:
                    retry_after.append(int(response.headers["retry-after"]))
                await asyncio.sleep(0.05)

        async def one_sign_in(sub: str) -> tuple[int, float]:
            started = time.monotonic()
            async with httpx.AsyncClient(timeout=30) as browser:
                page = await sign_in(
                    browser, f"{stack.gateway_url}/login/litmos?idp=demo-oidc", sub)
            return page.status_code, time.monotonic() - started

        scim_task = asyncio.create_task(provisioning())
        await asyncio.sleep(0.3)  # SCIM first: it may take only what is above the reserve
        results = await asyncio.gather(*(one_sign_in(sub) for sub in EMPLOYEES))
        done.set()
        await scim_task

        created, throttled = statuses.count(201), statuses.count(429)
        print(f"\nsign-ins: {[round(t, 2) for _, t in results]} s; SCIM creates {created}, "
              f"SCIM 429s {throttled}, Retry-After {sorted(set(retry_after))} s; "
              f"LMS calls {stack.litmos.calls.count()}")
        assert [status for status, _ in results] == [200] * len(EMPLOYEES)
        assert throttled > 0 and all(1 <= r <= 600 for r in retry_after)
        assert set(statuses) <= {201, 429}
        metrics = stack.gateway_app.state.services.metrics.registry
        assert metrics.get_sample_value(
            "gateway_scim_throttled_total", {"app": "litmos"}) == throttled
