"""Repeat sign-ins below one LMS call (issue 11 item 3), browser to LMS simulator.

A gateway with every app on ``reuse_links = "until_expiry"`` (SkyPrep with ``daily`` keys,
Damstra with its default ``expiresIn = day``) behind the demo OpenID Provider; the simulators
count every LMS call and their sign-in pages say who got in. What a person (and IT) would
notice: a second sign-in of the same employee lands without any LMS call on SkyPrep and
Damstra, still costs one on Litmos, costs one again after signing out or after someone else
signs in on that browser, is audited as "reused", and the link never reaches the logs.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.config import parse_settings
from gateway.sandbox._common import Served, bind_port, serve_task
from gateway.sandbox.damstra import DamstraSimulator
from gateway.sandbox.demo import DAMSTRA_KEY, LITMOS_KEY, OIDC_CLIENT_ID, SKYPREP_KEY, demo_config
from gateway.sandbox.litmos import LitmosSimulator
from gateway.sandbox.oidc_idp import DemoClient, DemoOidcProvider
from gateway.sandbox.skyprep import SkyPrepSimulator
from tests.flows.agent import forms_of, sign_in

ALICE, BOB = "emp-1001", "emp-1002"
APPS = ("skyprep", "damstra", "litmos")


@dataclass
class Stack:
    url: str
    oidc: str
    gateway: Starlette
    sims: dict[str, Any]

    def calls(self, app: str) -> int:
        return int(self.sims[app].calls.count())

    def login_host(self, app: str) -> str:
        return str(self.sims[app].login_base_url)

    def metrics(self) -> str:
        return generate_latest(self.gateway.state.services.metrics.registry).decode()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    socks = {n: bind_port() for n in ("gw", "oidc", "sky", "dam", "lit")}
    url = {n: f"http://127.0.0.1:{s.getsockname()[1]}" for n, s in socks.items()}
    secret = secrets.token_urlsafe(24)
    oidc = DemoOidcProvider(url["oidc"], {OIDC_CLIENT_ID: DemoClient(
        secret, (f"{url['gw']}/auth/demo-oidc/callback",), (f"{url['gw']}/signed-out",))},
        demo_mode=True)
    sims: dict[str, Any] = {
        "skyprep": SkyPrepSimulator(SKYPREP_KEY, "demo.skyprepapp.com",
                                    login_base_url=url["sky"]),
        "damstra": DamstraSimulator(DAMSTRA_KEY, login_base_url=url["dam"]),
        "litmos": LitmosSimulator(LITMOS_KEY, login_base_url=url["lit"]),
    }
    sims["litmos"].add_team("Safety team", "safety")
    config = demo_config(gateway=url["gw"], oidc=url["oidc"], saml_metadata_file="unused",
                         skyprep=url["sky"], damstra=url["dam"], litmos=url["lit"],
                         portal=url["gw"])
    del config["idp"]["demo-saml"]  # the OpenID Provider is enough here
    for app in config["app"].values():
        app.update(idps=["demo-oidc"], group_idps=["demo-oidc"], reuse_links="until_expiry")
    config["app"]["skyprep"]["skyprep"]["key_type"] = "daily"
    config["gateway"]["log_level"] = "DEBUG"
    environ = {"GATEWAY_SIGNING_KEY": secrets.token_hex(32), "DEMO_OIDC_SECRET": secret,
               "DEMO_SKYPREP_KEY": SKYPREP_KEY, "DEMO_DAMSTRA_KEY": DAMSTRA_KEY,
               "DEMO_LITMOS_KEY": LITMOS_KEY}
    gateway = create_app(parse_settings(config, environ))
    servers: list[Served] = []
    try:
        servers.append(await serve_task(oidc.app, socks["oidc"]))
        for name, short in (("skyprep", "sky"), ("damstra", "dam"), ("litmos", "lit")):
            servers.append(await serve_task(sims[name].app, socks[short]))
        servers.append(await serve_task(gateway, socks["gw"]))
        yield Stack(url["gw"], url["oidc"], gateway, sims)
    finally:
        for served in reversed(servers):
            await served.astop()
        for sock in socks.values():
            sock.close()


def landed(page: httpx.Response, stack: Stack, app: str, name: str) -> str:
    """Assert the browser is signed in to the LMS as ``name``; the link it used."""
    assert page.status_code == 200, page.text[:400]
    assert str(page.url).startswith(stack.login_host(app)), page.url
    assert name in page.text
    return str(page.url)


async def click(browser: httpx.AsyncClient, stack: Stack, app: str) -> httpx.Response:
    """The employee clicks the app's link again (their gateway session skips the IdP)."""
    return await browser.get(f"{stack.url}/login/{app}", follow_redirects=True)


