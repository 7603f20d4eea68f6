"""Regression tests for the findings of the independent review of the SCIM, embed
sign-in, link reuse, budget and page changes: each shows a bug a user or an attacker would
notice, fixed since (finding 1, a SCIM request that could never finish under the budget,
included).
Deep-JSON entry points the browser cannot reach (IdP and LMS answers) are in
tests/test_jsonsafe.py."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.sandbox.demo import DemoStack
from gateway.sandbox.demo_files import DemoFiles, write_demo_files
from tests.flows.agent import sign_in
from tests.scim_support import (
    ERROR,
    entra_user,
    gateway_with,
    patch,
    roomy_demo,
    scim,
    user_filter,
)


@pytest.fixture
async def stack() -> AsyncIterator[DemoStack]:
    async with roomy_demo() as demo:
        yield demo


# Nested as deep as the SCIM body cap (64 KiB) allows: arrays, objects, and unclosed.
SCIM_NESTED = [
    "[" * 30_000 + "]" * 30_000,
    '{"a":' * 10_000 + "1" + "}" * 10_000,
    "[" * 60_000,
    '{"schemas":' + "[" * 40 + "]" * 40 + "}",  # deeper than any SCIM body: refused too
]


async def test_scim_deeply_nested_body_is_a_scim_400_not_a_500(
    stack: DemoStack, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 3: ``json.loads`` raises RecursionError (not ValueError) about 1 000 deep, and
    a body within the 64 KiB cap can be nested 30 000 deep: the IdP client got a 500 and a
    traceback was logged. Now every SCIM body route answers a SCIM 400 invalidSyntax."""
    async with scim(stack, "litmos") as client:
        for body in SCIM_NESTED:
            for method, path in (("POST", "/Users"), ("PUT", "/Users/1"),
                                 ("PATCH", "/Users/1"), ("POST", "/Groups"),
                                 ("PUT", "/Groups/safety"), ("PATCH", "/Groups/safety")):
                response = await client.request(method, path, content=body)
                assert response.status_code == 400, (method, path, response.status_code)
                assert response.json()["schemas"] == [ERROR]
                assert response.json()["scimType"] == "invalidSyntax"
    assert not [r for r in caplog.records if r.levelno >= 40]


async def test_embed_page_reloads_are_held_to_the_employees_share(stack: DemoStack) -> None:
    """Finding 2 (issue 11 item 2: one employee cannot take more than a small share of an
    app's budget). ``/embed/{app}/lesson-schedules/{id}`` minted a player URL (two Damstra
    calls) outside any CallContext, so no share applied: 40 reloads spent 80 calls. Now the
    frame's calls are reserved from the employee's share and reloads past it get 429."""
    bob = next(u["id"] for u in stack.damstra.users.values() if u["firstName"] == "Bob")
    mine = next(s for s in stack.damstra.schedules.values() if s["userId"] == bob)["id"]
    share = stack.settings.app["damstra"].budget.per_employee_calls_per_minute
    async with httpx.AsyncClient(timeout=20) as browser:
        await sign_in(browser, f"{stack.gateway_url}/login/damstra?idp=demo-oidc", "emp-1002")
        before = stack.damstra.calls.count()
        statuses = [
            (await browser.get(f"{stack.gateway_url}/embed/damstra/lesson-schedules/{mine}"))
            .status_code for _ in range(40)]
        spent = stack.damstra.calls.count() - before
    assert spent <= share, f"one employee spent {spent} LMS calls in seconds (share {share})"
    assert statuses[0] == 303 and statuses[-1] == 429, statuses  # the player, then "a moment"


async def test_scim_group_change_of_a_few_members_completes_on_an_idle_100_per_minute_app(
    stack: DemoStack,
) -> None:
    """SCIM (background) only takes tokens that are in the bucket *now* above ``scim_reserve``
    (5), and the bucket holds 10 % of the budget (10 at 100 calls/min). A Group PATCH adding 4
    people to a Litmos team needs ~12 LMS calls (reads before writes), so on an *idle* app it
    is refused with 429 after ~5 reads every time: the IdP retries forever, each retry spends
    the reads again, and the membership never changes."""
    async with scim(stack, "litmos") as roomy:
        ids = []
        for i in range(4):
            created = await roomy.post(
                "/Users", json=entra_user(f"crew{i}@example.com", "Crew", f"Member{i}"))
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
    apps = dict(stack.settings.app)
    apps["litmos"] = dataclasses.replace(
        apps["litmos"], budget=dataclasses.replace(apps["litmos"].budget, calls_per_minute=100))
    settings = dataclasses.replace(stack.settings, app=apps)
    async with gateway_with(stack, settings) as gateway, \
            scim(stack, "litmos", gateway=gateway) as client:
        body = patch({"op": "add", "path": "members", "value": [{"value": i} for i in ids]})
        statuses = []
        for _ in range(4):  # an IdP's provisioning engine retrying after Retry-After
            answer = await client.patch("/Groups/safety", json=body)
            statuses.append(answer.status_code)
            if answer.status_code != 429:
                break
            await asyncio.sleep(min(float(answer.headers.get("retry-after", "5")), 8.0))
        assert statuses[-1] == 204, f"every attempt refused: {statuses}"


