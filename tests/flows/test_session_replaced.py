"""A new sign-in in a browser replaces its session everywhere, and an OIDC callback whose
parameters are repeated is refused before anything is looked up."""

from __future__ import annotations

import httpx
import pytest

from gateway.sandbox.demo import DemoStack
from tests.flows.agent import sign_in

ALICE = "emp-1001"
BOB = "emp-1002"


async def test_signing_in_as_someone_else_ends_the_previous_session(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", ALICE)
    alices = browser.cookies.get("gw_session")
    # The same browser signs in again as someone else (a shared kiosk, an account switcher).
    page = await sign_in(browser, f"{demo.gateway_url}/auth/demo-oidc/login?app=skyprep", BOB)
    assert "Bob Brown" in page.text
    async with httpx.AsyncClient() as copy:
        copy.cookies.set("gw_session", alices or "", domain="127.0.0.1")
        again = await copy.get(f"{demo.gateway_url}/login/skyprep?idp=demo-oidc")
    # Alice's old cookie no longer opens the LMS: it is sent to the IdP like a stranger.
    assert again.status_code == 303 and again.headers["location"].startswith(demo.oidc_url)


@pytest.mark.parametrize("repeated", ["code", "state"])
async def test_repeated_callback_parameters_are_refused(
    demo: DemoStack, browser: httpx.AsyncClient, repeated: str
) -> None:
    before = demo.skyprep.calls.count()
    answer = await browser.get(
        f"{demo.gateway_url}/auth/demo-oidc/callback",
        params=[("code", "a"), ("state", "b"), (repeated, "c")],
    )
    assert answer.status_code == 400
    assert "gw_session" not in answer.headers.get("set-cookie", "")
    assert demo.skyprep.calls.count() == before