async def sign_out(browser: httpx.AsyncClient, stack: Stack) -> None:
    (form,) = forms_of(await browser.get(f"{stack.url}/logout"))
    done = await browser.post(form.action, data=form.fields,
                              headers={"Origin": stack.url, "Sec-Fetch-Site": "same-origin"})
    assert done.status_code == 303


@pytest.mark.parametrize("app", APPS)
async def test_repeat_sign_ins_cost_no_lms_call_where_the_vendor_reuses_links(
    stack: Stack, app: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    per_repeat = 1 if app == "litmos" else 0  # a LoginKey works once: always fetched anew
    links: set[str] = set()
    async with httpx.AsyncClient(timeout=20) as first, httpx.AsyncClient(timeout=20) as second:
        links.add(landed(await sign_in(first, f"{stack.url}/login/{app}", ALICE),
                         stack, app, "Alice"))
        before = stack.calls(app)
        # The same browser clicks again, and another browser signs in through the IdP.
        links.add(landed(await click(first, stack, app), stack, app, "Alice"))
        links.add(landed(await sign_in(second, f"{stack.url}/login/{app}", ALICE),
                         stack, app, "Alice"))
        assert stack.calls(app) - before == 2 * per_repeat
        if per_repeat == 0:
            assert len(links) == 1  # the very link minted for the first sign-in
        # Signing out (in either browser) ends reuse for every browser of that employee.
        await sign_out(first, stack)
        before = stack.calls(app)
        links.add(landed(await click(second, stack, app), stack, app, "Alice"))
        assert stack.calls(app) - before == 1
        before = stack.calls(app)
        links.add(landed(await click(second, stack, app), stack, app, "Alice"))
        assert stack.calls(app) - before == per_repeat

    audit = [r for r in caplog.records if r.name == "gateway.audit" and r.getMessage() == "sign_in"]
    actions = [getattr(r, "fields", {}).get("action") for r in audit]
    assert actions.count("reused") == (0 if per_repeat else 3), actions
    reused = f'gateway_sign_in_links_reused_total{{app="{app}"}}'
    if per_repeat == 0:
        assert f"{reused} 3.0" in stack.metrics()
    else:
        assert reused not in stack.metrics()
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')} {r.exc_text or ''}"
                       for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert "gateway.audit" in {r.name for r in caplog.records}  # the logs were captured
    for link in links:
        assert link not in logged
        assert link.rsplit("=", 1)[1] not in logged  # not even the key or token part


async def test_someone_else_signing_in_on_the_browser_ends_reuse_of_the_previous_links(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(timeout=20) as kiosk, httpx.AsyncClient(timeout=20) as own:
        landed(await sign_in(own, f"{stack.url}/login/damstra", ALICE), stack, "damstra",
               "Alice")
        landed(await sign_in(kiosk, f"{stack.url}/login/skyprep", ALICE), stack, "skyprep",
               "Alice")
        before = stack.calls("damstra")
        landed(await click(kiosk, stack, "damstra"), stack, "damstra", "Alice")
        assert stack.calls("damstra") == before  # reused
        # Bob signs in on the kiosk: Alice's session there ends, and so does reuse of her
        # links on every app; her own browser still works, at one LMS call.
        page = await sign_in(kiosk, f"{stack.url}/auth/demo-oidc/login?app=damstra", BOB)
        landed(page, stack, "damstra", "Bob")
        before = stack.calls("damstra")
        landed(await click(own, stack, "damstra"), stack, "damstra", "Alice")
        assert stack.calls("damstra") - before == 1


async def test_a_reused_link_to_an_account_the_lms_deactivated_is_refused_by_the_lms(
    stack: Stack,
) -> None:
    """The trade-off the README states, observed: the gateway skips its own check while it
    reuses a link, and the LMS's own sign-in page is what refuses a deactivated account."""
    damstra: DamstraSimulator = stack.sims["damstra"]
    async with httpx.AsyncClient(timeout=20) as browser:
        landed(await sign_in(browser, f"{stack.url}/login/damstra", ALICE), stack, "damstra",
               "Alice")
        (user,) = [u for u in damstra.users.values()
                   if u["emailAddress"] == "alice.anderson@example.com"]
        user["clientStatusId"] = 57  # Not Current, set by an LMS admin
        again = await click(browser, stack, "damstra")
        assert again.status_code == 403 and "not current" in again.text
