"""One conformance suite for every LMS connector, run against its simulator.

Each entry of :data:`CASES` is a factory: given :class:`CaseOptions` it yields a
:class:`Harness` (a connector wired to a fresh simulator through ``LmsHttp`` with a real
``Budget`` on a ``MemoryStore``) plus the simulator hooks the suite needs. To add a
connector, write a factory and add it to ``CASES``; every test below then runs for it.

By default the connector talks to the simulator in-process (``httpx.ASGITransport``);
``real_server=True`` serves the simulator with uvicorn on 127.0.0.1 (needed for timeouts,
which an in-process transport cannot produce).

Documented differences between LMSs:
* ``recreates_deleted``: SkyPrep's ``get_login_key`` autocreates, so a user deleted in the
  LMS is transparently re-created instead of raising AccountGone.
* ``new_employee_calls``: LMS calls of a new employee's first sign-in. SkyPrep spends one
  lookup (``get_user``) before ``get_login_key`` to see whether an existing account is
  privileged (none when the app adopts privileged accounts anyway).
* ``link_operations``: the calls that mint a sign-in link (Litmos has none: the LoginKey
  comes with the account read, so "no link" there means no SignIn was returned).
* ``elevated_role``: a role above learner that ``role_map`` may give an account the gateway
  creates (SkyPrep's get_login_key creates learners only, so it uses ``instructor``).
* ``deactivate``: how an LMS admin disables the account (SkyPrep: an access end date in the
  past); None where an LMS documents no deactivated state.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.budget import Budget
from gateway.connectors._http import LmsHttp, build_client, same_origin
from gateway.connectors.base import Connector, LmsAccount, ProvisionAction
from gateway.connectors.damstra import DamstraConnector
from gateway.connectors.litmos import LitmosConnector
from gateway.connectors.skyprep import SkyPrepConnector
from gateway.errors import (
    AccountGone,
    AccountInactive,
    ConnectorError,
    LmsAuthError,
    LmsRateLimited,
    LmsUnavailable,
    PrivilegedAccount,
    UnsafeTarget,
)
from gateway.identity import Profile
from gateway.sandbox._common import bind_port, serve_in_thread
from gateway.sandbox.damstra import NOT_CURRENT, DamstraSimulator
from gateway.sandbox.litmos import LitmosSimulator
from gateway.sandbox.skyprep import SkyPrepSimulator
from gateway.settings import (
    AppSettings,
    BudgetSettings,
    DamstraSettings,
    HttpSettings,
    LitmosSettings,
    Secret,
    SkyPrepSettings,
)
from gateway.store.memory import MemoryStore

API_KEY = "conformance-api-key-0123456789"


@dataclass(frozen=True)
class CaseOptions:
    api_key_ok: bool = True
    real_server: bool = False
    read_timeout: float = 5.0
    adopt_privileged: bool = False
    reactivate: bool = True
    # Lifecycle tests (tests/lifecycle_conformance.py): IdP group -> LMS group, match rule.
    group_map: tuple[tuple[str, str], ...] = ()
    match_by: str = "email"


@dataclass
class Harness:
    """A connector and the hooks into its simulator."""

    connector: Connector
    simulator: Any
    login_host: str
    dev_mode: bool
    secrets: tuple[str, ...]
    lms_calls: Callable[[], int]
    account_count: Callable[[], int]
    delete_user: Callable[[LmsAccount], None]
    fail_next: Callable[[int, int], None]  # (status, times)
    malformed_next: Callable[[int], None]
    set_delay: Callable[[float], None]
    set_rate_limit: Callable[[int], None]
    set_link_base: Callable[[str], None]
    open_link: Callable[[str], Awaitable[httpx.Response]]
    # Seed an existing account for a Profile with an admin role, as an LMS admin would.
    add_admin: Callable[[Profile], None]
    # The simulator's users, deep-copied (to show that nothing was changed).
    snapshot: Callable[[], str]
    link_operations: tuple[str, ...]
    elevated_role: str
    # An LMS admin deactivates the account; None where the LMS has no such state.
    deactivate: Callable[[LmsAccount], None] | None
    recreates_deleted: bool = False
    new_employee_calls: int = 0  # see the module docstring


Factory = Callable[[CaseOptions], contextlib.AbstractAsyncContextManager[Harness]]


def make_http(app: str, client: httpx.AsyncClient, calls_per_minute: int = 10_000) -> LmsHttp:
    """LmsHttp with a real Budget on a MemoryStore; tiny back-off so retries are fast."""
    budget = Budget(app, BudgetSettings(calls_per_minute=calls_per_minute, max_wait_seconds=1.0),
                    MemoryStore())
    return LmsHttp(app, client, budget, backoff_base=0.001)


def profile(n: int | str = 1, **changes: Any) -> Profile:
    """A distinct employee per ``n``."""
    base: dict[str, Any] = dict(
        email=f"employee{n}@example.com", first_name="Ada", last_name=f"Lovelace{n}",
        username=f"employee{n}@example.com", employee_number=f"E{n}", groups=(),
    )
    base.update(changes)
    return Profile(**base)


def fault_hooks(sim: Any) -> dict[str, Any]:
    """The fault-injection hooks every simulator offers through ``sandbox._common``."""
    return {
        "fail_next": lambda status, times: sim.faults.fail_next(status, times=times),
        "malformed_next": lambda times: sim.faults.malformed_next(times),
        "set_delay": lambda s: setattr(sim.faults, "delay", s),
        "set_rate_limit": lambda n: setattr(sim.limiter, "limit", n),
    }


def _app_options(options: CaseOptions) -> dict[str, Any]:
    return {"adopt_privileged_accounts": options.adopt_privileged,
            "reactivate": options.reactivate, "group_map": dict(options.group_map),
            "match_by": options.match_by}


def _client(app: Any, options: CaseOptions, served: bool) -> httpx.AsyncClient:
    timeout = httpx.Timeout(options.read_timeout, connect=2.0)
    if served:
        # The production client (aiohttp transport), so timeouts are the real ones.
        return build_client(HttpSettings(connect_timeout=2.0, read_timeout=options.read_timeout))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=timeout)


@contextlib.asynccontextmanager
async def skyprep_case(options: CaseOptions) -> AsyncIterator[Harness]:
    sock = bind_port() if options.real_server else None
    base = f"http://127.0.0.1:{sock.getsockname()[1]}" if sock else None
    sim = SkyPrepSimulator(API_KEY, "acme.skyprepapp.com", login_base_url=base)
    served = serve_in_thread(sim.app, sock) if sock else None
    client = _client(sim.app, options, served is not None)
    login_host = f"127.0.0.1:{served.port}" if served else "acme.skyprepapp.com"
    app = AppSettings(connector="skyprep", idps=("corp",), **_app_options(options),
                      skyprep=SkyPrepSettings(
        api_key=Secret(API_KEY if options.api_key_ok else "wrong-key"),
        acct_key="acme.skyprepapp.com",
        api_url=f"{base}/admin/api" if base else "https://api.skyprep.io/admin/api",
        login_host=login_host,
        http=HttpSettings(read_timeout=options.read_timeout),
    ))
    connector = SkyPrepConnector("skyprep-test", app, make_http("skyprep-test", client),
                                 dev_mode=served is not None)
    link_client = _client(sim.app, options, served is not None)

    def set_link_base(url: str) -> None:
        sim.login_base_url = url

    try:
        yield Harness(
            connector=connector, simulator=sim, login_host=login_host,
            dev_mode=served is not None, secrets=(API_KEY,),
            lms_calls=lambda: len(sim.calls), account_count=lambda: len(sim.users),
            delete_user=lambda account: sim.delete_user(account.user_id),
            **fault_hooks(sim),
            set_link_base=set_link_base, open_link=link_client.get,
            add_admin=lambda p: sim.add_user(p.email, p.first_name, p.last_name, role="admin"),
            snapshot=lambda: repr(copy.deepcopy(sim.users)),
            link_operations=("get_login_key",), elevated_role="instructor",
            deactivate=lambda account: setattr(sim.users[account.user_id], "access_end_date",
                                               "January 1, 2020"),
            recreates_deleted=True, new_employee_calls=1 if options.adopt_privileged else 2,
        )
    finally:
        sim.faults.reset()
        await connector.aclose()
        await link_client.aclose()
        if served is not None:
            served.stop()


@contextlib.asynccontextmanager
async def litmos_case(options: CaseOptions) -> AsyncIterator[Harness]:
    sock = bind_port() if options.real_server else None
    base = f"http://127.0.0.1:{sock.getsockname()[1]}" if sock else "https://acme.litmos.com"
    sim = LitmosSimulator(API_KEY, login_base_url=base)
    served = serve_in_thread(sim.app, sock) if sock else None
    client = _client(sim.app, options, served is not None)
    login_host = f"127.0.0.1:{served.port}" if served else "acme.litmos.com"
    app = AppSettings(connector="litmos", idps=("corp",), **_app_options(options),
                      litmos=LitmosSettings(
        api_key=Secret(API_KEY if options.api_key_ok else "wrong-key"),
        login_host=login_host,
        api_url=f"{base}/v1.svc" if served else None,
        http=HttpSettings(read_timeout=options.read_timeout),
    ))
    connector = LitmosConnector("litmos-test", app, make_http("litmos-test", client),
                                dev_mode=served is not None)
    link_client = _client(sim.app, options, served is not None)

    def set_link_base(url: str) -> None:
        sim.login_base_url = url

    try:
        yield Harness(
            connector=connector, simulator=sim, login_host=login_host,
            dev_mode=served is not None, secrets=(API_KEY,),
            lms_calls=lambda: len(sim.calls), account_count=lambda: len(sim.users),
            delete_user=lambda account: sim.delete_user(account.user_id),
            **fault_hooks(sim),
            set_link_base=set_link_base, open_link=link_client.get,
            add_admin=lambda p: sim.add_user(p.username, p.first_name, p.last_name, p.email,
                                             access_level="Administrator"),
            snapshot=lambda: repr(copy.deepcopy(sim.users)),
            link_operations=(), elevated_role="Team_Leader", new_employee_calls=2,
            deactivate=lambda account: sim.set_active(account.user_id, False),
        )
    finally:
        sim.faults.reset()
        await connector.aclose()
        await link_client.aclose()
        if served is not None:
            served.stop()


@contextlib.asynccontextmanager
async def damstra_case(options: CaseOptions) -> AsyncIterator[Harness]:
    sock = bind_port() if options.real_server else None
    base = f"http://127.0.0.1:{sock.getsockname()[1]}" if sock else "https://acme.velpic.test"
    sim = DamstraSimulator(API_KEY, base)
    served = serve_in_thread(sim.app, sock) if sock else None
    client = _client(sim.app, options, served is not None)
    login_host = base.split("://", 1)[1]
    app = AppSettings(connector="damstra", idps=("corp",), **_app_options(options),
                      damstra=DamstraSettings(
        access_key=Secret(API_KEY if options.api_key_ok else "wrong-key"),
        api_url=f"{base}/api/v2", login_host=login_host,
        http=HttpSettings(read_timeout=options.read_timeout),
    ))
    connector = DamstraConnector("damstra-test", app, make_http("damstra-test", client),
                                 dev_mode=served is not None)
    link_client = _client(sim.app, options, served is not None)

    def set_link_base(url: str) -> None:
        sim.login_base_url = url

    try:
        yield Harness(
            connector=connector, simulator=sim, login_host=login_host,
            dev_mode=served is not None, secrets=(API_KEY,),
            lms_calls=lambda: len(sim.calls), account_count=lambda: len(sim.users),
            delete_user=lambda account: sim.delete_user(int(account.user_id)),
            **fault_hooks(sim),
            set_link_base=set_link_base, open_link=link_client.get,
            add_admin=lambda p: sim.add_user(p.first_name, p.last_name, p.email,
                                             employee_number=p.employee_number, roles=(3,)),
            snapshot=lambda: repr(copy.deepcopy(sim.users)),
            link_operations=("generate_login_url",), elevated_role="INSTRUCTOR",
            new_employee_calls=3,
            deactivate=lambda account: sim.set_status(int(account.user_id), NOT_CURRENT),
        )
    finally:
        sim.faults.reset()
        await connector.aclose()
        await link_client.aclose()
        if served is not None:
            served.stop()


CASES: dict[str, Factory] = {
    "skyprep": skyprep_case, "litmos": litmos_case, "damstra": damstra_case,
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Factory:
    return CASES[request.param]


@pytest.fixture
async def h(case: Factory) -> AsyncIterator[Harness]:
    async with case(CaseOptions()) as harness:
        yield harness


# ---------------------------------------------------------------------------------------


async def test_test_connection_succeeds(h: Harness) -> None:
    await h.connector.test_connection()
    assert h.lms_calls() == 1


async def test_first_sign_in_provisions_exactly_one_account(h: Harness) -> None:
    employee = profile(1)
    first = await h.connector.sign_in(employee, None, None)
    assert h.account_count() == 1
    assert same_origin(first.url, h.login_host, allow_http=h.dev_mode)
    page = await h.open_link(first.url)
    assert page.status_code == 200
    assert "Lovelace1" in page.text
    assert first.account.profile_digest == employee.digest()
    # The cache was lost: signing in again finds the account instead of creating another.
    again = await h.connector.sign_in(employee, None, None)
    assert h.account_count() == 1
    assert again.account.user_id == first.account.user_id
    assert again.action in (ProvisionAction.NONE, ProvisionAction.UPDATED)


async def test_returning_employee_costs_one_lms_call(h: Harness) -> None:
    employee = profile(2)
    first = await h.connector.sign_in(employee, None, None)
    before = h.lms_calls()
    second = await h.connector.sign_in(employee, first.account, None)
    assert h.lms_calls() - before == 1
    assert second.account == first.account
    assert second.action is ProvisionAction.NONE
    assert (await h.open_link(second.url)).status_code == 200


async def test_two_employees_get_two_accounts(h: Harness) -> None:
    a = await h.connector.sign_in(profile(3), None, None)
    b = await h.connector.sign_in(profile(4), None, None)
    assert a.account.user_id != b.account.user_id
    assert h.account_count() == 2


async def test_deleted_user(h: Harness) -> None:
    employee = profile(5)
    first = await h.connector.sign_in(employee, None, None)
    h.delete_user(first.account)
    assert h.account_count() == 0
    if h.recreates_deleted:
        again = await h.connector.sign_in(employee, first.account, None)
        assert h.account_count() == 1
    else:
        with pytest.raises(AccountGone):
            await h.connector.sign_in(employee, first.account, None)
        again = await h.connector.sign_in(employee, None, None)
    assert h.account_count() == 1
    assert (await h.open_link(again.url)).status_code == 200


async def test_unknown_target_form_is_refused_before_any_call(h: Harness) -> None:
    for target in ("javascript:alert(1)", "nope:1", "https://evil.example/", "course:1/../2"):
        with pytest.raises(UnsafeTarget):
            await h.connector.sign_in(profile(6), None, target)
    assert h.lms_calls() == 0
    assert h.account_count() == 0


async def test_link_on_another_host_is_refused(h: Harness) -> None:
    h.set_link_base("https://evil.example")
    with pytest.raises(ConnectorError) as info:
        await h.connector.sign_in(profile(7), None, None)
    assert "evil.example/" not in str(info.value)


async def test_bad_api_key_is_an_auth_error(case: Factory) -> None:
    async with case(CaseOptions(api_key_ok=False)) as h:
        with pytest.raises(LmsAuthError) as info:
            await h.connector.test_connection()
        with pytest.raises(LmsAuthError):
            await h.connector.sign_in(profile(8), None, None)
        assert h.account_count() == 0
        assert "wrong-key" not in str(info.value)


@pytest.mark.parametrize("status", [429, 503])
async def test_slow_down_answers_are_rate_limited(h: Harness, status: int) -> None:
    """429 says "slow down" on every LMS, 503 only on Litmos ("Litmos API overview"). A 503
    from SkyPrep or Damstra is an outage: retried, and the app's budget is not paused."""
    h.fail_next(status, 1)
    if status in getattr(h.connector, "rate_limit_statuses", ()):
        with pytest.raises(LmsRateLimited):
            await h.connector.sign_in(profile(9), None, None)
        return
    assert status == 503 and 503 not in getattr(h.connector, "rate_limit_statuses", {503})
    result = await h.connector.sign_in(profile(9), None, None)
    assert result.url
    budget = h.connector.http.budget  # type: ignore[attr-defined]
    assert await budget.acquire() < 0.01  # not paused: the next call goes at once


