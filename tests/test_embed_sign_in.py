"""Signing in from a portal's iframe, over real HTTP against the demo: the hand-over is single
use, only the frame that started it can collect it, a portal origin not configured gets
nothing, a cross-site page cannot start the popup (login CSRF), and the frame's grant still
opens only the employee's own lessons, only on embed routes, only while the session lives.

The frame's cookies are ``Secure; Partitioned``: httpx (like any cookiejar) does not send a
Secure cookie over http, so the frame's jar is kept by hand here, apart from the popup's
(an httpx jar), as a browser keeps them apart. The real browser is in
tests/flows/test_embed_browser.py; expiry runs on a fake clock below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from gateway.embed_grants import TICKET_SECONDS, EmbedSignIns
from gateway.errors import LoginStateError
from gateway.identity import Identity
from gateway.sandbox.demo import DemoStack
from gateway.store.memory import MemoryStore
from tests.flows.agent import sign_in

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


@dataclass
class Frame:
    """The portal iframe's partitioned cookie jar (name -> value)."""

    gateway: str
    jar: dict[str, str] = field(default_factory=dict)
    set_cookie_lines: list[str] = field(default_factory=list)

    def keep(self, response: httpx.Response) -> None:
        for line in response.headers.get_list("set-cookie"):
            self.set_cookie_lines.append(line)
            name, _, rest = line.partition("=")
            value = rest.split(";")[0]
            if "Max-Age=0" in line or not value:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value

    def cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.jar.items())}

    async def post(self, client: httpx.AsyncClient, path: str, body: Any,
                   headers: dict[str, str] | None = None) -> httpx.Response:
        sent = {**SAME_ORIGIN, **self.cookie_header(), **(headers or {})}
        response = await client.post(  # an empty value: that header is not sent at all
            f"{self.gateway}{path}", json=body, headers={k: v for k, v in sent.items() if v}
        )
        self.keep(response)
        return response

    async def get(self, client: httpx.AsyncClient, path: str) -> httpx.Response:
        response = await client.get(f"{self.gateway}{path}", headers=self.cookie_header())
        self.keep(response)
        return response


BASE = "/embed/damstra/sign-in"


def lesson(demo: DemoStack, schedule: int | None = None) -> str:
    return f"/embed/damstra/lesson-schedules/{schedule or demo.lesson_schedule_id}"


async def start(frame: Frame, client: httpx.AsyncClient, portal: str) -> str:
    response = await frame.post(client, f"{BASE}/start", {"portal": portal})
    assert response.status_code == 200, response.text
    handle = response.json()["handle"]
    assert isinstance(handle, str) and len(handle) >= 32
    return handle


async def popup_signs_in(demo: DemoStack, popup: httpx.AsyncClient, handle: str,
                         sub: str = "emp-1002") -> httpx.Response:
    """The popup: the frame's form POST, the IdP choice, the employee, back to done."""
    chooser = await popup.post(
        f"{demo.gateway_url}{BASE}/popup", data={"handle": handle}, headers=SAME_ORIGIN
    )
    assert chooser.status_code == 200 and "OpenID Connect" in chooser.text
    link = re.search(r'href="(/auth/demo-oidc/login\?[^"]+)"', chooser.text)
    assert link is not None
    done = await sign_in(popup, demo.gateway_url + link.group(1).replace("&amp;", "&"), sub)
    assert done.status_code == 200 and str(done.url).endswith(f"{BASE}/done"), done.text[:300]
    return done


async def signed_in_frame(demo: DemoStack, client: httpx.AsyncClient,
                          popup: httpx.AsyncClient) -> Frame:
    frame = Frame(demo.gateway_url)
    handle = await start(frame, client, demo.portal_url)
    await popup_signs_in(demo, popup, handle)
    finished = await frame.post(client, f"{BASE}/finish", {"handle": handle})
    assert finished.status_code == 200 and finished.json() == {"status": "signed_in"}
    return frame


@pytest.fixture
async def popup() -> Any:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


async def test_the_hand_over_is_single_use_and_opens_the_lesson(
    demo: DemoStack, browser: httpx.AsyncClient, popup: httpx.AsyncClient
) -> None:
    frame = Frame(demo.gateway_url)
    handle = await start(frame, browser, demo.portal_url)
    bind_line = next(x for x in frame.set_cookie_lines if x.startswith("gw_embed_bind="))
    for attribute in ("Secure", "HttpOnly", "SameSite=None", "Partitioned", "Path=/"):
        assert attribute in bind_line
    # Before the popup has signed in: "pending", and the frame keeps asking.
    pending = await frame.post(browser, f"{BASE}/finish", {"handle": handle})
    assert pending.status_code == 202 and pending.json() == {"status": "pending"}
    done = await popup_signs_in(demo, popup, handle)
    assert "You are signed in" in done.text and "/static/embed-popup.js" in done.text
    assert "frame-ancestors 'none'" in done.headers["content-security-policy"]
    assert handle not in done.text and handle not in str(done.url)
    first = await frame.post(browser, f"{BASE}/finish", {"handle": handle})
    assert first.status_code == 200
    assert "gw_embed" in frame.jar and "gw_embed_bind" not in frame.jar
    again = await frame.post(browser, f"{BASE}/finish", {"handle": handle})
    assert again.status_code == 400 and again.json()["error"] == "login_state_invalid"
    # The frame's grant opens Bob's lesson: a 303 to Damstra's player.
    hop = await frame.get(browser, lesson(demo))
    assert hop.status_code == 303
    assert hop.headers["location"].startswith(f"{demo.damstra.login_base_url}/player/")
    player = await browser.get(hop.headers["location"])
    assert "lesson player: Site safety induction" in player.text


