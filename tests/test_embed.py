"""Embedded lesson players: ownership, Damstra's codes, portal credentials, CSP, CORS (off
unless a portal opts in), repeated parameters, and the portal's e-mail -> user id cache.

The Damstra simulator runs in-process (httpx.ASGITransport); MockTransport only stands in
for answers it never gives (codes under other HTTP statuses, foreign player hosts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway import embed
from gateway.app import create_app
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
from gateway.sandbox.damstra import ACTIVE, NOT_CURRENT, DamstraSimulator
from gateway.sandbox.demo import PORTAL_TOKEN as DEMO_PORTAL_TOKEN
from gateway.sandbox.demo import DemoStack
from gateway.settings import DamstraSettings, PortalSettings, Secret
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from tests.flows.agent import sign_in
from tests.test_damstra import API, BASE, HOST, KEY, make_app, make_connector

PORTAL_TOKEN = "portal-credential-0123456789abcdef"
OTHER_TOKEN = "other-portal-credential-0123456789"
PORTALS = {
    "intranet": PortalSettings(
        token_sha256=embed.hash_credential(PORTAL_TOKEN),
        apps=("lms",),
        origins=("https://intranet.example.com", "https://Hub.Example.com/"),
    ),
    "partner": PortalSettings(
        token_sha256=embed.hash_credential(OTHER_TOKEN),
        apps=("other",),
        origins=("https://partner.example.net",),
    ),
}


@pytest.fixture
def sim() -> DamstraSimulator:
    return DamstraSimulator(KEY, BASE)


@pytest.fixture
def people(sim: DamstraSimulator) -> dict[str, int]:
    ada = sim.add_user("Ada", "Lovelace", "ada@example.com")
    bob = sim.add_user("Bob", "Babbage", "bob@example.com")
    return {
        "ada": ada,
        "bob": bob,
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
        type(b),
        b.status,
        b.code,
        b.public,
        b.reason,
    )


# -- ownership and Damstra's codes ----------------------------------------------------------


@pytest.mark.parametrize("all_types", [False, True])
async def test_owner_gets_a_working_player_url(
    sim: DamstraSimulator, people: dict[str, int], all_types: bool
) -> None:
    url = await connector(sim, embed_all_lesson_types=all_types).embed_url(
        str(people["ada"]), str(people["ada_due"])
    )
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


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, 840, NotFound),
        (400, 840, NotFound),
        (409, 837, Conflict),
        (200, 837, Conflict),
        (410, 836, Gone),
        (400, 836, Gone),
    ],
)
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
    with (
        caplog.at_level(logging.ERROR, logger="gateway.lms.damstra"),
        pytest.raises(ConnectorError) as caught,
    ):
        await damstra.embed_url("7", "5")
    assert caught.value.status == 502 and str(code) in caught.value.reason
    logged = [r for r in caplog.records if r.name == "gateway.lms.damstra"]
    assert logged and all(KEY not in r.getMessage() + str(getattr(r, "fields", "")) for r in logged)


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
    due = await embed.portal_lesson_schedules(
        damstra, "lms", damstra.find_user_id, "ada@example.com", "due"
    )
    assert due == {
        "lessonSchedules": [
            {
                "id": str(people["ada_due"]),
                "name": "Forklift safety",
                "status": "due",
                "startDate": sim.schedules[people["ada_due"]]["startDate"],
                "dueDate": "2030-01-01T00:00:00Z",
                "thumbnailUrl": sim.schedules[people["ada_due"]]["lessonThumbnail"],
            }
        ]
    }
    every = await embed.portal_lesson_schedules(
        damstra, "lms", damstra.find_user_id, "ada@example.com", None
    )
    assert {s["name"] for s in every["lessonSchedules"]} == {"Forklift safety", "Done"}
    with pytest.raises(BadRequest):
        await embed.portal_lesson_schedules(
            damstra, "lms", damstra.find_user_id, "ada@example.com", "everything"
        )
    with pytest.raises(BadRequest):
        await embed.portal_lesson_schedules(
            damstra, "lms", damstra.find_user_id, "not an email", "due"
        )


async def test_portal_embed_owner_other_and_unknown_employee(
    sim: DamstraSimulator, people: dict[str, int]
) -> None:
    damstra = connector(sim)
    ok = await embed.portal_embed(
        damstra, "lms", damstra.find_user_id, "ada@example.com", str(people["ada_due"])
    )
    assert "lesson player: Forklift safety" in await player_text(sim, ok["embedUrl"])
    with pytest.raises(NotFound) as foreign:
        await embed.portal_embed(
            damstra, "lms", damstra.find_user_id, "ada@example.com", str(people["bob_due"])
        )
    with pytest.raises(NotFound) as missing:
        await embed.portal_embed(damstra, "lms", damstra.find_user_id, "ada@example.com", "4")
    assert same_answer(foreign.value, missing.value)
    with pytest.raises(NotFound):
        await embed.portal_embed(damstra, "lms", damstra.find_user_id, "nobody@example.com", "4")
    sim.set_status(people["bob"], NOT_CURRENT)
    with pytest.raises(AccountInactive):
        await embed.portal_embed(
            damstra, "lms", damstra.find_user_id, "bob@example.com", str(people["bob_due"])
        )


async def test_session_embed_uses_the_cached_account(
    sim: DamstraSimulator, people: dict[str, int]
) -> None:
    url = await embed.session_embed(
        connector(sim), "lms", str(people["bob"]), str(people["bob_due"])
    )
    assert "lesson player: Bob&#x27;s secret lesson" in await player_text(sim, url)


async def test_an_app_without_embeds_is_404() -> None:
    with pytest.raises(NotFound):
        await embed.session_embed(object(), "skyprep-app", "1", "2")


# -- credentials, CSP, CORS -----------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        f"Basic {PORTAL_TOKEN}",
        "Bearer wrong-credential-0123456789",
        f"Bearer {PORTAL_TOKEN}x",
        f"Bearer {PORTAL_TOKEN[:-1]}",
        "Bearer short",
    ],
)
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
        "frame-ancestors https://intranet.example.com https://hub.example.com"
    )
    assert embed.frame_ancestors(PORTALS, "other") == "frame-ancestors https://partner.example.net"
    assert embed.frame_ancestors(PORTALS, "unembedded") == "frame-ancestors 'none'"
    hostile = {
        "x": PortalSettings(
            token_sha256="0" * 64,
            apps=("lms",),
            origins=(
                "https://ok.example",
                "https://a.example; script-src *",
                "*",
                "https://b.example 'unsafe-inline'",
            ),
        )
    }
    assert embed.frame_ancestors(hostile, "lms") == "frame-ancestors https://ok.example"
    headers = embed.embed_headers(PORTALS, "lms")
    assert headers["Content-Security-Policy"].endswith(
        "frame-ancestors https://intranet.example.com https://hub.example.com"
    )
    assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"


def test_no_cors_for_anyone_unless_the_portal_opts_in() -> None:
    # Default: server to server. Even the portal's own configured origin gets nothing.
    for origin in (
        "https://intranet.example.com",
        "https://hub.example.com",
        "https://partner.example.net",
        "https://evil.example",
        None,
    ):
        assert embed.cors_headers(PORTALS, origin, "lms") == {"Vary": "Origin"}
        assert embed.cors_headers(PORTALS, origin, "lms", preflight=True) == {"Vary": "Origin"}
        assert embed.cors_headers(PORTALS, origin) == {"Vary": "Origin"}


def test_cors_with_browser_cors_only_for_configured_portal_origins() -> None:
    portals = {**PORTALS, "intranet": dataclasses.replace(PORTALS["intranet"], browser_cors=True)}
    allowed = embed.cors_headers(portals, "https://intranet.example.com", "lms")
    assert allowed == {
        "Vary": "Origin",
        "Access-Control-Allow-Origin": "https://intranet.example.com",
    }
    preflight = embed.cors_headers(portals, "https://hub.example.com", "lms", preflight=True)
    assert preflight["Access-Control-Allow-Headers"] == "Authorization"
    assert "Access-Control-Allow-Credentials" not in preflight
    for origin in (
        "https://evil.example",
        "https://intranet.example.com.evil.example",
        "null",
        None,
        "https://partner.example.net",
    ):
        assert embed.cors_headers(portals, origin, "lms") == {"Vary": "Origin"}
    # partner did not opt in: its origin gets nothing, whatever the app.
    assert "Access-Control-Allow-Origin" not in embed.cors_headers(
        portals, "https://partner.example.net"
    )
    # Once the credential is known, only the calling portal's own origins.
    assert "Access-Control-Allow-Origin" not in embed.cors_headers(
        portals, "https://intranet.example.com", "lms", portal="partner"
    )


# -- the routes, end to end through the demo stack (real HTTP on 127.0.0.1) ------------------


async def test_iframe_route_owner_gets_player_and_others_get_404(demo: DemoStack) -> None:
    bob = next(u["id"] for u in demo.damstra.users.values() if u["firstName"] == "Bob")
    mine = next(s for s in demo.damstra.schedules.values() if s["userId"] == bob)["id"]
    alice = demo.damstra.add_user("Alice", "Anderson", "alice.anderson@example.com")
    hers = demo.damstra.assign_lesson(alice, "Alice's lesson")
    portal = demo.portal_url.lower()
    async with httpx.AsyncClient(timeout=20) as browser:
        signed_out = await browser.get(f"{demo.gateway_url}/embed/damstra/lesson-schedules/{mine}")
        # A sign-in page for the frame (its script signs in through a popup), never a link
        # that takes the portal page away (target=_top).
        assert signed_out.status_code == 401 and 'id="gw-embed-sign-in"' in signed_out.text
        assert 'target="_top"' not in signed_out.text
        assert signed_out.headers["content-security-policy"].endswith(f"frame-ancestors {portal}")
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


async def test_portal_api_routes_with_credentials_and_no_cors_by_default(demo: DemoStack) -> None:
    api = f"{demo.gateway_url}/api/v1/apps/damstra/lesson-schedules"
    auth = {"Authorization": f"Bearer {DEMO_PORTAL_TOKEN}", "Origin": demo.portal_url}
    async with httpx.AsyncClient(timeout=20) as client:
        listed = await client.get(
            api, params={"employee": "bob.brown@example.com", "status": "due"}, headers=auth
        )
        assert listed.status_code == 200
        # The demo portal's origin frames /embed pages, but it did not opt in to
        # browser_cors: a browser page may not read the API's answers.
        assert not _cors_in(listed)
        names = [s["name"] for s in listed.json()["lessonSchedules"]]
        assert names == ["Site safety induction", "Working at heights"]
        first = listed.json()["lessonSchedules"][0]["id"]
        searches = demo.damstra.calls.count("search_users")
        embedded = await client.get(
            f"{api}/{first}/embed", params={"employee": "bob.brown@example.com"}, headers=auth
        )
        assert embedded.status_code == 200 and embedded.headers["cache-control"] == "no-store"
        assert not _cors_in(embedded)
        # the employee found for the list is remembered: no second LMS search for the embed
        assert demo.damstra.calls.count("search_users") == searches == 1
        player = await client.get(embedded.json()["embedUrl"])
        assert "lesson player: Site safety induction" in player.text

        no_auth = await client.get(
            api, params={"employee": "bob.brown@example.com"}, headers={"Origin": demo.portal_url}
        )
        assert no_auth.status_code == 401 and no_auth.json()["error"] == "unauthorized"
        assert not _cors_in(no_auth)
        unscoped = await client.get(
            f"{demo.gateway_url}/api/v1/apps/skyprep/lesson-schedules",
            params={"employee": "bob.brown@example.com"},
            headers=auth,
        )
        assert unscoped.status_code == 403
        # No preflight succeeds: a browser never gets to send the Authorization header.
        for origin in (demo.portal_url, "https://evil.example"):
            preflight = await client.options(
                api,
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "authorization",
                },
            )
            assert preflight.status_code == 403, preflight.text
            assert not _cors_in(preflight)


def _cors_in(response: httpx.Response) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("access-control-")]


@contextlib.asynccontextmanager
async def gateway_over(
    demo: DemoStack, *, browser_cors: bool = False, store: Store | None = None, **app: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A second gateway (in-process ASGI) over the demo's simulators, with the demo portal's
    ``browser_cors`` and the damstra app's settings changed, and its own store."""
    settings = demo.settings
    portals = {
        n: dataclasses.replace(p, browser_cors=browser_cors) for n, p in settings.portal.items()
    }
    apps = {**settings.app, "damstra": dataclasses.replace(settings.app["damstra"], **app)}
    gateway = create_app(dataclasses.replace(settings, portal=portals, app=apps), store=store)
    services = gateway.state.services
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url=demo.gateway_url, timeout=20
        ) as client:
            yield client
    finally:
        for http_client in services.clients:
            await http_client.aclose()