async def test_scim_429_is_not_logged_at_error(
    stack: DemoStack, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 4: a SCIM 429 is the designed back-pressure (sign-ins first), expected during
    every morning rush; BudgetExhausted.status is 503, so ``log_failure`` logged it at ERROR
    and paged an operator for a normal condition. Now the SCIM answer decides: 429 is INFO."""
    async with scim(stack, "litmos") as roomy:
        created = await roomy.post("/Users", json=entra_user("quiet@example.com", "Q", "Uiet"))
        user_id = created.json()["id"]
    apps = dict(stack.settings.app)
    # No waiting for the refill: SCIM is refused as soon as only the sign-ins' reserve is left.
    apps["litmos"] = dataclasses.replace(apps["litmos"], budget=dataclasses.replace(
        apps["litmos"].budget, calls_per_minute=100, max_wait_seconds=0))
    settings = dataclasses.replace(stack.settings, app=apps)
    async with gateway_with(stack, settings) as gateway, \
            scim(stack, "litmos", gateway=gateway) as client:
        caplog.clear()
        caplog.set_level(logging.INFO, logger="gateway.scim")
        statuses = [(await client.get(f"/Users/{user_id}")).status_code for _ in range(6)]
    assert 429 in statuses
    errors = [r for r in caplog.records if r.name == "gateway.scim" and r.levelno >= 40]
    assert not errors, f"{len(errors)} SCIM 429s logged at ERROR"
    assert any(r.name == "gateway.scim" and r.levelno == logging.INFO for r in caplog.records)


async def test_embed_sign_in_deeply_nested_json_is_a_400_not_a_500(stack: DemoStack) -> None:
    """Finding 3: the frame script's JSON body is capped at 2 KiB, which still fits 1 000
    nested arrays: ``json.loads`` raised RecursionError (not ValueError), which escaped the
    handler as a 500. Any client can send it (an Origin header is all it takes)."""
    headers = {"Origin": stack.gateway_url, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=20) as browser:
        for nested in ("[" * 1000 + "]" * 1000, "[" * 2000, '{"a":' * 400 + '""' + "}" * 400):
            for step in ("start", "finish"):
                answer = await browser.post(f"/embed/damstra/sign-in/{step}", content=nested,
                                            headers=headers)
                assert answer.status_code == 400, (step, answer.status_code)
                assert answer.json()["error"] == "bad_request"


async def test_scim_listing_counts_only_the_callers_people(stack: DemoStack) -> None:
    """Finding 5: an unfiltered listing reported the LMS-wide total (Damstra's
    totalResultCount) to an IdP limited to its domains, telling it how many accounts other
    IdPs' people hold. Now the total counts only what the caller can see."""
    async with scim(stack, "damstra") as company:
        for i in range(3):
            made = await company.post("/Users", json=entra_user(f"c{i}@example.com", "C", "O"))
            assert made.status_code == 201, made.text
    async with scim(stack, "damstra", "demo-saml") as subsidiary:
        made = await subsidiary.post("/Users", json=entra_user("s@example.org", "S", "Ub"))
        assert made.status_code == 201, made.text
        listed = (await subsidiary.get("/Users", params={"count": 100})).json()
    emails = [r["userName"] for r in listed.get("Resources", [])]
    assert emails and all(e.endswith("@example.org") for e in emails), emails
    assert listed["totalResults"] == len(emails), (listed["totalResults"], emails)


async def test_scim_update_keeps_a_role_granted_at_sign_in(stack: DemoStack) -> None:
    """Finding 9: a SCIM User carries no groups, so the mapping gave ``default_role`` and a
    PATCH of a name demoted a Team_Leader (granted through ``role_map`` at sign-in) to
    Learner until their next sign-in. Now SCIM updates keep the role, as they keep groups."""
    lead = stack.litmos.add_user("lead@example.com", "Lea", "Der", access_level="Team_Leader")
    apps = dict(stack.settings.app)
    apps["litmos"] = dataclasses.replace(apps["litmos"], default_role="Learner")
    settings = dataclasses.replace(stack.settings, app=apps)
    async with gateway_with(stack, settings) as gateway, \
            scim(stack, "litmos", gateway=gateway) as client:
        renamed = await client.patch(f"/Users/{lead.Id}", json=patch(
            {"op": "replace", "path": "name.givenName", "value": "Leah"}))
        assert renamed.status_code == 200, renamed.text
    assert (lead.FirstName, lead.AccessLevel) == ("Leah", "Team_Leader")


async def test_scim_filter_does_not_reveal_another_idps_admin(stack: DemoStack) -> None:
    """Finding 11: a filter on the address of an admin account of *another* IdP's domain
    answered 403 "privileged role" instead of "no match", telling the caller that address is
    an admin's. Now it is an empty result, and no LMS call is spent on another IdP's address."""
    stack.skyprep.add_user("boss@example.com", "Boss", "Admin", role="admin")
    async with scim(stack, "skyprep", "demo-saml") as subsidiary:
        before = stack.skyprep.calls.count()
        found = await subsidiary.get("/Users", params=user_filter("boss@example.com"))
        assert found.status_code == 200, found.text
        assert found.json()["totalResults"] == 0
        assert stack.skyprep.calls.count() == before


def test_demo_files_replace_a_planted_symlink_instead_of_writing_through_it(
    tmp_path: Path,
) -> None:
    """Finding 10: the demo opened ``<stem>.env`` with O_TRUNC and no O_NOFOLLOW, so with
    ``--config`` in a shared directory a planted symlink made it overwrite the link's target
    (another user's file) with the demo's secrets. Now the link itself is replaced."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    files = DemoFiles.at(tmp_path / "demo.toml")
    for planted in (files.env, files.config, files.saml_metadata):
        planted.symlink_to(victim)
    write_demo_files(files, {"gateway": {"public_url": "http://127.0.0.1:1"}},
                     {"DEMO_SECRET": "s3cret"}, b"<md/>")
    assert victim.read_text() == "precious\n"
    assert not files.env.is_symlink() and "DEMO_SECRET=s3cret" in files.env.read_text()
    assert os.stat(files.env).st_mode & 0o777 == 0o600
    assert files.saml_metadata.read_bytes() == b"<md/>"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["victim.txt", files.env.name, files.config.name, files.saml_metadata.name])