async def test_simulator_rate_limit_is_reported_as_rate_limited(h: Harness) -> None:
    h.set_rate_limit(2)
    with pytest.raises(LmsRateLimited):
        for _ in range(3):
            await h.connector.test_connection()


async def test_server_error_is_unavailable(h: Harness) -> None:
    h.fail_next(500, 10)
    with pytest.raises(LmsUnavailable) as info:
        await h.connector.sign_in(profile(10), None, None)
    assert not isinstance(info.value, LmsRateLimited)
    assert h.account_count() == 0


async def test_malformed_json_is_a_connector_error(h: Harness) -> None:
    h.malformed_next(10)
    with pytest.raises(ConnectorError) as info:
        await h.connector.sign_in(profile(11), None, None)
    assert not isinstance(info.value, LmsUnavailable)


async def test_timeouts_are_unavailable(case: Factory) -> None:
    async with case(CaseOptions(real_server=True, read_timeout=0.1)) as h:
        h.set_delay(0.4)
        with pytest.raises(LmsUnavailable):
            await h.connector.sign_in(profile(12), None, None)
        h.set_delay(0)
        # The same connector works again once the LMS answers in time.
        ok = await h.connector.sign_in(profile(12), None, None)
        assert (await h.open_link(ok.url)).status_code == 200