async def test_only_the_frame_that_started_it_can_collect_it(
    demo: DemoStack, browser: httpx.AsyncClient, popup: httpx.AsyncClient
) -> None:
    frame = Frame(demo.gateway_url)
    handle = await start(frame, browser, demo.portal_url)
    await popup_signs_in(demo, popup, handle)
    # Someone who learnt the handle, in another browser (another binding cookie).
    thief = Frame(demo.gateway_url)
    await start(thief, browser, demo.portal_url)
    stolen = await thief.post(browser, f"{BASE}/finish", {"handle": handle})
    assert stolen.status_code == 403 and stolen.json()["error"] == "embed_wrong_browser"
    assert "gw_embed" not in thief.jar
    # The ticket was spent by the attempt: the real frame starts again (fail closed).
    late = await frame.post(browser, f"{BASE}/finish", {"handle": handle})
    assert late.status_code == 400 and "gw_embed" not in frame.jar


async def test_a_browser_that_drops_the_frame_cookie_is_told_so_at_once(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    frame = Frame(demo.gateway_url)
    handle = await start(frame, browser, demo.portal_url)
    frame.jar.clear()  # Safari without CHIPS: the partitioned cookie was never stored
    refused = await frame.post(browser, f"{BASE}/finish", {"handle": handle})
    assert refused.status_code == 403 and refused.json()["error"] == "embed_cookie_blocked"


@pytest.mark.parametrize(
    "portal",
    ["https://evil.example", "", "null", "http://127.0.0.1:1", "javascript:alert(1)"],
)
async def test_a_portal_origin_not_configured_gets_nothing(
    demo: DemoStack, browser: httpx.AsyncClient, portal: str
) -> None:
    frame = Frame(demo.gateway_url)
    response = await frame.post(browser, f"{BASE}/start", {"portal": portal})
    assert response.status_code == 403 and "handle" not in response.json()
    assert frame.jar == {}


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "", "Origin": "null"},
    ],
)
async def test_another_site_cannot_start_or_drive_the_sign_in(
    demo: DemoStack, browser: httpx.AsyncClient, popup: httpx.AsyncClient,
    headers: dict[str, str],
) -> None:
    frame = Frame(demo.gateway_url)
    refused = await frame.post(browser, f"{BASE}/start", {"portal": demo.portal_url}, headers)
    assert refused.status_code == 400 and frame.jar == {}
    # Login CSRF: an attacker's page posts the attacker's handle into the victim's popup.
    handle = await start(frame, browser, demo.portal_url)
    await sign_in(popup, f"{demo.gateway_url}/login/damstra?idp=demo-oidc", "emp-1002")
    csrf = await popup.post(
        f"{demo.gateway_url}{BASE}/popup", data={"handle": handle},
        headers={k: v for k, v in headers.items() if v},
    )
    assert csrf.status_code == 400
    assert "gw_embed_popup" not in popup.cookies
    still = await frame.post(browser, f"{BASE}/finish", {"handle": handle})
    assert still.status_code == 202  # nobody completed it
    # Only JSON from the frame's script: a cross-site form cannot post it.
    form = await browser.post(
        f"{demo.gateway_url}{BASE}/finish", data={"handle": handle},
        headers={**SAME_ORIGIN, **frame.cookie_header()},
    )
    assert form.status_code == 400
    # The frame's own form (same-origin): a popup that already has a gateway session goes
    # straight to "done", no IdP round trip, and the frame collects the sign-in.
    own = await popup.post(
        f"{demo.gateway_url}{BASE}/popup", data={"handle": handle}, headers=SAME_ORIGIN
    )
    assert own.status_code == 303 and own.headers["location"] == f"{BASE}/done"
    assert (await popup.get(f"{demo.gateway_url}{BASE}/done")).status_code == 200
    collected = await frame.post(browser, f"{BASE}/finish", {"handle": handle})
    assert collected.status_code == 200 and "gw_embed" in frame.jar


