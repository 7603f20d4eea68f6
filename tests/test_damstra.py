"""Damstra Learning: the simulator's contract, and the connector against it.

The simulator runs in-process behind ``httpx.ASGITransport`` (its links point at its own
fake host); MockTransport is used only for answers the simulator would never give
(foreign hosts, odd link forms, codes under other HTTP statuses).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.budget import Budget
from gateway.connectors._accounts import numeric_id
from gateway.connectors._http import LmsHttp
from gateway.connectors.base import EmbedCapable, LmsAccount, ProvisionAction
from gateway.connectors.damstra import DamstraConnector
from gateway.errors import (
    AccountGone,
    AccountInactive,
    AmbiguousAccount,
    ConnectorError,
    LmsAuthError,
    NotFound,
    PrivilegedAccount,
    UnsafeTarget,
)
from gateway.identity import Identity, Profile
from gateway.provisioning import Provisioner
from gateway.sandbox.damstra import NOT_CURRENT, DamstraSimulator
from gateway.settings import AppSettings, BudgetSettings, DamstraSettings, Secret
from gateway.store.memory import MemoryStore

KEY = "k3y-0123456789abcdef"
HOST = "learn.damstra.test"
BASE = f"https://{HOST}"
API = f"{BASE}/api/v2"


def make_app(**overrides: Any) -> AppSettings:
    damstra = DamstraSettings(access_key=Secret(KEY), api_url=API, login_host=HOST)
    fields: dict[str, Any] = {
        "connector": "damstra", "idps": ("corp",), "damstra": damstra,
        "group_map": {"staff": "11", "drivers": "12"},
        "budget": BudgetSettings(calls_per_minute=1000, max_wait_seconds=0, retries=0),
    }
    fields.update(overrides)
    return AppSettings(**fields)


def make_connector(app: AppSettings, transport: httpx.AsyncBaseTransport) -> DamstraConnector:
    client = httpx.AsyncClient(transport=transport)
    budget = Budget("lms", app.budget, MemoryStore())
    return DamstraConnector("lms", app, LmsHttp("lms", client, budget, backoff_base=0))


def profile(**overrides: Any) -> Profile:
    fields: dict[str, Any] = {
        "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace",
        "username": "ada@example.com", "employee_number": "E42", "groups": ("11",),
    }
    fields.update(overrides)
    return Profile(**fields)


@pytest.fixture
def sim() -> DamstraSimulator:
    return DamstraSimulator(KEY, BASE)


@pytest.fixture
async def client(sim: DamstraSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app),
                                 base_url=API, headers={"AccessKey": KEY}) as c:
        yield c


@pytest.fixture
def connector_for(sim: DamstraSimulator) -> Callable[..., DamstraConnector]:
    def build(**overrides: Any) -> DamstraConnector:
        return make_connector(make_app(**overrides), httpx.ASGITransport(app=sim.app))
    return build


async def follow(url: str, sim: DamstraSimulator) -> httpx.Response:
    """Open a link the way a browser would, on the simulator's host."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as browser:
        return await browser.get(url)


# -- simulator contract ---------------------------------------------------------------------


async def test_bad_or_missing_access_key_is_answered_as_documented(
    sim: DamstraSimulator, client: httpx.AsyncClient
) -> None:
    documented = {"message": "AccessKey does not exist", "reason": "Invalid access key",
                  "internalCode": 806, "error": "Invalid security token"}
    bad = await client.get("/user", headers={"AccessKey": "wrong"})
    missing = await client.get("/user", headers={"AccessKey": ""})
    assert bad.status_code == missing.status_code == 401
    assert bad.json() == missing.json() == documented


async def test_search_pages_with_meta_and_exact_filters(
    sim: DamstraSimulator, client: httpx.AsyncClient
) -> None:
    for i in range(5):
        sim.add_user("User", f"N{i}", f"u{i}@example.com", employee_number=f"E{i}")
    sim.add_user("Gone", "Person", "gone@example.com", status=NOT_CURRENT)
    page = (await client.get("/user", params={"startIndex": "2", "maxResults": "2"})).json()
    assert page["meta"] == {"totalResultCount": 5, "startIndex": 2, "endIndex": 4}
    assert [u["lastName"] for u in page["results"]] == ["N2", "N3"]
    # activeValue defaults to active: a Not Current user is found only with inactive/all.
    assert (await client.get("/user", params={"emailAddress": "gone@example.com"})).json()[
        "results"] == []
    found = (await client.get("/user", params={"emailAddress": "GONE@example.com",
                                               "activeValue": "all"})).json()
    assert [u["clientStatusId"] for u in found["results"]] == [NOT_CURRENT]
    by_emp = (await client.get("/user", params={"empId": "E3"})).json()["results"]
    assert [u["emailAddress"] for u in by_emp] == ["u3@example.com"]
    assert (await client.get("/user", params={"empId": "E"})).json()["results"] == []


