"""Embedded lesson players: ownership, Damstra's codes, portal credentials, CSP and CORS.

The Damstra simulator runs in-process (httpx.ASGITransport); MockTransport only stands in
for answers it never gives (codes under other HTTP statuses, foreign player hosts).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest

from gateway import embed
from gateway.connectors.damstra import DamstraConnector
from gateway.errors import (
    AccountInactive,
    BadRequest,
    Conflict,
    ConnectorError,
    Forbidden,
    GatewayError,
    Gone,
    NotFound,
    Unauthorized,
)
from gateway.sandbox.damstra import NOT_CURRENT, DamstraSimulator
from gateway.sandbox.demo import PORTAL_TOKEN as DEMO_PORTAL_TOKEN
from gateway.sandbox.demo import DemoStack
from gateway.settings import DamstraSettings, PortalSettings, Secret
from tests.flows.agent import sign_in
from tests.test_damstra import API, BASE, HOST, KEY, make_app, make_connector

PORTAL_TOKEN = "portal-credential-0123456789abcdef"
OTHER_TOKEN = "other-portal-credential-0123456789"
PORTALS = {
    "intranet": PortalSettings(token_sha256=embed.hash_credential(PORTAL_TOKEN), apps=("lms",),
                               origins=("https://intranet.example.com", "https://Hub.Example.com/")),
    "partner": PortalSettings(token_sha256=embed.hash_credential(OTHER_TOKEN), apps=("other",),
                              origins=("https://partner.example.net",)),
}


@pytest.fixture
def sim() -> DamstraSimulator:
    return DamstraSimulator(KEY, BASE)


@pytest.fixture
def people(sim: DamstraSimulator) -> dict[str, int]:
    ada = sim.add_user("Ada", "Lovelace", "ada@example.com")
    bob = sim.add_user("Bob", "Babbage", "bob@example.com")
    return {
        "ada": ada, "bob": bob,
        "ada_due": sim.assign_lesson(ada, "Forklift safety", due_date="2030-01-01T00:00:00Z"),
        "bob_due": sim.assign_lesson(bob, "Bob's secret lesson"),
    }


def connector(sim: DamstraSimulator, **damstra: Any) -> DamstraConnector:
    app = make_app()
    if damstra:
        settings = DamstraSettings(access_key=Secret(KEY), api_url=API, login_host=HOST, **damstra)
        app = make_app(damstra=settings)
    return make_connector(app, httpx.ASGITransport(app=sim.app))


async def player_text(sim: DamstraSimulator, url: str) -> str:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as browser:
        return (await browser.get(url)).text


def same_answer(a: GatewayError, b: GatewayError) -> bool:
    return (type(a), a.status, a.code, a.public, a.reason) == (
        type(b), b.status, b.code, b.public, b.reason)


# -- ownership and Damstra's codes ----------------------------------------------------------


@pytest.mark.parametrize("all_types", [False, True])
async def test_owner_gets_a_working_player_url(
    sim: DamstraSimulator, people: dict[str, int], all_types: bool
) -> None:
    url = await connector(sim, embed_all_lesson_types=all_types).embed_url(
        str(people["ada"]), str(people["ada_due"]))
    assert url.startswith(f"{BASE}/player/{people['ada_due']}")
    assert "lesson player: Forklift safety" in await player_text(sim, url)
    wanted = "embed_player_version" if all_types else "embed_player"
    assert sim.calls.operations() == ["get_lesson_schedule", wanted]


async def test_someone_elses_schedule_is_the_same_404_as_a_missing_one(
    sim: DamstraSimulator, people: dict[str, int]
) -> None:
    damstra = connector(sim)
    with pytest.raises(NotFound) as foreign:
        await damstra.embed_url(str(people["ada"]), str(people["bob_due"]))
    with pytest.raises(NotFound) as missing:
        await damstra.embed_url(str(people["ada"]), "987654")
    with pytest.raises(NotFound) as garbage:
        await damstra.embed_url(str(people["ada"]), "../user/1")
    assert same_answer(foreign.value, missing.value)
    assert same_answer(foreign.value, garbage.value)
    assert foreign.value.status == 404
    # Nothing was minted for anyone.
    assert sim.calls.count("embed_player") == 0 and sim.calls.count("embed_player_version") == 0


async def test_completed_cancelled_and_missing_map_to_409_410_404(
    sim: DamstraSimulator, people: dict[str, int]
) -> None:
    ada = people["ada"]
    done, off = sim.assign_lesson(ada, "Done"), sim.assign_lesson(ada, "Off")
    sim.complete(done)
    sim.cancel(off)
    damstra = connector(sim)
    with pytest.raises(Conflict) as completed:
        await damstra.embed_url(str(ada), str(done))
    with pytest.raises(Gone) as cancelled:
        await damstra.embed_url(str(ada), str(off))
    assert (completed.value.status, cancelled.value.status) == (409, 410)
    assert "already completed" in completed.value.reason
    assert "cancelled" in cancelled.value.reason


def embed_player_answers(status: int, body: dict[str, Any]) -> httpx.MockTransport:
    """Damstra where schedule 5 belongs to user 7 but embed_player answers ``body``."""
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/lesson_schedule/5"):
            return httpx.Response(200, json={"id": 5, "userId": 7, "status": "due"})
        return httpx.Response(status, json=body)
    return httpx.MockTransport(handle)


@pytest.mark.parametrize(("status", "code", "expected"), [
    (404, 840, NotFound), (400, 840, NotFound), (409, 837, Conflict), (200, 837, Conflict),
    (410, 836, Gone), (400, 836, Gone),
])
async def test_codes_are_read_whatever_the_http_status(
    status: int, code: int, expected: type[GatewayError]
) -> None:
    damstra = make_connector(make_app(), embed_player_answers(status, {"internalCode": code}))
    with pytest.raises(expected):
        await damstra.embed_url("7", "5")


@pytest.mark.parametrize(("status", "code"), [(401, 806), (400, 806), (403, 831)])
async def test_806_and_831_are_502_with_an_operator_log_line(
    status: int, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    damstra = make_connector(make_app(), embed_player_answers(status, {"internalCode": code}))
    with caplog.at_level(logging.ERROR, logger="gateway.lms.damstra"), \
            pytest.raises(ConnectorError) as caught:
        await damstra.embed_url("7", "5")
    assert caught.value.status == 502 and str(code) in caught.value.reason
    logged = [r for r in caplog.records if r.name == "gateway.lms.damstra"]
    assert logged and all(KEY not in r.getMessage() + str(getattr(r, "fields", ""))
                          for r in logged)


async def test_a_player_url_on_another_host_is_refused() -> None:
    body = {"embedUrl": "https://evil.example/#player/5?embed=true&token=x"}
    damstra = make_connector(make_app(), embed_player_answers(200, body))
    with pytest.raises(ConnectorError):
        await damstra.embed_url("7", "5")


async def test_documented_fragment_player_url_is_accepted() -> None:
    body = {"embedUrl": f"https://{HOST}/#player/5?embed=true&token=YThh"}
    damstra = make_connector(make_app(), embed_player_answers(200, body))
    assert await damstra.embed_url("7", "5") == body["embedUrl"]


# -- portal API handlers -------------------------------------------------------------------


async def test_portal_lists_only_the_employees_schedules(
    sim: DamstraSimulator, people: dict[str, int]
) -> None:
    damstra = connector(sim)
    done = sim.assign_lesson(people["ada"], "Done")
    sim.complete(done)
    due = await embed.portal_lesson_schedules(damstra, "lms", damstra.find_user_id,
                                              "ada@example.com", "due")
    assert due == {"lessonSchedules": [{
        "id": str(people["ada_due"]), "name": "Forklift safety", "status": "due",
        "startDate": sim.schedules[people["ada_due"]]["startDate"],
        "dueDate": "2030-01-01T00:00:00Z",
        "thumbnailUrl": sim.schedules[people["ada_due"]]["lessonThumbnail"],
    }]}
    every = await embed.portal_lesson_schedules(damstra, "lms", damstra.find_user_id,
                                                "ada@example.com", None)
    assert {s["name"] for s in every["lessonSchedules"]} == {"Forklift safety", "Done"}
    with pytest.raises(BadRequest):
        await embed.portal_lesson_schedules(damstra, "lms", damstra.find_user_id,
                                            "ada@example.com", "everything")
    with pytest.raises(BadRequest):
        await embed.portal_lesson_schedules(damstra, "lms", damstra.find_user_id,
                                            "not an email", "due")


async def test_portal_embed_owner_other_and_unknown_employee(
    sim: DamstraSimulator, people: dict[str, int]
) -> None:
    damstra = connector(sim)
    ok = await embed.portal_embed(damstra, "lms", damstra.find_user_id, "ada@example.com",
                                  str(people["ada_due"]))
    assert "lesson player: Forklift safety" in await player_text(sim, ok["embedUrl"])
    with pytest.raises(NotFound) as foreign:
        await embed.portal_embed(damstra, "lms", damstra.find_user_id, "ada@example.com",
                                 str(people["bob_due"]))
    with pytest.raises(NotFound) as missing:
        await embed.portal_embed(damstra, "lms", damstra.find_user_id, "ada@example.com", "4")
    assert same_answer(foreign.value, missing.value)
    with pytest.raises(NotFound):
        await embed.portal_embed(damstra, "lms", damstra.find_user_id, "nobody@example.com", "4")
    sim.set_status(people["bob"], NOT_CURRENT)
    with pytest.raises(AccountInactive):
        await embed.portal_embed(damstra, "lms", damstra.find_user_id, "bob@example.com",
                                 str(people["bob_due"]))


async def test_session_embed_uses_the_cached_account(
    sim: DamstraSimulator, people: dict[str, int]
) -> None:
    url = await embed.session_embed(connector(sim), "lms", str(people["bob"]),
                                    str(people["bob_due"]))
    assert "lesson player: Bob&#x27;s secret lesson" in await player_text(sim, url)


async def test_an_app_without_embeds_is_404() -> None:
    with pytest.raises(NotFound):
        await embed.session_embed(object(), "skyprep-app", "1", "2")


# -- credentials, CSP, CORS -----------------------------------------------------------------


@pytest.mark.parametrize("header", [
    None, "", "Bearer", f"Basic {PORTAL_TOKEN}", "Bearer wrong-credential-0123456789",
    f"Bearer {PORTAL_TOKEN}x", f"Bearer {PORTAL_TOKEN[:-1]}", "Bearer short",
])
def test_missing_or_bad_credential_is_401(header: str | None) -> None:
    with pytest.raises(Unauthorized) as caught:
        embed.authenticate_portal(header, PORTALS, "lms")
    assert caught.value.status == 401 and PORTAL_TOKEN not in caught.value.reason


def test_credential_not_scoped_to_the_app_is_403_and_scoped_one_passes() -> None:
    with pytest.raises(Forbidden) as caught:
        embed.authenticate_portal(f"Bearer {OTHER_TOKEN}", PORTALS, "lms")
    assert caught.value.status == 403
    with pytest.raises(Forbidden):
        embed.authenticate_portal(f"Bearer {PORTAL_TOKEN}", PORTALS, "no-such-app")
    assert embed.authenticate_portal(f"bearer  {PORTAL_TOKEN} ", PORTALS, "lms") == "intranet"


def test_frame_ancestors_are_exactly_the_apps_portal_origins() -> None:
    assert embed.frame_ancestors(PORTALS, "lms") == (
        "frame-ancestors https://intranet.example.com https://hub.example.com")
    assert embed.frame_ancestors(PORTALS, "other") == "frame-ancestors https://partner.example.net"
    assert embed.frame_ancestors(PORTALS, "unembedded") == "frame-ancestors 'none'"
    hostile = {"x": PortalSettings(token_sha256="0" * 64, apps=("lms",),
                                   origins=("https://ok.example", "https://a.example; script-src *",
                                            "*", "https://b.example 'unsafe-inline'"))}
    assert embed.frame_ancestors(hostile, "lms") == "frame-ancestors https://ok.example"
    headers = embed.embed_headers(PORTALS, "lms")
    assert headers["Content-Security-Policy"].endswith(
        "frame-ancestors https://intranet.example.com https://hub.example.com")
    assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"


def test_cors_only_for_configured_portal_origins() -> None:
    allowed = embed.cors_headers(PORTALS, "https://intranet.example.com", "lms")
    assert allowed == {"Vary": "Origin",
                       "Access-Control-Allow-Origin": "https://intranet.example.com"}
    preflight = embed.cors_headers(PORTALS, "https://hub.example.com", "lms", preflight=True)
    assert preflight["Access-Control-Allow-Headers"] == "Authorization"
    assert "Access-Control-Allow-Credentials" not in preflight
    for origin in ("https://evil.example", "https://intranet.example.com.evil.example",
                   "null", None, "https://partner.example.net"):
        assert embed.cors_headers(PORTALS, origin, "lms") == {"Vary": "Origin"}
    assert "Access-Control-Allow-Origin" in embed.cors_headers(
        PORTALS, "https://partner.example.net")


# -- the routes, end to end through the demo stack (real HTTP on 127.0.0.1) ------------------




async def test_iframe_route_owner_gets_player_and_others_get_404(demo: DemoStack) -> None:
    bob = next(u["id"] for u in demo.damstra.users.values() if u["firstName"] == "Bob")
    mine = next(s for s in demo.damstra.schedules.values() if s["userId"] == bob)["id"]
    alice = demo.damstra.add_user("Alice", "Anderson", "alice.anderson@example.com")
    hers = demo.damstra.assign_lesson(alice, "Alice's lesson")
    portal = demo.portal_url.lower()
    async with httpx.AsyncClient(timeout=20) as browser:
        signed_out = await browser.get(f"{demo.gateway_url}/embed/damstra/lesson-schedules/{mine}")
        assert signed_out.status_code == 401 and 'target="_top"' in signed_out.text
        assert signed_out.headers["content-security-policy"].endswith(
            f"frame-ancestors {portal}")
        await sign_in(browser, f"{demo.gateway_url}/login/damstra?idp=demo-oidc", "emp-1002")
        hop = await browser.get(f"{demo.gateway_url}/embed/damstra/lesson-schedules/{mine}")
        assert hop.status_code == 303
        assert hop.headers["content-security-policy"].endswith(f"frame-ancestors {portal}")
        assert hop.headers["cache-control"] == "no-store"
        player = await browser.get(hop.headers["location"])
        assert "lesson player: Site safety induction" in player.text
        foreign = await browser.get(f"{demo.gateway_url}/embed/damstra/lesson-schedules/{hers}")
        missing = await browser.get(f"{demo.gateway_url}/embed/damstra/lesson-schedules/9999999")
        assert foreign.status_code == missing.status_code == 404
        assert _without_reference(foreign.text) == _without_reference(missing.text)
        assert foreign.headers["content-security-policy"].endswith(f"frame-ancestors {portal}")
        # Every other page stays unframeable.
        other = await browser.get(f"{demo.gateway_url}/")
        assert "frame-ancestors 'none'" in other.headers["content-security-policy"]


def _without_reference(text: str) -> str:
    return re.sub(r"[0-9a-f]{16}", "<ref>", text)


async def test_portal_api_routes_with_credentials_and_cors(demo: DemoStack) -> None:
    api = f"{demo.gateway_url}/api/v1/apps/damstra/lesson-schedules"
    auth = {"Authorization": f"Bearer {DEMO_PORTAL_TOKEN}", "Origin": demo.portal_url}
    async with httpx.AsyncClient(timeout=20) as client:
        listed = await client.get(api, params={"employee": "bob.brown@example.com",
                                               "status": "due"}, headers=auth)
        assert listed.status_code == 200
        assert listed.headers["access-control-allow-origin"] == demo.portal_url.lower()
        names = [s["name"] for s in listed.json()["lessonSchedules"]]
        assert names == ["Site safety induction", "Working at heights"]
        first = listed.json()["lessonSchedules"][0]["id"]
        searches = demo.damstra.calls.count("search_users")
        embedded = await client.get(f"{api}/{first}/embed",
                                    params={"employee": "bob.brown@example.com"}, headers=auth)
        assert embedded.status_code == 200 and embedded.headers["cache-control"] == "no-store"
        # the employee found for the list is remembered: no second LMS search for the embed
        assert demo.damstra.calls.count("search_users") == searches == 1
        player = await client.get(embedded.json()["embedUrl"])
        assert "lesson player: Site safety induction" in player.text

        no_auth = await client.get(api, params={"employee": "bob.brown@example.com"},
                                   headers={"Origin": demo.portal_url})
        assert no_auth.status_code == 401 and no_auth.json()["error"] == "unauthorized"
        assert no_auth.headers["access-control-allow-origin"] == demo.portal_url.lower()
        unscoped = await client.get(f"{demo.gateway_url}/api/v1/apps/skyprep/lesson-schedules",
                                    params={"employee": "bob.brown@example.com"}, headers=auth)
        assert unscoped.status_code == 403
        preflight = await client.options(api, headers={
            "Origin": demo.portal_url, "Access-Control-Request-Method": "GET"})
        assert preflight.headers["access-control-allow-headers"] == "Authorization"
        evil = await client.options(api, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
