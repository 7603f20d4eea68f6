"""SkyPrep connector against its simulator, and the simulator's own contract.

(The LMS-independent behaviour is in tests/connector_conformance.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from gateway.connectors.base import LmsAccount, ProvisionAction
from gateway.connectors.skyprep import SkyPrepConnector
from gateway.errors import (
    AccessDenied,
    AccountGone,
    ConnectorError,
    LmsAuthError,
    LmsRejected,
    PrivilegedAccount,
    UnsafeTarget,
)
from gateway.sandbox.skyprep import TIME_KEY_SECONDS, SkyPrepSimulator
from gateway.settings import AppSettings, Secret, SkyPrepSettings
from tests.connector_conformance import make_http, profile

KEY = "sk-live-0123456789abcdef"
ACCT = "acme.skyprepapp.com"


class Env:
    def __init__(self, **app_options: Any) -> None:
        sky_options = {k: app_options.pop(k) for k in ("autocreate", "key_type", "login_host")
                       if k in app_options}
        self.clock = [1_700_000_000.0]
        self.sim = SkyPrepSimulator(KEY, ACCT, clock=lambda: self.clock[0])
        self.requests: list[httpx.Request] = []

        async def record(request: httpx.Request) -> None:
            self.requests.append(request)

        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.sim.app),
                                        event_hooks={"request": [record]})
        self.app = AppSettings(connector="skyprep", idps=("corp",), **app_options,
                               skyprep=SkyPrepSettings(api_key=Secret(KEY), acct_key=ACCT,
                                                       **sky_options))
        self.connector = SkyPrepConnector("sky", self.app, make_http("sky", self.client))
        self.browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.sim.app))

    async def close(self) -> None:
        await self.connector.aclose()
        await self.browser.aclose()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    yield e
    await e.close()


async def test_sign_in_is_one_post_with_credentials_in_the_body(env: Env) -> None:
    employee = profile(1, groups=("Forensics Lab", "Miami PD Staff"))
    result = await env.connector.sign_in(employee, None, None)
    # First sign-in: get_user (is there an existing, possibly privileged, account?) and
    # get_login_key; a returning one is get_login_key only.
    assert env.sim.calls.operations() == ["get_user", "get_login_key"]
    lookup, request = env.requests
    for sent in (lookup, request):
        assert sent.method == "POST"
        assert KEY not in str(sent.url) and not sent.url.query
        assert parse_qs(sent.content.decode())["api_key"] == [KEY]
    assert str(request.url) == "https://api.skyprep.io/admin/api/get_login_key"
    body = parse_qs(request.content.decode())
    assert body["api_key"] == [KEY] and body["acct_key"] == [ACCT]
    assert body["autocreate"] == ["true"] and body["key_type"] == ["otl"]
    assert body["user_groups"] == ["Forensics Lab;Miami PD Staff"]
    user = env.sim.users["employee1@example.com"]
    assert (user.first_name, user.last_name) == ("Ada", "Lovelace1")
    assert user.user_groups == ["Forensics Lab", "Miami PD Staff"]
    assert result.account.user_id == "employee1@example.com"
    page = await env.browser.get(result.url)
    assert page.text.count("Signed in to SkyPrep as Ada Lovelace1 (employee1@example.com)") == 1
    assert "groups: Forensics Lab, Miami PD Staff" in page.text


async def test_login_page_escapes_names(env: Env) -> None:
    result = await env.connector.sign_in(
        profile(2, first_name="<script>alert(1)</script>", groups=("R&D",)), None, None)
    page = await env.browser.get(result.url)
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text and "R&amp;D" in page.text


async def test_one_time_key_works_once(env: Env) -> None:
    result = await env.connector.sign_in(profile(3), None, None)
    assert (await env.browser.get(result.url)).status_code == 200
    assert (await env.browser.get(result.url)).status_code == 401


async def test_changed_profile_is_updated_when_the_app_says_so() -> None:
    e = Env(update_on_login=True)
    try:
        first = await e.connector.sign_in(profile(4), None, None)
        renamed = profile(4, last_name="Byron", role="manager")
        second = await e.connector.sign_in(renamed, first.account, None)
        assert e.sim.calls.operations() == [
            "get_user", "get_login_key", "update_user", "get_login_key"]
        assert second.action is ProvisionAction.UPDATED
        user = e.sim.users["employee4@example.com"]
        assert (user.last_name, user.role) == ("Byron", "manager")
    finally:
        await e.close()


async def test_without_autocreate_unknown_employee_is_denied() -> None:
    e = Env(autocreate=False)
    try:
        with pytest.raises(AccessDenied):
            await e.connector.sign_in(profile(5), None, None)
        with pytest.raises(AccountGone):
            await e.connector.sign_in(profile(5), LmsAccount("employee5@example.com", "x"), None)
        assert e.sim.users == {}
        e.sim.add_user("employee5@example.com", "Ada", "Lovelace5")
        result = await e.connector.sign_in(profile(5), None, None)
        assert (await e.browser.get(result.url)).status_code == 200
    finally:
        await e.close()


async def test_any_target_is_refused(env: Env) -> None:
    with pytest.raises(UnsafeTarget):
        await env.connector.sign_in(profile(6), None, "course:12")
    assert len(env.sim.calls) == 0


@pytest.mark.parametrize(("status", "error"), [
    (400, LmsRejected), (401, LmsAuthError), (403, LmsAuthError),
])
async def test_documented_errors(env: Env, status: int, error: type[Exception]) -> None:
    env.sim.faults.fail_next(status, {"message": "nope"})
    with pytest.raises(error):
        await env.connector.sign_in(profile(7), None, None)


async def test_key_without_route_permission_is_an_auth_error(env: Env) -> None:
    env.sim.allowed_actions = {"test_connection"}
    await env.connector.test_connection()
    with pytest.raises(LmsAuthError):
        await env.connector.sign_in(profile(8), None, None)


@pytest.mark.parametrize("url", [
    "https://acme.skyprepapp.com.evil.example/account/login_with_key?k=1",
    "https://acme.skyprepapp.com@evil.example/",
    "http://acme.skyprepapp.com/account/login_with_key?k=1",
    "javascript:alert(1)",
    "//acme.skyprepapp.com/x",
    None,
    42,
])
async def test_hostile_links_are_refused(env: Env, url: object) -> None:
    # A returning employee: the answer faked here is get_login_key's, the call minting links.
    known = LmsAccount("employee9@example.com", profile(9).digest())
    env.sim.faults.fail_next(200, {"email": "employee9@example.com", "url": url})
    with pytest.raises(ConnectorError):
        await env.connector.sign_in(profile(9), known, None)


async def test_link_for_another_user_is_refused(env: Env) -> None:
    known = LmsAccount("employee10@example.com", profile(10).digest())
    env.sim.faults.fail_next(200, {"email": "boss@example.com",
                                   "url": "https://acme.skyprepapp.com/account/x"})
    with pytest.raises(ConnectorError):
        await env.connector.sign_in(profile(10), known, None)


async def test_get_user_answer_for_another_user_is_refused(env: Env) -> None:
    env.sim.faults.fail_next(200, {"id": 7, "email": "boss@example.com", "role": "learner"})
    with pytest.raises(ConnectorError):
        await env.connector.sign_in(profile(10), None, None)
    assert env.sim.calls.count("get_login_key") == 0 and env.sim.calls.count("get_user") == 1


async def test_group_names_with_separator_are_refused(env: Env) -> None:
    with pytest.raises(ConnectorError):
        await env.connector.sign_in(profile(11, groups=("a;b",)), None, None)
    assert len(env.sim.calls) == 0


# -- simulator contract ------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[tuple[SkyPrepSimulator, httpx.AsyncClient, list[float]]]:
    clock = [86400.0 * 20000 + 3600]
    sim = SkyPrepSimulator(KEY, ACCT, clock=lambda: clock[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app),
                                 base_url="https://api.skyprep.io") as client:
        yield sim, client, clock


async def test_sim_accepts_credentials_in_body_query_headers_or_json(api: Any) -> None:
    _sim, client, _ = api
    creds = {"api_key": KEY, "acct_key": ACCT}
    assert (await client.post("/admin/api/test_connection", data=creds)).json() == {
        "message": "success"}
    assert (await client.post("/admin/api/test_connection", json=creds)).status_code == 200
    assert (await client.get("/admin/api/test_connection", params=creds)).status_code == 200
    headers = {"X-SkyPrep-API-Key": KEY, "X-SkyPrep-Acct-Key": ACCT}
    assert (await client.get("/admin/api/test_connection", headers=headers)).status_code == 200
    for bad in ({}, {"api_key": KEY}, {"api_key": "x", "acct_key": ACCT},
                {"api_key": KEY, "acct_key": "other.skyprepapp.com"}):
        answer = await client.post("/admin/api/test_connection", data=bad)
        assert answer.status_code == 401 and "message" in answer.json()
    assert (await client.post("/admin/api/no_such", data=creds)).status_code == 404


async def test_sim_users(api: Any) -> None:
    _sim, client, _ = api
    creds = {"api_key": KEY, "acct_key": ACCT}
    created = (await client.post("/admin/api/create_user", data={
        **creds, "email": "j@example.com", "first_name": "James", "role": "manager"})).json()
    assert created["username"] == "j@example.com" and created["role"] == "manager"
    dup = await client.post("/admin/api/create_user", data={**creds, "email": "J@example.com"})
    assert dup.status_code == 400
    bad = await client.post("/admin/api/create_user", data={**creds, "email": "nope"})
    assert bad.status_code == 400
    by_id = await client.post("/admin/api/get_user", data={**creds, "user_id": created["id"]})
    assert by_id.json()["first_name"] == "James"
    await client.post("/admin/api/update_user", data={**creds, "user_email": "j@example.com",
                                                     "last_name": "Doakes"})
    listed = (await client.post("/admin/api/get_users", data=creds)).json()
    assert [u["last_name"] for u in listed] == ["Doakes"]
    gone = await client.post("/admin/api/destroy_user", data={**creds, "user_email": "j@x.com"})
    assert gone.status_code == 404
    await client.post("/admin/api/destroy_user", data={**creds, "user_email": "j@example.com"})
    missing = await client.post("/admin/api/get_user",
                                data={**creds, "user_email": "j@example.com"})
    assert missing.status_code == 404


async def test_sim_key_types(api: Any) -> None:
    _sim, client, clock = api
    creds = {"api_key": KEY, "acct_key": ACCT, "user_email": "k@example.com", "autocreate": "1"}

    async def key(key_type: str) -> str:
        answer = await client.post("/admin/api/get_login_key/",
                                   data={**creds, "key_type": key_type})
        assert answer.status_code == 200
        return str(answer.json()["url"])

    daily, timed = await key("daily"), await key("time")
    assert daily.startswith(f"https://{ACCT}/account/login_with_key?")
    assert (await client.get(daily)).status_code == 200
    assert (await client.get(daily)).status_code == 200  # reusable all day
    clock[0] += TIME_KEY_SECONDS + 1
    assert (await client.get(timed)).status_code == 401
    assert (await client.get(daily)).status_code == 200
    clock[0] += 86400  # next UTC day
    assert (await client.get(daily)).status_code == 401
    bad = await client.post("/admin/api/get_login_key", data={**creds, "key_type": "forever"})
    assert bad.status_code == 400


async def test_sim_rate_limit_per_ip(api: Any) -> None:
    sim, client, _ = api
    sim.limiter.limit = 3
    creds = {"api_key": KEY, "acct_key": ACCT}
    statuses = [(await client.post("/admin/api/test_connection", data=creds)).status_code
                for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = await client.post("/admin/api/test_connection", data=creds)
    assert int(limited.headers["Retry-After"]) >= 1


# -- privileged accounts and numeric ids (issues 10 and 12) ---------------------------------


@pytest.mark.parametrize(("role", "mapped", "refused"), [
    ("learner", None, False),
    ("Learner", None, False),
    ("admin", None, True),
    ("manager", None, True),
    ("power_user", None, True),
    ("instructor", None, True),
    ("manager", "manager", False),  # what the app maps: an account the gateway made
    ("admin", "manager", True),
    ("", None, True),  # no role we can read: not adopted
])
async def test_which_existing_accounts_are_adopted(
    role: str, mapped: str | None, refused: bool
) -> None:
    e = Env(update_on_login=True)
    try:
        user = e.sim.add_user("employee40@example.com", "Ada", "Byron", ["Old"], role=role)
        employee = profile(40, role=mapped, groups=("New",))
        if refused:
            with pytest.raises(PrivilegedAccount) as caught:
                await e.connector.sign_in(employee, None, None)
            assert caught.value.status == 403
            assert e.sim.calls.operations() == ["get_user"]  # no get_login_key, no update
            assert (user.last_name, user.role, user.user_groups) == ("Byron", role, ["Old"])
            assert e.sim.login_keys == {}
        else:
            result = await e.connector.sign_in(employee, None, None)
            assert e.sim.calls.operations() == ["get_user", "get_login_key"]
            assert (await e.browser.get(result.url)).status_code == 200
    finally:
        await e.close()


async def test_adopting_apps_skip_the_lookup() -> None:
    e = Env(adopt_privileged_accounts=True)
    try:
        e.sim.add_user("employee41@example.com", "Ada", "Admin", role="admin")
        result = await e.connector.sign_in(profile(41), None, None)
        assert e.sim.calls.operations() == ["get_login_key"]
        assert (await e.browser.get(result.url)).status_code == 200
    finally:
        await e.close()


async def test_a_new_e_mail_address_is_checked_like_a_first_sign_in(env: Env) -> None:
    """The cache is keyed by IdP subject, SkyPrep accounts by e-mail: when the IdP sends
    another address, the cached account is not the one get_login_key would sign in to."""
    first = await env.connector.sign_in(profile(42), None, None)
    env.sim.add_user("boss@example.com", "The", "Boss", role="admin")
    env.sim.calls.clear()
    with pytest.raises(PrivilegedAccount):
        await env.connector.sign_in(profile(42, email="boss@example.com"), first.account, None)
    assert env.sim.calls.operations() == ["get_user"]


async def test_sim_numeric_user_ids_are_ascii_digits(api: Any) -> None:
    sim, client, _ = api
    creds = {"api_key": KEY, "acct_key": ACCT}
    user = sim.add_user("u@example.com", "U", "Ser")
    arabic = str(user.id).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for bad in (arabic, f" {user.id}", f"{user.id}.0"):
        answer = await client.post("/admin/api/get_user", data={**creds, "user_id": bad})
        assert answer.status_code == 404
    ok = await client.post("/admin/api/get_user", data={**creds, "user_id": str(user.id)})
    assert ok.json()["role"] == "learner"