async def test_no_secret_or_link_in_logs(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    first = await h.connector.sign_in(profile(13), None, None)
    second = await h.connector.sign_in(profile(13), first.account, None)
    h.fail_next(500, 10)
    with pytest.raises(LmsUnavailable):
        await h.connector.sign_in(profile(13), first.account, None)
    logged = "\n".join(r.getMessage() + repr(getattr(r, "fields", "")) for r in caplog.records)
    for secret in (*h.secrets, first.url, second.url):
        assert secret not in logged
    assert first.url not in repr(first)


# -- privileged accounts, deactivation, verify (issue 10 items 2 and 7) -------------------


async def test_existing_privileged_account_is_not_adopted(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    employee = profile(20)
    h.add_admin(employee)
    before = h.snapshot()
    caplog.set_level(logging.WARNING)
    with pytest.raises(PrivilegedAccount) as info:
        await h.connector.sign_in(employee, None, None)
    assert info.value.status == 403
    assert "administrator rights" in info.value.public
    # No link minted, nothing created, updated, renamed, reactivated or put in a team.
    assert _links(h) == 0
    assert h.snapshot() == before and h.account_count() == 1
    warnings = [r for r in caplog.records if "privileged" in r.getMessage()]
    assert warnings and warnings[0].levelno == logging.WARNING
    logged = repr([(r.getMessage(), getattr(r, "fields", "")) for r in caplog.records])
    assert employee.email not in logged and employee.email not in str(info.value)
    # The app may choose to adopt such accounts.
    async with h_with(h, adopt_privileged=True) as adopting:
        adopting.add_admin(employee)
        result = await adopting.connector.sign_in(employee, None, None)
        assert (await adopting.open_link(result.url)).status_code == 200


async def test_account_created_with_a_mapped_role_signs_in_again(h: Harness) -> None:
    employee = profile(21, role=h.elevated_role)
    first = await h.connector.sign_in(employee, None, None)
    # The cache was lost: the account found is the one we created, with the mapped role.
    again = await h.connector.sign_in(employee, None, None)
    assert again.account.user_id == first.account.user_id and h.account_count() == 1
    before = h.lms_calls()
    await h.connector.sign_in(employee, again.account, None)
    assert h.lms_calls() - before == 1


@pytest.mark.parametrize("adopt", [False, True])
async def test_new_employee_call_count(case: Factory, adopt: bool) -> None:
    async with case(CaseOptions(adopt_privileged=adopt)) as h:
        first = await h.connector.sign_in(profile(22), None, None)
        assert h.lms_calls() == h.new_employee_calls
        before = h.lms_calls()
        await h.connector.sign_in(profile(22), first.account, None)
        assert h.lms_calls() - before == 1


async def test_verify_reactivates_a_deactivated_account(h: Harness) -> None:
    employee = profile(23)
    first = await h.connector.sign_in(employee, None, None)
    if h.deactivate is None:
        # Nothing to look at again (no documented deactivated state): still one call.
        before = h.lms_calls()
        again = await h.connector.sign_in(employee, first.account, None, verify=True)
        assert h.lms_calls() - before == 1 and again.account == first.account
        return
    h.deactivate(first.account)
    again = await h.connector.sign_in(employee, first.account, None, verify=True)
    assert again.action is ProvisionAction.REACTIVATED
    assert again.account.user_id == first.account.user_id
    page = await h.open_link(again.url)
    assert page.status_code == 200 and "Lovelace23" in page.text


async def test_verify_refuses_a_deactivated_account_when_the_app_may_not_reactivate(
    case: Factory,
) -> None:
    async with case(CaseOptions(reactivate=False)) as h:
        employee = profile(24)
        first = await h.connector.sign_in(employee, None, None)
        if h.deactivate is None:
            # No documented deactivated state (SkyPrep): verify finds nothing to refuse.
            again = await h.connector.sign_in(employee, first.account, None, verify=True)
            assert again.account == first.account
            return
        h.deactivate(first.account)
        before, links = h.snapshot(), _links(h)
        with pytest.raises(AccountInactive):
            await h.connector.sign_in(employee, first.account, None, verify=True)
        assert _links(h) == links and h.snapshot() == before


@contextlib.asynccontextmanager
async def h_with(h: Harness, **options: Any) -> AsyncIterator[Harness]:
    """A second, fresh harness of the same connector type with other options."""
    name = type(h.connector).__name__.removesuffix("Connector").lower()
    async with CASES[name](CaseOptions(**options)) as other:
        yield other


def _links(h: Harness) -> int:
    return sum(h.simulator.calls.count(op) for op in h.link_operations)