async def test_the_grant_shows_only_the_employees_lessons_and_is_no_session(
    demo: DemoStack, browser: httpx.AsyncClient, popup: httpx.AsyncClient
) -> None:
    frame = await signed_in_frame(demo, browser, popup)
    alice = demo.damstra.add_user("Alice", "Anderson", "alice.anderson@example.com")
    hers = demo.damstra.assign_lesson(alice, "Alice's lesson")
    foreign = await frame.get(browser, lesson(demo, hers))
    missing = await frame.get(browser, lesson(demo, 9_999_999))
    assert foreign.status_code == missing.status_code == 404
    assert "Alice" not in foreign.text
    # The grant is not a gateway session: /login/{app} still asks who you are.
    fresh = await browser.get(
        f"{demo.gateway_url}/login/damstra", headers=frame.cookie_header()
    )
    assert fresh.status_code == 200 and "OpenID Connect" in fresh.text
    # Signing out at the gateway (the popup's session) ends the frame's grant too.
    logout_page = await popup.get(f"{demo.gateway_url}/logout")
    csrf = re.search(r'name="csrf" value="([^"]+)"', logout_page.text)
    assert csrf is not None
    await popup.post(
        f"{demo.gateway_url}/logout", data={"csrf": csrf.group(1)}, headers=SAME_ORIGIN
    )
    after = await frame.get(browser, lesson(demo))
    assert after.status_code == 401 and 'id="gw-embed-sign-in"' in after.text
    assert "gw_embed" not in frame.jar  # the dead grant's cookie is dropped


async def test_the_sign_in_page_in_the_frame(demo: DemoStack, browser: httpx.AsyncClient) -> None:
    page = await browser.get(f"{demo.gateway_url}{lesson(demo)}")
    assert page.status_code == 401
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert csp.endswith(f"frame-ancestors {demo.portal_url.lower()}")
    assert page.headers["referrer-policy"] == "same-origin"
    assert "<script>" not in page.text and 'src="/static/embed.js"' in page.text
    # The no-script way in: a new tab that signs in and comes back to this lesson.
    assert f"return_to=%2Fembed%2Fdamstra%2Flesson-schedules%2F{demo.lesson_schedule_id}" in (
        page.text
    )
    script = await browser.get(f"{demo.gateway_url}/static/embed.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


# -- the store side on a fake clock: expiry ------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


BOB = Identity(idp="demo-oidc", subject="emp-1002", email="bob.brown@example.com")


async def test_handles_and_tickets_expire() -> None:
    clock = Clock()
    flow = EmbedSignIns(MemoryStore(clock), login_timeout=600, grant_lifetime=3600)
    started = await flow.start("damstra", "https://intranet.example.com")
    clock.now += 601
    assert not await flow.is_pending(started.handle, "damstra")
    with pytest.raises(LoginStateError):
        await flow.complete(started.handle, "damstra", "sid", BOB)
    with pytest.raises(LoginStateError):
        await flow.redeem(started.handle, started.binding, "damstra")
    # A finished sign-in waits TICKET_SECONDS for its frame, then it is gone.
    again = await flow.start("damstra", "https://intranet.example.com")
    assert await flow.complete(again.handle, "damstra", "sid", BOB)
    assert not await flow.complete(again.handle, "damstra", "sid", BOB)  # popup reloaded
    clock.now += TICKET_SECONDS + 1
    with pytest.raises(LoginStateError):
        await flow.redeem(again.handle, again.binding, "damstra")


async def test_a_ticket_is_only_for_the_app_it_was_started_for() -> None:
    flow = EmbedSignIns(MemoryStore(), login_timeout=600, grant_lifetime=3600)
    started = await flow.start("damstra", "https://intranet.example.com")
    assert not await flow.is_pending(started.handle, "other")
    with pytest.raises(LoginStateError):
        await flow.complete(started.handle, "other", "sid", BOB)
    assert await flow.complete(started.handle, "damstra", "sid", BOB)
    grant_id = await flow.issue_grant(
        await flow.redeem(started.handle, started.binding, "damstra") or {}, ("damstra",)
    )
    grant = await flow.grant(grant_id)
    assert grant is not None and grant.identity == BOB and grant.apps == ("damstra",)
    assert await flow.grant("x" * 43) is None and await flow.grant(None) is None
    # Presented for another app: refused, and burnt (the frame starts again).
    other = await flow.start("damstra", "https://intranet.example.com")
    assert await flow.complete(other.handle, "damstra", "sid", BOB)
    with pytest.raises(LoginStateError):
        await flow.redeem(other.handle, other.binding, "other")
    with pytest.raises(LoginStateError):
        await flow.redeem(other.handle, other.binding, "damstra")


async def test_someone_the_app_refuses_is_told_in_the_popup_and_gets_no_grant(
    demo: DemoStack, browser: httpx.AsyncClient, popup: httpx.AsyncClient
) -> None:
    frame = Frame(demo.gateway_url)
    handle = await start(frame, browser, demo.portal_url)
    chooser = await popup.post(
        f"{demo.gateway_url}{BASE}/popup", data={"handle": handle}, headers=SAME_ORIGIN
    )
    assert chooser.status_code == 200
    # Dana (a contractor) is in none of the groups the demo apps require.
    refused = await sign_in(
        popup, f"{demo.gateway_url}/auth/demo-oidc/login?return_to={BASE}/done", "ctr-2001"
    )
    assert refused.status_code == 403 and str(refused.url).endswith(f"{BASE}/done")
    still = await frame.post(browser, f"{BASE}/finish", {"handle": handle})
    assert still.status_code == 202 and "gw_embed" not in frame.jar
