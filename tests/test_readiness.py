"""An IdP that was unreachable at start-up is loaded in the background, without any sign-in,
and /readyz says why it is not ready meanwhile."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx

from gateway.auth.oidc import OidcFrontDoor
from gateway.settings import OidcIdpSettings, Secret
from gateway.store.memory import MemoryStore
from gateway.web.operator import readiness
from tests.test_oidc_hostile import CLIENT_ID, ISSUER, REDIRECT, HostileIdp
from tests.test_oidc_hostile import Clock as HostileClock


async def test_unreachable_idp_at_start_becomes_ready_by_itself() -> None:
    idp = HostileIdp(HostileClock())
    outage = {"left": 3}

    def handle(request: httpx.Request) -> httpx.Response:
        if outage["left"] > 0:
            outage["left"] -= 1
            return httpx.Response(503, text="down for maintenance")
        return idp.handle(request)

    settings = OidcIdpSettings(
        type="oidc", issuer=ISSUER, client_id=CLIENT_ID, client_secret=Secret("s" * 32)
    )
    store = MemoryStore()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        door = OidcFrontDoor(
            "corp", settings, http, store, REDIRECT, retry_backoff=(0.01, 0.05)
        )
        services = SimpleNamespace(front_doors={"corp": door}, store=store)
        try:
            await door.start()
            assert not door.ready
            ready, problems = await readiness(services)  # type: ignore[arg-type]
            assert not ready
            assert problems[0].startswith("idp corp: not loaded (") and "503" in problems[0]
            # No sign-in arrives (an orchestrator routes nothing to an unready replica).
            for _ in range(200):
                if door.ready:
                    break
                await asyncio.sleep(0.01)
            assert door.ready and door.last_error is None
            assert await readiness(services) == (True, [])  # type: ignore[arg-type]
        finally:
            await door.aclose()