async def test_create_activate_inactivate_and_bulk_merge(
    sim: DamstraSimulator, client: httpx.AsyncClient
) -> None:
    created = await client.post("/user", json={"firstName": "Bo", "lastName": "Li",
                                               "emailAddress": "bo@example.com"})
    uid = created.json()["id"]
    assert set(created.json()) == {"id", "createdDate", "modifiedDate"}
    assert sim.users[uid]["roles"] == [6]  # TRAINEE by default
    assert (await client.post(f"/user/{uid}/inactivate")).status_code == 200
    assert sim.users[uid]["clientStatusId"] == NOT_CURRENT
    await client.post(f"/user/{uid}/activate")
    assert sim.users[uid]["clientStatusId"] == 56
    bad = await client.post("/user", json={"firstName": "No", "lastName": "Mail"})
    assert bad.status_code == 400

    merged = await client.post("/bulkUserImport", json={"mergeType": "email", "users": [
        {"firstName": "Bob", "lastName": "Li", "emailAddress": "bo@example.com"},
        {"firstName": "New", "lastName": "One", "emailAddress": "new@example.com"}]})
    assert [u["firstName"] for u in merged.json()] == ["Bob", "New"]
    assert merged.json()[0]["id"] == uid and len(sim.users) == 2
    plain = await client.post("/bulkUserImport", json={"users": [
        {"firstName": "Bob", "lastName": "Li", "emailAddress": "bo@example.com"}]})
    assert plain.json()[0]["id"] != uid and len(sim.users) == 3  # mergeType none: no merge
    wrong = await client.post("/bulkUserImport", json={"mergeType": "phone", "users": []})
    assert wrong.status_code == 400


async def test_lesson_schedules_embed_codes_and_player_page(
    sim: DamstraSimulator, client: httpx.AsyncClient
) -> None:
    uid = sim.add_user("Ada", "Lovelace", "ada@example.com")
    due = sim.assign_lesson(uid, "Forklift <safety>")
    done = sim.assign_lesson(uid, "Ladders")
    sim.complete(done)
    off = sim.assign_lesson(uid, "Cranes")
    sim.cancel(off)
    listed = (await client.get(f"/user/{uid}/lesson_schedule", params={"status": "due"})).json()
    assert [s["id"] for s in listed["results"]] == [due]
    assert len((await client.get(f"/user/{uid}/lesson_schedule")).json()["results"]) == 3

    codes = {}
    for sid in (done, off, 999999):
        answer = await client.get("/embed_player", params={"lessonScheduleId": str(sid)})
        codes[sid] = answer.json()
    assert codes[done] == {"internalCode": 837, "error": "This lesson schedule is completed"}
    assert codes[off] == {"internalCode": 836, "error": "This lesson schedule is cancelled"}
    assert codes[999999] == {"internalCode": 840, "error": "Lesson Schedule does not exist"}

    for path in ("/embed_player", f"/embed_player/version/{due}"):
        url = (await client.get(path, params={"lessonScheduleId": str(due)})).json()["embedUrl"]
        page = await follow(url, sim)
        assert page.status_code == 200
        assert "lesson player: Forklift &lt;safety&gt;" in page.text
        assert "x-frame-options" not in page.headers
        assert "frame-ancestors *" in page.headers["content-security-policy"]
    forged = await follow(f"{BASE}/player/{due}?embed=true&token=guess", sim)
    assert forged.status_code == 403


