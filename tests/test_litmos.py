"""Litmos connector against its simulator, and the simulator's own contract.

(The LMS-independent behaviour is in tests/connector_conformance.py.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gateway.connectors.base import LmsAccount, ProvisionAction
from gateway.connectors.litmos import REGION_URLS, LitmosConnector
from gateway.errors import (
    AccountGone,
    AccountInactive,
    ConnectorError,
    PrivilegedAccount,
    UnsafeTarget,
)
from gateway.identity import Identity
from gateway.provisioning import Provisioner
from gateway.sandbox.litmos import LitmosSimulator
from gateway.settings import AppSettings, LitmosSettings, Secret
from gateway.store.memory import MemoryStore
from tests.connector_conformance import make_http, profile

KEY = "litmos-key-0123456789abcdef"
HOST = "acme.litmos.com"


class Env:
    def __init__(self, teams: tuple[str, ...] = (), region: str = "us", **app_options: Any):
        self.sim = LitmosSimulator(KEY, login_base_url=f"https://{HOST}")
        self.requests: list[httpx.Request] = []
        self.before_send: list[Any] = []

        async def record(request: httpx.Request) -> None:
            self.requests.append(request)
            for hook in self.before_send:
                hook(request)

        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.sim.app),
                                        event_hooks={"request": [record]})
        self.app = AppSettings(connector="litmos", idps=("corp",), **app_options,
                               litmos=LitmosSettings(api_key=Secret(KEY), login_host=HOST,
                                                     teams=teams, region=region))  # type: ignore[arg-type]
        self.connector = LitmosConnector("lit", self.app, make_http("lit", self.client))
        self.browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.sim.app))

    def ops(self) -> list[str]:
        return self.sim.calls.operations()

    async def close(self) -> None:
        await self.connector.aclose()
        await self.browser.aclose()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    yield e
    await e.close()


async def test_new_employee_is_created_with_one_create_and_no_fetch(env: Env) -> None:
    result = await env.connector.sign_in(profile(1), None, None)
    assert env.ops() == ["GET /users/{id}", "POST /users"]
    assert result.action is ProvisionAction.CREATED
    user = env.sim.by_username("employee1@example.com")
    assert user is not None and result.account.user_id == user.Id
    assert (user.SkipFirstLogin, user.DisableMessages, user.IsCustomUsername) == (
        True, True, False)
    assert user.AccessLevel == "Learner" and user.Email == "employee1@example.com"
    page = await env.browser.get(result.url)
    assert "Signed in to Litmos as Ada Lovelace1 (employee1@example.com)" in page.text
    for request in env.requests:
        assert KEY not in str(request.url)
        assert request.headers["apikey"] == KEY
        assert parse_qs(request.url.query.decode()) == {"source": ["gateway"],
                                                         "format": ["json"]}
        assert request.url.host == "api.litmos.com"


async def test_custom_username_and_role() -> None:
    e = Env(username="employee_number")
    try:
        await e.connector.sign_in(profile(2, username="E-2002", role="Team_Leader"), None, None)
        user = e.sim.by_username("E-2002")
        assert user is not None
        assert user.IsCustomUsername is True and user.AccessLevel == "Team_Leader"
        assert user.Email == "employee2@example.com"
    finally:
        await e.close()


async def test_returning_employee_gets_a_fresh_key_each_time(env: Env) -> None:
    first = await env.connector.sign_in(profile(3), None, None)
    assert (await env.browser.get(first.url)).status_code == 200
    # The used key no longer works at Litmos...
    used = await env.browser.get(first.url)
    assert used.status_code == 401
    before = len(env.sim.calls)
    second = await env.connector.sign_in(profile(3), first.account, None)
    assert env.ops()[before:] == ["GET /users/{id}"]
    assert second.url != first.url
    assert (await env.browser.get(second.url)).status_code == 200


async def test_create_race_409_fetches_the_existing_user(env: Env) -> None:
    def someone_else_creates_it(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/users"):
            env.sim.add_user("employee4@example.com", "Ada", "Lovelace4")

    env.before_send.append(someone_else_creates_it)
    result = await env.connector.sign_in(profile(4), None, None)
    assert env.ops() == ["GET /users/{id}", "POST /users", "GET /users/{id}"]
    assert len(env.sim.users) == 1
    assert result.action is ProvisionAction.NONE
    assert (await env.browser.get(result.url)).status_code == 200


async def test_team_mapping() -> None:
    e = Env(teams=("allstaff",))
    try:
        allstaff = e.sim.add_team("All staff", "allstaff")
        sales = e.sim.add_team("Sales", "sales01")
        e.sim.add_team("Other", "other01")
        result = await e.connector.sign_in(profile(5, groups=("sales01",)), None, None)
        assert allstaff.members == {result.account.user_id} == sales.members
        assert e.sim.teams["other01"].members == set()
        # Teams are only touched when the profile changed, not on every sign-in.
        before = len(e.sim.calls)
        await e.connector.sign_in(profile(5, groups=("sales01",)), result.account, None)
        assert len(e.sim.calls) - before == 1
    finally:
        await e.close()


async def test_course_deep_link(env: Env) -> None:
    course = env.sim.add_course("Forklift <Safety>")
    result = await env.connector.sign_in(profile(6), None, f"course:{course.OriginalId}")
    assert parse_qs(urlsplit(result.url).query)["c"] == [str(course.OriginalId)]
    page = await env.browser.get(result.url)
    assert "in course Forklift &lt;Safety&gt;" in page.text


@pytest.mark.parametrize("target", [
    "course:abc", "course:", "course:1&c=2", "course:1/2", "lesson:1", "Course:1",
    "course:1 ", "course:\u0661\u0662", "https://acme.litmos.com/x",
])
async def test_other_targets_are_refused(env: Env, target: str) -> None:
    with pytest.raises(UnsafeTarget):
        await env.connector.sign_in(profile(7), None, target)
    assert env.ops() == []


async def test_inactive_user_is_reactivated(env: Env) -> None:
    env.sim.add_user("employee8@example.com", "Ada", "Lovelace8", active=False)
    result = await env.connector.sign_in(profile(8), None, None)
    assert result.action is ProvisionAction.REACTIVATED
    assert env.ops() == ["GET /users/{id}", "PUT /users/{id}"]
    assert (await env.browser.get(result.url)).status_code == 200


async def test_inactive_user_is_refused_when_the_app_says_so() -> None:
    e = Env(reactivate=False)
    try:
        user = e.sim.add_user("employee9@example.com", "Ada", "Lovelace9", active=False)
        with pytest.raises(AccountInactive):
            await e.connector.sign_in(profile(9), None, None)
        with pytest.raises(AccountInactive):
            await e.connector.sign_in(profile(9), LmsAccount(user.Id, "x"), None)
        assert user.Active is False
        assert "PUT /users/{id}" not in e.ops()
    finally:
        await e.close()


async def test_html_escaped_answers_are_unescaped() -> None:
    e = Env(update_on_login=True)
    try:
        e.sim.add_user("o'brien@example.com", "Seán", "O'Brien", "o'brien@example.com")
        employee = profile(10, email="o'brien@example.com", username="o'brien@example.com",
                           first_name="Seán", last_name="O'Brien")
        result = await e.connector.sign_in(employee, None, None)
        # Found by username despite the escaping, and nothing looked changed: no PUT.
        assert e.ops() == ["GET /users/{id}"]
        assert result.action is ProvisionAction.NONE
        raw = (await e.client.get(f"https://api.litmos.com/v1.svc/users/{result.account.user_id}",
                                  params={"source": "t", "format": "json"},
                                  headers={"apikey": KEY})).json()
        assert raw["LastName"] == "O&#39;Brien"
    finally:
        await e.close()


async def test_username_equal_to_another_users_id_is_not_confused(env: Env) -> None:
    victim = env.sim.add_user("boss@example.com", "Big", "Boss")
    employee = profile(11, username=victim.Id)
    result = await env.connector.sign_in(employee, None, None)
    assert result.account.user_id != victim.Id
    created = env.sim.users[result.account.user_id]
    assert created.UserName == victim.Id and created.IsCustomUsername


async def test_deleted_or_renamed_cached_user_is_gone(env: Env) -> None:
    first = await env.connector.sign_in(profile(12), None, None)
    env.sim.users[first.account.user_id].UserName = "someone.else@example.com"
    with pytest.raises(AccountGone):
        await env.connector.sign_in(profile(12), first.account, None)
    with pytest.raises(AccountGone):
        await env.connector.sign_in(profile(12), LmsAccount("../../teams", "x"), None)


@pytest.mark.parametrize("key", [
    "https://acme.litmos.com.evil.example/login.aspx?loginkey=1",
    "http://acme.litmos.com/login.aspx?loginkey=1",
    "https://acme.litmos.com/login.aspx?loginkey=" + "a" * 600,
    "",
])
async def test_hostile_login_keys_are_refused(env: Env, key: str) -> None:
    user = env.sim.add_user("employee13@example.com")
    user.LoginKey = key
    with pytest.raises(ConnectorError):
        await env.connector.sign_in(profile(13), None, None)


@pytest.mark.parametrize(("region", "host"), [("eu", "api.litmoseu.com"),
                                              ("au", "api.litmos.com.au")])
async def test_region_hosts(region: str, host: str) -> None:
    e = Env(region=region)
    try:
        await e.connector.test_connection()
        assert e.requests[0].url.host == host
        assert REGION_URLS[region] == f"https://{host}/v1.svc"
    finally:
        await e.close()


# -- simulator contract ------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[tuple[LitmosSimulator, httpx.AsyncClient]]:
    sim = LitmosSimulator(KEY, login_base_url=f"https://{HOST}")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app),
                                 base_url="https://api.litmos.com/v1.svc",
                                 params={"source": "tests", "format": "json"},
                                 headers={"apikey": KEY}) as client:
        yield sim, client


async def test_sim_requires_apikey_and_source(api: Any) -> None:
    sim, client = api
    assert (await client.get("/users")).status_code == 200
    assert (await client.get("/users", headers={"apikey": "nope"})).status_code == 403
    bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app))
    async with bare:
        no_source = await bare.get("https://api.litmos.com/v1.svc/users",
                                   headers={"apikey": KEY})
        assert no_source.status_code == 403
        xml = await bare.get("https://api.litmos.com/v1.svc/users?source=t",
                             headers={"apikey": KEY})
        assert xml.headers["content-type"].startswith("text/xml")


async def test_sim_user_lifecycle(api: Any) -> None:
    sim, client = api
    created = await client.post("/users", json={
        "UserName": "a@example.com", "FirstName": "A", "LastName": "B", "Email": "a@example.com",
        "SkipFirstLogin": True})
    assert created.status_code == 201
    body = created.json()
    assert {"Id", "OriginalId", "LoginKey"} <= body.keys()
    assert body["LoginKey"].startswith(f"https://{HOST}/login.aspx?loginkey=")
    assert (await client.post("/users", json={"UserName": "A@example.com"})).status_code == 409
    assert (await client.post("/users", json={"UserName": "not-an-email"})).status_code == 400
    assert (await client.get("/users/a@example.com")).json()["Id"] == body["Id"]
    assert (await client.get(f"/users/{body['Id']}")).json()["UserName"] == "a@example.com"
    put = await client.put(f"/users/{body['Id']}", json={"Id": body["Id"], "Active": False})
    assert put.status_code == 200 and put.json()["Active"] is False
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as browser:
        assert (await browser.get(body["LoginKey"])).status_code == 403  # deactivated
    assert (await client.get("/users/nobody")).status_code == 404
    assert (await client.post("/teams/none/users", json=[{"Id": body["Id"]}])).status_code == 404


async def test_sim_search_and_paging(api: Any) -> None:
    sim, client = api
    for i in range(5):
        sim.add_user(f"user{i}@example.com", f"First{i}", "Same")
    sim.add_user("other@example.com", "Zed", "Else")
    found = (await client.get("/users", params={"search": "same", "sort": "FirstName",
                                                "dir": "DESC", "start": 1, "limit": 2})).json()
    assert [u["FirstName"] for u in found] == ["First3", "First2"]
    assert "LoginKey" not in found[0]
    assert (await client.get("/users", params={"limit": 0})).status_code == 400
    assert len((await client.get("/users")).json()) == 6


async def test_sim_rate_limit_is_per_key_and_503(api: Any) -> None:
    sim, client = api
    sim.limiter.limit = 100
    statuses = [(await client.get("/courses")).status_code for _ in range(101)]
    assert statuses[:100] == [200] * 100 and statuses[100] == 503
    other = await client.get("/courses", headers={"apikey": "another-key"})
    assert other.status_code == 403  # not rate limited: a different key


async def test_sim_answers_are_escaped_and_parse(api: Any) -> None:
    sim, client = api
    sim.add_user("x@example.com", "<b>", "O'Brien")
    raw = (await client.get("/users/x@example.com")).text
    assert json.loads(raw)["FirstName"] == "&lt;b&gt;"
    assert "O&#39;Brien" in raw


# -- deactivation, privileged accounts, ids (issues 10 and 12) -------------------------------

ADA = Identity(idp="corp", subject="sub-ada")


@pytest.mark.parametrize("reactivate", [True, False])
async def test_deactivated_after_caching_is_noticed_on_the_next_sign_in(reactivate: bool) -> None:
    """Litmos hands out the LoginKey from a read of the user, so every returning sign-in
    already sees ``Active``; revalidation costs nothing extra here."""
    e = Env(reactivate=reactivate, revalidate_seconds=3600)
    now = [1_800_000_000.0]
    prov = Provisioner("lit", e.app, e.connector, MemoryStore(clock=lambda: now[0]),
                       clock=lambda: now[0])
    try:
        first = await prov.sign_in(ADA, profile(30), None)
        now[0] += 60
        before = len(e.ops())
        await prov.sign_in(ADA, profile(30), None)
        assert e.ops()[before:] == ["GET /users/{id}"]
        e.sim.set_active(first.account.user_id, False)  # an admin deactivates the user
        now[0] += 60
        before = len(e.ops())
        if reactivate:
            again = await prov.sign_in(ADA, profile(30), None)
            assert again.action is ProvisionAction.REACTIVATED
            assert e.ops()[before:] == ["GET /users/{id}", "PUT /users/{id}"]
            assert (await e.browser.get(again.url)).status_code == 200
        else:
            with pytest.raises(AccountInactive):
                await prov.sign_in(ADA, profile(30), None)
            assert e.ops()[before:] == ["GET /users/{id}"]
            assert e.sim.users[first.account.user_id].Active is False
        now[0] += 3600  # the check after the window is the same single read
        before = len(e.ops())
        if reactivate:
            await prov.sign_in(ADA, profile(30), None)
            assert e.ops()[before:] == ["GET /users/{id}"]
    finally:
        await e.close()


@pytest.mark.parametrize(("level", "mapped", "refused"), [
    ("Learner", None, False),
    ("Administrator", None, True),
    ("Account_Owner", None, True),
    ("Account Owner", None, True),
    ("Team_Leader", None, True),
    ("TeamLeader", None, True),
    ("Team_Leader", "Team_Leader", False),  # what the app maps: an account we may have made
    ("TeamLeader", "Team_Leader", False),
    ("Administrator", "Team_Leader", True),
    ("", None, True),
    ("Something_New", None, True),
])
async def test_which_access_levels_are_privileged(
    level: str, mapped: str | None, refused: bool
) -> None:
    e = Env(update_on_login=True, teams=("allstaff",))
    try:
        e.sim.add_team("All staff", "allstaff")
        user = e.sim.add_user("employee31@example.com", "Ada", "Byron", access_level=level)
        employee = profile(31, role=mapped)
        if refused:
            with pytest.raises(PrivilegedAccount) as caught:
                await e.connector.sign_in(employee, None, None)
            assert caught.value.status == 403
            assert e.ops() == ["GET /users/{id}"]  # no PUT, no team change, no link handed out
            assert (user.LastName, user.AccessLevel) == ("Byron", level)
            assert e.sim.teams["allstaff"].members == set()
        else:
            result = await e.connector.sign_in(employee, None, None)
            assert result.account.user_id == user.Id
    finally:
        await e.close()


async def test_an_admin_created_in_a_create_race_is_not_adopted(env: Env) -> None:
    def an_admin_appears(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/users"):
            env.sim.add_user("employee32@example.com", "Ada", "Admin",
                             access_level="Administrator")

    env.before_send.append(an_admin_appears)
    with pytest.raises(PrivilegedAccount):
        await env.connector.sign_in(profile(32), None, None)
    assert "PUT /users/{id}" not in env.ops()


@pytest.mark.parametrize("hostile_id", [
    "\uff55\uff53\uff45\uff52\uff11", "\u0661\u0662\u0663", "a b", "a/../b", "x" * 65, "", 42])
async def test_user_ids_from_litmos_outside_the_safe_charset_are_refused(
    hostile_id: object,
) -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json={
            "Id": hostile_id, "UserName": "employee33@example.com", "AccessLevel": "Learner",
            "Active": False, "LoginKey": f"https://{HOST}/login.aspx?loginkey=k"})

    app = AppSettings(connector="litmos", idps=("corp",),
                      litmos=LitmosSettings(api_key=Secret(KEY), login_host=HOST))
    connector = LitmosConnector("lit", app, make_http("lit", httpx.AsyncClient(
        transport=httpx.MockTransport(handle))))
    with pytest.raises(ConnectorError):
        await connector.sign_in(profile(33), None, None)
    assert len(seen) == 1  # never used in a PUT path