async def test_browser_cors_opt_in_allows_configured_origins_only(demo: DemoStack) -> None:
    api = "/api/v1/apps/damstra/lesson-schedules"
    employee = {"employee": "bob.brown@example.com"}
    bearer = {"Authorization": f"Bearer {DEMO_PORTAL_TOKEN}"}
    async with gateway_over(demo, browser_cors=True) as gateway:
        ok = await gateway.get(api, params=employee, headers={**bearer, "Origin": demo.portal_url})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == demo.portal_url.lower()
        assert "access-control-allow-credentials" not in ok.headers
        evil = await gateway.get(
            api, params=employee, headers={**bearer, "Origin": "https://evil.example"}
        )
        assert evil.status_code == 200 and not _cors_in(evil)  # a server may call; no browser
        preflight = await gateway.options(
            api, headers={"Origin": demo.portal_url, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == demo.portal_url.lower()
        assert preflight.headers["access-control-allow-headers"] == "Authorization"
        refused = await gateway.options(
            api, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert refused.status_code == 403 and not _cors_in(refused)


@pytest.mark.parametrize(
    "query",
    [
        "employee=bob.brown@example.com&employee=ada@example.com",
        "employee=ada@example.com&employee=bob.brown@example.com",
        "employee=bob.brown@example.com&status=due&status=all",
    ],
)
async def test_repeated_api_parameters_are_400_with_no_lms_call(
    demo: DemoStack, query: str
) -> None:
    bob = next(u["id"] for u in demo.damstra.users.values() if u["firstName"] == "Bob")
    mine = next(s for s in demo.damstra.schedules.values() if s["userId"] == bob)["id"]
    auth = {"Authorization": f"Bearer {DEMO_PORTAL_TOKEN}"}
    base = f"{demo.gateway_url}/api/v1/apps/damstra/lesson-schedules"
    before = demo.damstra.calls.count()
    async with httpx.AsyncClient(timeout=20) as client:
        urls = [f"{base}?{query}"]
        if "status" not in query:
            urls.append(f"{base}/{mine}/embed?{query}")
        for url in urls:
            answer = await client.get(url, headers=auth)
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"] == "bad_request"
            assert "only once" in answer.json()["message"]
            assert "embedUrl" not in answer.text
    assert demo.damstra.calls.count() == before


@pytest.mark.parametrize(
    "path",
    [
        "/login/damstra?target=course:1&target=course:2",
        "/login/damstra?idp=demo-oidc&idp=demo-saml",
        "/login/damstra?idp=demo-saml&idp=demo-oidc",
        "/auth/demo-oidc/login?return_to=/embed/damstra/lesson-schedules/1&return_to=/x",
        "/auth/demo-oidc/login?target=course:1&target=course:2",
        "/auth/demo-oidc/login?app=damstra&app=skyprep",
    ],
)
async def test_repeated_sign_in_parameters_are_400_and_start_nothing(
    demo: DemoStack, path: str
) -> None:
    async with httpx.AsyncClient(timeout=20) as browser:
        answer = await browser.get(f"{demo.gateway_url}{path}")
        assert answer.status_code == 400, answer.text[:300]
        assert "This link is not valid" in answer.text
        assert "location" not in answer.headers
        assert "gw_login" not in answer.headers.get("set-cookie", "")
        # The same sign-in with the parameter once is fine (a redirect to the IdP or a page).
        single = path.split("&", 1)[0]
        assert (await browser.get(f"{demo.gateway_url}{single}")).status_code in (200, 303)


async def test_portal_user_cache_is_rechecked_after_revalidate_seconds(demo: DemoStack) -> None:
    now = [1_000.0]
    store = MemoryStore(clock=lambda: now[0])
    bob = next(u["id"] for u in demo.damstra.users.values() if u["firstName"] == "Bob")
    mine = next(s for s in demo.damstra.schedules.values() if s["userId"] == bob)["id"]
    api = "/api/v1/apps/damstra/lesson-schedules"
    query = {"employee": "bob.brown@example.com"}
    auth = {"Authorization": f"Bearer {DEMO_PORTAL_TOKEN}"}
    calls = demo.damstra.calls

    async with gateway_over(demo, store=store, revalidate_seconds=60) as gateway:

        async def searches_for(path: str) -> tuple[int, int]:
            before = calls.count("search_users")
            answer = await gateway.get(path, params=query, headers=auth)
            return answer.status_code, calls.count("search_users") - before

        assert await searches_for(api) == (200, 1)
        now[0] += 59  # used again and again inside the window: one search in all ...
        assert await searches_for(api) == (200, 0)
        assert await searches_for(f"{api}/{mine}/embed") == (200, 0)
        now[0] += 2  # ... and the window is not extended by use: 61 s after the search
        assert await searches_for(api) == (200, 1)

        # The LMS deactivates Bob: at the next re-check he is no longer served.
        demo.damstra.set_status(bob, NOT_CURRENT)
        now[0] += 61
        embeds = calls.count("embed_player")
        assert await searches_for(f"{api}/{mine}/embed") == (403, 1)
        assert await searches_for(api) == (403, 1)  # a refusal is not cached
        assert calls.count("embed_player") == embeds

        # Reactivated then deleted: the cached id is dropped as soon as the LMS says so.
        demo.damstra.set_status(bob, ACTIVE)
        assert await searches_for(api) == (200, 1)
        demo.damstra.delete_user(bob)
        assert await searches_for(api) == (404, 0)  # the LMS said "no such user"
        assert await searches_for(api) == (404, 1)  # not served from the cache again


async def test_revalidate_seconds_zero_searches_every_time(demo: DemoStack) -> None:
    query = {"employee": "bob.brown@example.com"}
    auth = {"Authorization": f"Bearer {DEMO_PORTAL_TOKEN}"}
    async with gateway_over(demo, store=MemoryStore(), revalidate_seconds=0) as gateway:
        for _ in range(2):
            answer = await gateway.get(
                "/api/v1/apps/damstra/lesson-schedules", params=query, headers=auth
            )
            assert answer.status_code == 200
    assert demo.damstra.calls.count("search_users") == 2