async def test_login_link_works_for_its_lifetime_and_escapes_the_name(
    sim: DamstraSimulator, client: httpx.AsyncClient
) -> None:
    uid = sim.add_user("<b>Ada</b>", "Lovelace", "ada@example.com")
    answer = await client.post(f"/user/{uid}/generate_login_url", params={"expiresIn": "day"})
    link = answer.json()
    assert isinstance(link, str) and link.startswith(BASE)
    first = await follow(link, sim)
    assert "Signed in to Damstra Learning as &lt;b&gt;Ada&lt;/b&gt; Lovelace" in first.text
    # Valid until its expiresIn ends, however often opened (what link reuse relies on) ...
    assert (await follow(link, sim)).status_code == 200
    # ... and "disabled" mints a link that never works.
    off = await client.post(f"/user/{uid}/generate_login_url", params={"expiresIn": "disabled"})
    assert (await follow(off.json(), sim)).status_code == 403
    bad = await client.post(f"/user/{uid}/generate_login_url", params={"expiresIn": "hour"})
    assert bad.status_code == 400
    missing = await client.post("/user/424242/generate_login_url")
    assert missing.status_code == 404


async def test_faults_rate_limit_and_denied_operations(sim: DamstraSimulator) -> None:
    small = DamstraSimulator(KEY, BASE, rate_limit_per_minute=2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=small.app), base_url=API,
                                 headers={"AccessKey": KEY}) as c:
        assert [(await c.get("/user")).status_code for _ in range(3)] == [200, 200, 429]
        small.reset()
        small.denied_operations.add("create_user")
        denied = await c.post("/user", json={"firstName": "A", "lastName": "B",
                                             "emailAddress": "a@b.c"})
        assert denied.status_code == 403
        assert denied.json() == {"internalCode": 831,
                                 "error": "You are not authorised to make this request"}
        assert small.calls.count("create_user") == 1 and not small.users


# -- connector against the simulator ----------------------------------------------------------


