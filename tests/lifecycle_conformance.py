"""Account lifecycle (SCIM joiners, movers, leavers) conformance: every LifecycleCapable
connector against its simulator, through the same harnesses as tests/connector_conformance.py.

Per connector, :data:`VENDORS` says how to look into its simulator (what an LMS admin would
see: active or not, still there, groups) and which group values the app maps to. The LMS
calls each operation costs are asserted exactly (:data:`CALLS`) and printed as a table
(``pytest -s``); the closing note of issue 14 quotes that table.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.connectors.base import LifecycleCapable, LmsAccount, LmsUser
from gateway.errors import (
    BadRequest,
    BudgetExhausted,
    Conflict,
    ConnectorError,
    LmsAuthError,
    LmsRateLimited,
    LmsUnavailable,
    NotFound,
    PrivilegedAccount,
)
from tests.connector_conformance import CASES, CaseOptions, Harness, profile


@dataclass(frozen=True)
class View:
    """A user as the LMS admin sees it in the simulator."""

    exists: bool
    active: bool = False
    email: str = ""
    last_name: str = ""
    employee_number: str | None = None
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Vendor:
    groups: tuple[str, str, str]  # two groups the app maps to, one it does not manage
    setup: Callable[[Any], None]
    view: Callable[[Any, str], View]
    join_unmanaged: Callable[[Any, str], None]
    has_employee_number: bool = True


def _skyprep_view(sim: Any, user_id: str) -> View:
    user = next((u for u in sim.users.values() if str(u.id) == user_id), None)
    if user is None:
        return View(False)
    today = datetime.now(UTC).date()
    return View(True, not user.access_ended(today), user.email, user.last_name,
                user.card_no or None, frozenset(user.user_groups))


def _damstra_view(sim: Any, user_id: str) -> View:
    user = sim.users.get(int(user_id))
    if user is None:
        return View(False)
    return View(True, user["clientStatusId"] == 56, user["emailAddress"], user["lastName"],
                user["employeeNumber"], frozenset(str(g["id"]) for g in user["groups"]))


def _litmos_view(sim: Any, user_id: str) -> View:
    user = sim.users.get(user_id)
    if user is None:
        return View(False)
    teams = frozenset(t.Id for t in sim.teams.values() if user_id in t.members)
    return View(True, user.Active, user.Email, user.LastName, None, teams)


def _litmos_setup(sim: Any) -> None:
    for team_id in ("teamSales", "teamSupport", "teamOther"):
        sim.add_team(team_id.removeprefix("team"), team_id)


def _skyprep_join(sim: Any, user_id: str) -> None:
    user = next(u for u in sim.users.values() if str(u.id) == user_id)
    sim._add_groups(user, ["Unmanaged"])


VENDORS: dict[str, Vendor] = {
    "skyprep": Vendor(("Sales", "Support", "Unmanaged"), lambda sim: None, _skyprep_view,
                      _skyprep_join),
    "damstra": Vendor(("501", "502", "503"), lambda sim: None, _damstra_view,
                      lambda sim, uid: sim.users[int(uid)]["groups"].append({"id": 503})),
    "litmos": Vendor(("teamSales", "teamSupport", "teamOther"), _litmos_setup, _litmos_view,
                     lambda sim, uid: sim.teams["teamOther"].members.add(uid),
                     has_employee_number=False),
}

# LMS calls per operation (see each connector's *_users.py docstring).
CALLS: dict[str, dict[str, int]] = {
    "skyprep": {"create (1 group)": 1, "get": 1, "find": 1, "update (names, e-mail)": 2,
                "update (swap a managed group)": 3, "deactivate": 2, "deactivate again": 1,
                "reactivate": 2, "list page": 1, "update given current": 1,
                "deactivate given current": 1, "reactivate given current": 1},
    "damstra": {"create (1 group)": 2, "get": 1, "find": 1, "update (names, e-mail)": 3,
                "update (swap a managed group)": 2, "deactivate": 2, "deactivate again": 1,
                "reactivate": 2, "list page": 1, "update given current": 1,
                "deactivate given current": 1, "reactivate given current": 1},
    "litmos": {"create (1 group)": 2, "get": 2, "find": 2, "update (names, e-mail)": 3,
               "update (swap a managed group)": 4, "deactivate": 3, "deactivate again": 2,
               "reactivate": 3, "list page": 1, "update given current": 1,
               "deactivate given current": 1, "reactivate given current": 1},
}


@dataclass
class Lc:
    h: Harness
    vendor: Vendor
    name: str

    @property
    def connector(self) -> LifecycleCapable:
        assert isinstance(self.h.connector, LifecycleCapable)
        return self.h.connector

    def view(self, user_id: str) -> View:
        return self.vendor.view(self.h.simulator, user_id)


@contextlib.asynccontextmanager
async def lifecycle(name: str, **options: Any) -> AsyncIterator[Lc]:
    vendor = VENDORS[name]
    group_map = (("sales", vendor.groups[0]), ("support", vendor.groups[1]))
    async with CASES[name](CaseOptions(group_map=group_map, **options)) as h:
        vendor.setup(h.simulator)
        yield Lc(h, vendor, name)


@pytest.fixture(params=sorted(VENDORS))
def vendor_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def lc(vendor_name: str) -> AsyncIterator[Lc]:
    async with lifecycle(vendor_name) as harness:
        yield harness


def employee(lc: Lc, n: int, **changes: Any) -> Any:
    return profile(n, **{"groups": (lc.vendor.groups[0],), **changes})


# ---------------------------------------------------------------------------------------


async def test_every_connector_is_lifecycle_capable(lc: Lc) -> None:
    assert isinstance(lc.h.connector, LifecycleCapable)


async def test_joiner_mover_leaver_round_trip(lc: Lc) -> None:
    spent: dict[str, int] = {}

    async def measure(label: str, call: Any) -> Any:
        before = lc.h.lms_calls()
        result = await call
        spent[label] = lc.h.lms_calls() - before
        return result

    g1, g2, unmanaged = lc.vendor.groups
    joiner = employee(lc, 1)
    created: LmsUser = await measure("create (1 group)", lc.connector.create_user(joiner))
    assert created.active and created.email == joiner.email
    seen = lc.view(created.user_id)
    assert seen.exists and seen.active and seen.groups == {g1}
    got = await measure("get", lc.connector.get_user(created.user_id))
    assert (got.user_id, got.email, got.last_name, got.active) == (
        created.user_id, joiner.email, "Lovelace1", True)
    assert got.groups == (g1,)
    found = await measure("find", lc.connector.find_user(joiner))
    assert found is not None and found.user_id == created.user_id

    # Mover: new surname, e-mail (and username) and employee number; groups unchanged.
    moved = employee(lc, 1, last_name="Byron", email="ada.byron@example.com",
                     username="ada.byron@example.com", employee_number="E77")
    updated = await measure("update (names, e-mail)",
                            lc.connector.update_user(created.user_id, moved))
    assert (updated.user_id, updated.last_name, updated.email) == (
        created.user_id, "Byron", "ada.byron@example.com")
    seen = lc.view(created.user_id)
    assert (seen.last_name, seen.email) == ("Byron", "ada.byron@example.com")
    if lc.vendor.has_employee_number:
        assert seen.employee_number == "E77" and updated.employee_number == "E77"
    # An admin put the user in a group the app does not manage: it stays.
    lc.vendor.join_unmanaged(lc.h.simulator, created.user_id)
    swapped = employee(lc, 1, last_name="Byron", email="ada.byron@example.com",
                       username="ada.byron@example.com", employee_number="E77", groups=(g2,))
    after = await measure("update (swap a managed group)",
                          lc.connector.update_user(created.user_id, swapped))
    assert lc.view(created.user_id).groups == {g2, unmanaged}
    assert set(after.groups) == {g2, unmanaged}
    assert set((await lc.connector.get_user(created.user_id)).groups) == {g2, unmanaged}

    # Leaver: inactive in the LMS, not deleted; doing it again changes nothing.
    left = await measure("deactivate", lc.connector.set_active(created.user_id, False))
    assert not left.active
    seen = lc.view(created.user_id)
    assert seen.exists and not seen.active
    again = await measure("deactivate again", lc.connector.set_active(created.user_id, False))
    assert not again.active
    assert not (await lc.connector.get_user(created.user_id)).active
    back = await measure("reactivate", lc.connector.set_active(created.user_id, True))
    assert back.active and lc.view(created.user_id).active
    await measure("list page", lc.connector.list_users(0, 10))

    # A write handed the account just read (``current``) reads nothing again; each result
    # can be handed on to the next write (what the SCIM service does).
    read = await lc.connector.get_user(created.user_id)
    renamed = employee(lc, 1, last_name="King", email="ada.byron@example.com",
                       username="ada.byron@example.com", employee_number="E77", groups=(g2,))
    current = await measure("update given current", lc.connector.update_user(
        created.user_id, renamed, current=read))
    assert lc.view(created.user_id).last_name == "King" and current.last_name == "King"
    current = await measure("deactivate given current", lc.connector.set_active(
        created.user_id, False, current=current))
    assert not current.active and not lc.view(created.user_id).active
    current = await measure("reactivate given current", lc.connector.set_active(
        created.user_id, True, current=current))
    assert current.active and lc.view(created.user_id).active
    assert lc.view(created.user_id).groups == {g2, unmanaged}

    width = max(len(k) for k in spent)
    print(f"\nLMS calls per operation, {lc.name}:")
    for label, calls in spent.items():
        print(f"  {label:<{width}}  {calls}")
    assert spent == CALLS[lc.name]


async def test_an_inactive_joiner_is_created_inactive(lc: Lc) -> None:
    user = await lc.connector.create_user(employee(lc, 2), active=False)
    assert not user.active
    seen = lc.view(user.user_id)
    assert seen.exists and not seen.active
    assert not (await lc.connector.get_user(user.user_id)).active


async def test_list_pages_cover_every_user_once(lc: Lc) -> None:
    made = {(await lc.connector.create_user(profile(n))).user_id for n in range(10, 15)}
    seen: list[str] = []
    totals = set()
    for start in (0, 2, 4, 6):
        page, total = await lc.connector.list_users(start, 2)
        assert len(page) <= 2
        seen += [u.user_id for u in page]
        totals.add(total)
    assert sorted(seen) == sorted(made)
    assert totals in ({5}, {None})
    assert (await lc.connector.list_users(0, 0))[0] == []
    with pytest.raises(BadRequest):
        await lc.connector.list_users(-1, 2)


async def test_creating_an_existing_account_is_a_conflict(lc: Lc) -> None:
    await lc.connector.create_user(profile(3))
    count = lc.h.account_count()
    with pytest.raises(Conflict):
        await lc.connector.create_user(profile(3))
    assert lc.h.account_count() == count


async def test_unknown_users_are_not_found(lc: Lc) -> None:
    assert await lc.connector.find_user(profile(4)) is None
    for bad in ("987654321", "nobody", "../users", "١٢٣", "", "1 2", "a" * 300):
        before = lc.h.lms_calls()
        for call in (lc.connector.get_user(bad), lc.connector.set_active(bad, False),
                     lc.connector.update_user(bad, profile(4))):
            with pytest.raises(NotFound):
                await call
        assert lc.h.lms_calls() - before <= 6  # never more than the lookups themselves
    assert lc.h.account_count() == 0


async def test_a_user_deleted_in_the_lms_is_not_found(lc: Lc) -> None:
    user = await lc.connector.create_user(profile(5))
    lc.h.delete_user(LmsAccount(_sim_key(lc, user), "-"))  # as an LMS admin would
    for call in (lc.connector.get_user(user.user_id),
                 lc.connector.set_active(user.user_id, False),
                 lc.connector.update_user(user.user_id, profile(5))):
        with pytest.raises(NotFound):
            await call


def _sim_key(lc: Lc, user: LmsUser) -> str:
    """The key the harness's delete hook takes (SkyPrep's sign-in accounts are e-mails)."""
    return user.email if lc.name == "skyprep" else user.user_id


async def test_privileged_accounts_are_refused_unless_adopted(lc: Lc) -> None:
    admin = profile(6)
    lc.h.add_admin(admin)
    before = lc.h.snapshot()
    with pytest.raises(PrivilegedAccount):
        await lc.connector.find_user(admin)
    page, _ = await lc.connector.list_users(0, 100)
    assert page == []
    admin_id = _only_user_id(lc)
    for call in (lc.connector.get_user(admin_id), lc.connector.set_active(admin_id, False),
                 lc.connector.update_user(admin_id, admin)):
        with pytest.raises(PrivilegedAccount):
            await call
    assert lc.h.snapshot() == before
    async with lifecycle(lc.name, adopt_privileged=True) as adopting:
        adopting.h.add_admin(admin)
        found = await adopting.connector.find_user(admin)
        assert found is not None
        assert len((await adopting.connector.list_users(0, 100))[0]) == 1
        assert not (await adopting.connector.set_active(found.user_id, False)).active


def _only_user_id(lc: Lc) -> str:
    users = lc.h.simulator.users
    (user,) = users.values() if isinstance(users, dict) else users
    raw = user["id"] if isinstance(user, dict) else getattr(user, "Id", None) or user.id
    return str(raw)


@pytest.mark.parametrize(("status", "error"), [
    (500, LmsUnavailable), (429, LmsRateLimited), (401, LmsAuthError), (403, LmsAuthError)])
async def test_lms_errors_are_mapped_and_change_nothing(
    lc: Lc, status: int, error: type[Exception]
) -> None:
    user = await lc.connector.create_user(employee(lc, 7))
    before = lc.h.snapshot()
    expected: tuple[type[Exception], ...] = (error,)
    for call in (lambda: lc.connector.get_user(user.user_id),
                 lambda: lc.connector.set_active(user.user_id, False),
                 lambda: lc.connector.update_user(user.user_id, profile(7, last_name="X")),
                 lambda: lc.connector.list_users(0, 5),
                 lambda: lc.connector.find_user(profile(7))):
        lc.h.fail_next(status, 10)
        with pytest.raises(expected):
            await call()
        lc.h.simulator.faults.reset()
        if status == 429:
            # The budget now holds every call for a while: refused before the LMS is asked.
            expected = (error, BudgetExhausted)
    assert lc.h.snapshot() == before


async def test_malformed_answers_are_connector_errors(lc: Lc) -> None:
    user = await lc.connector.create_user(profile(8))
    before = lc.h.snapshot()
    lc.h.malformed_next(10)
    with pytest.raises(ConnectorError) as info:
        await lc.connector.set_active(user.user_id, False)
    assert not isinstance(info.value, LmsUnavailable)
    assert lc.h.snapshot() == before


async def test_a_current_that_is_not_this_accounts_read_is_not_trusted(lc: Lc) -> None:
    first = await lc.connector.create_user(employee(lc, 11))
    second = await lc.connector.create_user(employee(lc, 12))
    other = await lc.connector.get_user(second.user_id)
    # Another account's read: ignored, the connector reads the right one itself.
    before = lc.h.lms_calls()
    moved = await lc.connector.update_user(first.user_id, employee(lc, 11, last_name="Moved"),
                                           current=other)
    assert lc.h.lms_calls() - before >= 2  # read + write
    assert moved.user_id == first.user_id and lc.view(first.user_id).last_name == "Moved"
    assert lc.view(second.user_id).last_name != "Moved"
    # A list page's entry is no full read either (Litmos pages carry no teams).
    page, _ = await lc.connector.list_users(0, 10)
    listed = next(u for u in page if u.user_id == first.user_id)
    before = lc.h.lms_calls()
    left = await lc.connector.set_active(first.user_id, False, current=listed)
    assert lc.h.lms_calls() - before >= 2 and not left.active
    assert not lc.view(first.user_id).active


async def test_a_privileged_current_is_still_refused(lc: Lc) -> None:
    admin = profile(6)
    async with lifecycle(lc.name, adopt_privileged=True) as adopting:
        adopting.h.add_admin(admin)
        found = await adopting.connector.find_user(admin)
        assert found is not None
        read = await adopting.connector.get_user(found.user_id)
    # The same account, read by a connector that adopts admins, handed to one that does not.
    lc.h.add_admin(admin)
    admin_id = _only_user_id(lc)
    forged = LmsUser(**{**{f: getattr(read, f) for f in (
        "username", "email", "first_name", "last_name", "active", "employee_number",
        "groups")}, "user_id": admin_id, "source": read.source})
    before = lc.h.snapshot()
    for call in (lc.connector.set_active(admin_id, False, current=forged),
                 lc.connector.update_user(admin_id, admin, current=forged)):
        with pytest.raises(PrivilegedAccount):
            await call
    assert lc.h.snapshot() == before