async def test_new_employee_is_created_once_with_the_right_fields(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    connector = connector_for()
    result = await connector.sign_in(profile(role="supervisor", groups=("11", "12")), None, None)
    assert result.action is ProvisionAction.CREATED
    (user,) = sim.users.values()
    assert (user["firstName"], user["lastName"], user["emailAddress"], user["employeeNumber"],
            user["userName"]) == ("Ada", "Lovelace", "ada@example.com", "E42", "ada@example.com")
    assert user["sendWelcomeEmail"] is False
    assert user["roles"] == [5] and user["groups"] == [{"id": 11}, {"id": 12}]
    assert result.account.user_id == str(user["id"])
    assert "Signed in to Damstra Learning as Ada Lovelace" in (await follow(result.url, sim)).text
    assert sim.calls.operations() == ["search_users", "create_user", "generate_login_url"]
    assert "SignIn(url=<redacted>" in repr(result)

    sim.calls.clear()
    again = await connector.sign_in(profile(role="supervisor", groups=("11", "12")), None, None)
    assert again.action is ProvisionAction.NONE and len(sim.users) == 1
    assert "create_user" not in sim.calls.operations()


async def test_default_role_is_trainee(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    await connector_for().sign_in(profile(groups=()), None, None)
    (user,) = sim.users.values()
    assert user["roles"] == [6] and user["groups"] == []


async def test_returning_employee_costs_exactly_one_call(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    connector = connector_for(update_on_login=True)
    first = await connector.sign_in(profile(), None, None)
    sim.calls.clear()
    second = await connector.sign_in(profile(), first.account, None)
    assert sim.calls.operations() == ["generate_login_url"]
    assert second.action is ProvisionAction.NONE and second.account == first.account


async def test_cached_user_that_no_longer_exists_is_account_gone(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    connector = connector_for()
    first = await connector.sign_in(profile(), None, None)
    sim.delete_user(int(first.account.user_id))
    with pytest.raises(AccountGone):
        await connector.sign_in(profile(), first.account, None)


@pytest.mark.parametrize("match_by", ["email", "employee_number"])
async def test_not_current_is_reactivated_when_allowed(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector], match_by: str
) -> None:
    uid = sim.add_user("Ada", "Lovelace", "Ada@Example.com", employee_number="E42",
                       status=NOT_CURRENT)
    result = await connector_for(match_by=match_by).sign_in(profile(), None, None)
    assert result.action is ProvisionAction.REACTIVATED
    assert result.account.user_id == str(uid) and len(sim.users) == 1
    assert sim.users[uid]["clientStatusId"] == 56
    assert "Signed in" in (await follow(result.url, sim)).text


async def test_not_current_is_refused_when_the_app_forbids_reactivation(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    uid = sim.add_user("Ada", "Lovelace", "ada@example.com", status=NOT_CURRENT)
    with pytest.raises(AccountInactive):
        await connector_for(reactivate=False).sign_in(profile(), None, None)
    assert sim.users[uid]["clientStatusId"] == NOT_CURRENT and len(sim.users) == 1
    assert {"activate_user", "generate_login_url", "create_user"}.isdisjoint(
        sim.calls.operations())


async def test_changed_name_is_updated_only_with_update_on_login(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    # An ADMIN account (adopted on purpose here) shows that updates never touch roles.
    uid = sim.add_user("Ada", "Byron", "ada@example.com", roles=(3,), groups=(11, 99))
    sim.users[uid]["phoneNumber"] = "0811112222"
    renamed = profile(groups=("12",))

    plain = await connector_for(adopt_privileged_accounts=True).sign_in(renamed, None, None)
    assert plain.action is ProvisionAction.NONE and sim.users[uid]["lastName"] == "Byron"
    assert "update_user" not in sim.calls.operations()
    sim.calls.clear()
    # The cached account says "not in line": with update_on_login off it stays one call.
    await connector_for().sign_in(renamed, plain.account, None)
    assert sim.calls.operations() == ["generate_login_url"]

    sim.calls.clear()
    updating = connector_for(update_on_login=True, adopt_privileged_accounts=True)
    result = await updating.sign_in(renamed, plain.account, None)
    assert result.action is ProvisionAction.UPDATED
    assert sim.calls.operations() == ["get_user", "update_user", "generate_login_url"]
    user = sim.users[uid]
    assert user["lastName"] == "Lovelace" and user["roles"] == [3]  # roles untouched
    # Managed group 11 follows the IdP (now 12); unmanaged group 99 stays.
    assert user["groups"] == [{"id": 12}, {"id": 99}] and user["phoneNumber"] == "0811112222"

    sim.calls.clear()
    same = await updating.sign_in(renamed, None, None)
    assert same.action is ProvisionAction.NONE and "update_user" not in sim.calls.operations()


async def test_several_matches_is_ambiguous_and_changes_nothing(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    sim.add_user("Ada", "One", "ada@example.com")
    sim.add_user("Ada", "Two", "ADA@example.com", status=NOT_CURRENT)
    with pytest.raises(AmbiguousAccount):
        await connector_for().sign_in(profile(), None, None)
    assert sim.calls.operations() == ["search_users"] and len(sim.users) == 2


async def test_targets_and_bad_access_key_are_refused(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    with pytest.raises(UnsafeTarget):
        await connector_for().sign_in(profile(), None, "/lesson/1")
    assert len(sim.calls) == 0
    wrong = make_app(damstra=DamstraSettings(access_key=Secret("nope"), api_url=API,
                                             login_host=HOST))
    connector = make_connector(wrong, httpx.ASGITransport(app=sim.app))
    with pytest.raises(LmsAuthError) as caught:
        await connector.test_connection()
    assert "806" in caught.value.reason and "nope" not in caught.value.reason
    assert caught.value.status == 502


@pytest.mark.parametrize("form", ["string", "object", "text"])
async def test_every_link_form_from_the_simulator_is_accepted(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector], form: str
) -> None:
    sim.login_url_form = form  # type: ignore[assignment]
    result = await connector_for().sign_in(profile(), None, None)
    assert "Signed in to Damstra Learning as Ada Lovelace" in (await follow(result.url, sim)).text


def link_transport(body: Callable[[], httpx.Response]) -> httpx.MockTransport:
    """A Damstra that knows user 7 and answers generate_login_url with ``body``."""
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/generate_login_url"):
            assert request.url.params["expiresIn"] == "day"
            return body()
        return httpx.Response(404)
    return httpx.MockTransport(handle)


KNOWN = LmsAccount("7", profile().digest())
LINK = f"{BASE}/touch_token?token=abc"


@pytest.mark.parametrize("answer", [
    lambda: httpx.Response(200, json={"url": LINK}),
    lambda: httpx.Response(200, json={"loginUrl": LINK}),
    lambda: httpx.Response(200, json={"data": {"touchTokenUrl": LINK}}),
    lambda: httpx.Response(200, text=f"  {LINK}\n", headers={"content-type": "text/plain"}),
    lambda: httpx.Response(201, json=LINK),
])
async def test_link_forms_from_other_readings_of_the_document(answer: Any) -> None:
    connector = make_connector(make_app(), link_transport(answer))
    assert (await connector.sign_in(profile(), KNOWN, None)).url == LINK


@pytest.mark.parametrize("link", [
    "https://evil.example/touch_token?token=abc",
    f"http://{HOST}/touch_token?token=abc",
    f"https://{HOST}.evil.example/x",
    f"https://user@{HOST}/x",
    f"https://evil.example/?{HOST}",
    "javascript:alert(1)",
    "",
])
async def test_a_link_not_on_the_tenant_host_is_refused(link: str) -> None:
    connector = make_connector(make_app(), link_transport(lambda: httpx.Response(200, json=link)))
    with pytest.raises(ConnectorError) as caught:
        await connector.sign_in(profile(), KNOWN, None)
    assert caught.value.status == 502
    assert link == "" or (link not in str(caught.value) and "token" not in caught.value.reason)


async def test_foreign_link_from_a_simulator_fault_is_refused(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    sim.faults.fail_next(200, body='"https://evil.example/touch_token?token=x"')
    with pytest.raises(ConnectorError):
        await connector_for().sign_in(profile(), KNOWN, None)


async def test_the_connector_is_embed_capable(
    connector_for: Callable[..., DamstraConnector]
) -> None:
    assert isinstance(connector_for(), EmbedCapable)


# -- revalidation, privileged accounts and numeric ids (issues 10 and 12) --------------------

ADA = Identity(idp="corp", subject="sub-ada")


def provisioner_for(connector: DamstraConnector, now: list[float]) -> Provisioner:
    """The real Provisioner over a MemoryStore, both on the test's clock."""
    store = MemoryStore(clock=lambda: now[0])
    return Provisioner("lms", connector.app, connector, store, clock=lambda: now[0])


@pytest.mark.parametrize("reactivate", [True, False])
async def test_not_current_after_caching_is_noticed_within_the_revalidation_window(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector], reactivate: bool
) -> None:
    now = [1_800_000_000.0]
    prov = provisioner_for(connector_for(revalidate_seconds=3600, reactivate=reactivate), now)
    first = await prov.sign_in(ADA, profile(), None)
    uid = int(first.account.user_id)
    now[0] += 600
    sim.calls.clear()
    await prov.sign_in(ADA, profile(), None)
    assert sim.calls.operations() == ["generate_login_url"]  # returning: one call

    sim.set_status(uid, NOT_CURRENT)  # an admin marks the employee Not Current
    now[0] += 600
    sim.calls.clear()
    inside = await prov.sign_in(ADA, profile(), None)
    # Inside the window nobody looks (one call), so this link lands on Damstra's refusal.
    assert sim.calls.operations() == ["generate_login_url"]
    assert (await follow(inside.url, sim)).status_code == 403

    now[0] += 2400  # 3600 s after the last check, though the last sign-in was 10 min ago
    sim.calls.clear()
    if reactivate:
        after = await prov.sign_in(ADA, profile(), None)
        assert sim.calls.operations() == ["get_user", "activate_user", "generate_login_url"]
        assert after.action is ProvisionAction.REACTIVATED
        assert sim.users[uid]["clientStatusId"] == 56
        assert "Signed in to Damstra Learning" in (await follow(after.url, sim)).text
        now[0] += 60
        sim.calls.clear()
        await prov.sign_in(ADA, profile(), None)
        assert sim.calls.operations() == ["generate_login_url"]  # checked again just now
    else:
        for _ in range(2):  # refused every time until an admin reactivates the account
            sim.calls.clear()
            with pytest.raises(AccountInactive) as caught:
                await prov.sign_in(ADA, profile(), None)
            assert caught.value.status == 403
            assert sim.calls.operations() == ["get_user"]
            now[0] += 60
        assert sim.users[uid]["clientStatusId"] == NOT_CURRENT


async def test_privileged_account_is_refused_and_nothing_is_cached(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    uid = sim.add_user("Ada", "Byron", "ada@example.com", roles=(3,))
    prov = provisioner_for(connector_for(update_on_login=True), [1_800_000_000.0])
    with pytest.raises(PrivilegedAccount):
        await prov.sign_in(ADA, profile(), None)
    assert sim.calls.operations() == ["search_users"]
    assert sim.users[uid]["lastName"] == "Byron" and sim.users[uid]["roles"] == [3]
    assert await prov.cached_account(ADA) is None


@pytest.mark.parametrize(("roles", "supervised", "mapped", "refused"), [
    ((6,), (), None, False),
    ((3,), (), None, True),  # ADMIN
    ((7,), (), None, True),  # OWNER
    ((4,), (), None, True),  # EDITOR
    ((5,), (), None, True),  # SUPERVISOR
    ((8,), (), None, True),  # INSTRUCTOR not mapped for this employee
    ((8,), (), "instructor", False),  # INSTRUCTOR is what the app maps: ours to use
    ((6, 3), (), "instructor", True),
    ((6,), (11,), None, True),  # supervises a group
    ((5,), (11,), "supervisor", False),
])
async def test_which_damstra_roles_are_privileged(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector],
    roles: tuple[int, ...], supervised: tuple[int, ...], mapped: str | None, refused: bool,
) -> None:
    uid = sim.add_user("Ada", "Lovelace", "ada@example.com")
    sim.set_roles(uid, roles, supervised)
    employee = profile(role=mapped)
    if refused:
        with pytest.raises(PrivilegedAccount):
            await connector_for().sign_in(employee, None, None)
        assert "generate_login_url" not in sim.calls.operations()
    else:
        result = await connector_for().sign_in(employee, None, None)
        assert result.account.user_id == str(uid)


# "123" in Arabic-Indic, fullwidth, Persian and Devanagari digits: all str.isdigit().
UNICODE_DIGITS = ("\u0661\u0662\u0663", "\uff11\uff12\uff13", "\u06f1\u06f2\u06f3",
                  "\u0967\u0968\u0969")
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x660 + d) for d in range(10)))


async def test_lesson_ids_that_are_not_ascii_digits_never_reach_damstra(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    uid = sim.add_user("Ada", "Lovelace", "ada@example.com")
    sid = sim.assign_lesson(uid, "Working at heights")
    # The same number written in other scripts' digits: str.isdigit() says yes, int() maps
    # them to this very lesson schedule.
    table = ARABIC_INDIC
    connector = connector_for()
    sim.calls.clear()
    for bad in (str(sid).translate(table), *UNICODE_DIGITS, f"{sid} ", f"+{sid}", "-1",
                "1" * 21, f"{sid}/../1", ""):
        with pytest.raises(NotFound) as caught:
            await connector.embed_url(str(uid), bad)
        assert caught.value.status == 404
    with pytest.raises(NotFound):
        await connector.embed_url(str(uid).translate(table), str(sid))
    assert len(sim.calls) == 0
    assert (await connector.embed_url(str(uid), str(sid))).startswith(BASE)


async def test_a_cached_user_id_that_is_not_ascii_digits_is_never_put_in_a_path(
    sim: DamstraSimulator, connector_for: Callable[..., DamstraConnector]
) -> None:
    uid = sim.add_user("Ada", "Lovelace", "ada@example.com")
    forged = LmsAccount(str(uid).translate(ARABIC_INDIC), profile().digest())
    result = await connector_for().sign_in(profile(), forged, None)
    assert result.account.user_id == str(uid)
    assert [c.path for c in sim.calls if "/user/" in c.path] == [
        f"/api/v2/user/{uid}/generate_login_url"]


async def test_hostile_ids_in_damstra_answers_are_not_used(sim: DamstraSimulator) -> None:
    """A search answer whose ids are not ASCII digits is ignored: the user is created."""
    created: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.endswith("/user"):
            return httpx.Response(200, json={"results": [
                {"id": "1001".translate(ARABIC_INDIC), "emailAddress": "ada@example.com",
                 "clientStatusId": 56},
                {"id": -3, "emailAddress": "ada@example.com"},
                {"id": True, "emailAddress": "ada@example.com"}]})
        if request.method == "POST" and path.endswith("/user"):
            created.append(path)
            return httpx.Response(200, json={"id": "\uff11\uff12"})
        return httpx.Response(500)

    connector = make_connector(make_app(), httpx.MockTransport(handle))
    with pytest.raises(ConnectorError):  # the created id is not a Damstra id either
        await connector.sign_in(profile(), None, None)
    assert len(created) == 1


@pytest.mark.parametrize(("value", "expected"), [
    (0, "0"), (1001, "1001"), ("1001", "1001"), ("0" * 20, "0" * 20),
    (-1, None), (True, None), (1.0, None), (None, None), ("", None), ("1" * 21, None),
    *((digits, None) for digits in UNICODE_DIGITS), ("\u00b2", None), ("12\n", None),
    (" 12", None), ("+1", None),
])
def test_numeric_ids_are_ascii_digits_only(value: object, expected: str | None) -> None:
    assert numeric_id(value) == expected
