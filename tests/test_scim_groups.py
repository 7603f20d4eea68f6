"""SCIM 2.0 Groups over the demo's real LMS simulators: group membership pushed the way
Entra ID and Okta push it becomes LMS group / team / user-group membership through the
app's group_map; unmapped groups are accepted and ignored; the IdP manages only its own
people and only when the app trusts its groups; malformed requests change nothing."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.sandbox.demo import DemoStack
from gateway.settings import Settings
from tests.scim_support import APPS, entra_user, gateway_with, patch, roomy_demo, scim
from tests.test_scim import assert_scim_error, lms_calls

GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
# The LMS group each app's "Safety" maps to, and the SCIM id the gateway derives from it.
SAFETY = {"skyprep": "Safety team", "damstra": "501", "litmos": "safety"}
SAFETY_ID = {"skyprep": "n." + base64.urlsafe_b64encode(b"Safety team").decode().rstrip("="),
             "damstra": "501", "litmos": "safety"}


def mapped(settings: Settings, **group_idps: tuple[str, ...]) -> Settings:
    """The demo's settings with a group_map on every app (Damstra's demo app has none)."""
    apps = dict(settings.app)
    apps["damstra"] = dataclasses.replace(apps["damstra"],
                                          group_map={"Safety": "501", "Staff": "502"})
    for name, idps in group_idps.items():
        apps[name] = dataclasses.replace(apps[name], group_idps=idps)
    return dataclasses.replace(settings, app=apps)


@pytest.fixture
async def stack() -> AsyncIterator[DemoStack]:
    async with roomy_demo() as demo:
        yield demo


@pytest.fixture
async def gateway(stack: DemoStack) -> AsyncIterator[Any]:
    async with gateway_with(stack, mapped(stack.settings)) as app:
        yield app


def in_group(stack: DemoStack, app: str, email: str) -> bool:
    """What the LMS itself says: is the account in the LMS group "Safety" maps to?"""
    if app == "skyprep":
        return SAFETY[app] in stack.skyprep.users[email.lower()].user_groups
    if app == "damstra":
        (user,) = [u for u in stack.damstra.users.values() if u["emailAddress"] == email]
        return any(g["id"] == 501 for g in user["groups"])
    (litmos,) = [u for u in stack.litmos.users.values() if u.Email == email]
    return litmos.Id in stack.litmos.teams["safety"].members


async def new_user(client: httpx.AsyncClient, email: str) -> str:
    created = await client.post("/Users", json=entra_user(email, "Ann", email.split("@")[0]))
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def members(*ids: str) -> list[dict[str, str]]:
    return [{"value": i} for i in ids]


@pytest.mark.parametrize("app", APPS)
async def test_entra_and_okta_membership_round_trip(stack: DemoStack, gateway: Any,
                                                    app: str) -> None:
    ada, bob = "ada@example.com", "bob@example.com"
    async with scim(stack, app, gateway=gateway) as client:
        ada_id, bob_id = await new_user(client, ada), await new_user(client, bob)
        # Entra looks the group up by name first (members excluded): no LMS call.
        before = lms_calls(stack, app)
        found = await client.get("/Groups", params={
            "filter": 'displayName eq "Safety"', "excludedAttributes": "members"})
        assert found.status_code == 200, found.text
        (group,) = found.json()["Resources"]
        assert group["id"] == SAFETY_ID[app] and group["displayName"] == "Safety"
        assert "members" not in group and lms_calls(stack, app) == before
        group_id = group["id"]
        # Okta pushes the group (POST): the LMS group exists already, so the same Group.
        pushed = await client.post("/Groups", json={
            "schemas": [GROUP], "displayName": "Safety", "members": []})
        assert pushed.status_code == 201, pushed.text
        assert pushed.json()["id"] == group_id
        assert pushed.headers["location"].endswith(f"/Groups/{group_id}")

        added = await client.patch(f"/Groups/{group_id}", json=patch(
            {"op": "Add", "path": "members", "value": members(ada_id, bob_id)}))
        assert added.status_code == 204, added.text
        assert in_group(stack, app, ada) and in_group(stack, app, bob)
        read = (await client.get(f"/Groups/{group_id}")).json()
        assert {m["value"] for m in read["members"]} == {ada_id, bob_id}
        assert read["members"][0]["$ref"].endswith(f"/Users/{read['members'][0]['value']}")
        # The user's own SCIM updates keep the membership.
        renamed = await client.patch(f"/Users/{ada_id}", json=patch(
            {"op": "Replace", "path": "name.familyName", "value": "Renamed"}))
        assert renamed.status_code == 200 and in_group(stack, app, ada)

        # Entra removes with a filter, or with the member in the value.
        out = await client.patch(f"/Groups/{group_id}", json=patch(
            {"op": "Remove", "path": f'members[value eq "{ada_id}"]'}))
        assert out.status_code == 204, out.text
        assert not in_group(stack, app, ada) and in_group(stack, app, bob)
        out = await client.patch(f"/Groups/{group_id}", json=patch(
            {"op": "Remove", "path": "members", "value": members(bob_id)}))
        assert out.status_code == 204 and not in_group(stack, app, bob)

        # Okta's PUT of the whole group sets the membership exactly.
        put = await client.put(f"/Groups/{group_id}", json={
            "schemas": [GROUP], "id": group_id, "displayName": "Safety",
            "members": members(ada_id)})
        assert put.status_code == 200, put.text
        assert in_group(stack, app, ada) and not in_group(stack, app, bob)
        # A retried add costs only the read of the member; a rename changes nothing.
        before = lms_calls(stack, app)
        again = await client.patch(f"/Groups/{group_id}", json=patch(
            {"op": "add", "path": "members", "value": members(ada_id)},
            {"op": "replace", "path": "displayName", "value": "Safety (renamed)"}))
        assert again.status_code == 204
        assert lms_calls(stack, app) - before == (2 if app == "litmos" else 1)
        assert (await client.get(f"/Groups/{group_id}")).json()["displayName"] == "Safety"

        # DELETE leaves the LMS group and its members alone.
        assert (await client.delete(f"/Groups/{group_id}")).status_code == 204
        assert in_group(stack, app, ada)
        listed = (await client.get("/Groups")).json()
        assert group_id in {g["id"] for g in listed["Resources"]}
        assert all("members" not in g for g in listed["Resources"])


async def test_unmapped_groups_are_accepted_and_ignored(stack: DemoStack, gateway: Any) -> None:
    async with scim(stack, "litmos", gateway=gateway) as client:
        ada_id = await new_user(client, "ada@example.com")
        none = await client.get("/Groups", params={"filter": 'displayName eq "All staff"'})
        assert none.json()["totalResults"] == 0
        before = lms_calls(stack, "litmos")
        created = await client.post("/Groups", json={
            "schemas": [GROUP], "displayName": "All staff", "externalId": "9f1c-all",
            "members": members(ada_id)})
        assert created.status_code == 201, created.text
        group_id = created.json()["id"]
        assert group_id.startswith("x.")
        fetched = (await client.get(f"/Groups/{group_id}")).json()
        assert fetched["displayName"] == "All staff" and "members" not in fetched
        added = await client.patch(f"/Groups/{group_id}", json=patch(
            {"op": "Add", "path": "members", "value": members(ada_id)}))
        assert added.status_code == 204
        assert (await client.delete(f"/Groups/{group_id}")).status_code == 204
        assert lms_calls(stack, "litmos") == before  # nothing asked of the LMS at all
    # The operator maps it later (by Entra's object id): the id Entra stored now works.
    settings = mapped(stack.settings)
    litmos = dataclasses.replace(settings.app["litmos"],
                                 group_map={**settings.app["litmos"].group_map,
                                            "9f1c-all": "safety"})
    settings = dataclasses.replace(settings, app={**settings.app, "litmos": litmos})
    async with gateway_with(stack, settings) as later, scim(stack, "litmos",
                                                            gateway=later) as client:
        added = await client.patch(f"/Groups/{group_id}", json=patch(
            {"op": "Add", "path": "members", "value": members(ada_id)}))
        assert added.status_code == 204 and in_group(stack, "litmos", "ada@example.com")


async def test_only_the_idps_own_people_and_trusted_groups(stack: DemoStack,
                                                           gateway: Any) -> None:
    async with scim(stack, "damstra", gateway=gateway) as company:
        own_id = await new_user(company, "own@example.com")
    async with scim(stack, "damstra", "demo-saml", gateway=gateway) as subsidiary:
        theirs_id = await new_user(subsidiary, "sub@example.org")
    admin_id = str(stack.damstra.add_user("Root", "Admin", "root@example.com", roles=(3,)))
    async with scim(stack, "damstra", gateway=gateway) as company:
        snapshot = {k: list(v["groups"]) for k, v in stack.damstra.users.items()}
        # Someone of another IdP's domain, with one of its own: refused as a whole.
        foreign = await company.patch("/Groups/501", json=patch(
            {"op": "Add", "path": "members", "value": members(own_id, theirs_id)}))
        assert_scim_error(foreign, 400, "invalidValue")
        privileged = await company.patch("/Groups/501", json=patch(
            {"op": "Add", "path": "members", "value": members(own_id, admin_id)}))
        assert_scim_error(privileged, 403)
        # Removing someone it cannot see is no change at all (and no error to retry).
        stack.damstra.users[int(theirs_id)]["groups"].append({"id": 501})
        snapshot[int(theirs_id)] = list(stack.damstra.users[int(theirs_id)]["groups"])
        ignored = await company.patch("/Groups/501", json=patch(
            {"op": "Remove", "path": f'members[value eq "{theirs_id}"]'}))
        assert ignored.status_code == 204
        # A replacement never removes people the IdP cannot see.
        put = await company.put("/Groups/501", json={
            "schemas": [GROUP], "displayName": "Safety", "members": []})
        assert put.status_code == 200
        listed = (await company.get("/Groups/501")).json()
        assert "members" not in listed  # the subsidiary's member is not shown either
        assert {k: v["groups"] for k, v in stack.damstra.users.items()} == snapshot
    # An app that reads only the subsidiary's groups: the company's client may not.
    settings = mapped(stack.settings, damstra=("demo-saml",))
    async with gateway_with(stack, settings) as strict, scim(stack, "damstra",
                                                             gateway=strict) as company:
        before = lms_calls(stack, "damstra")
        untrusted = await company.patch("/Groups/501", json=patch(
            {"op": "Add", "path": "members", "value": members(own_id)}))
        assert_scim_error(untrusted, 403)
        pushed = await company.post("/Groups", json={"schemas": [GROUP], "displayName": "Staff"})
        assert_scim_error(pushed, 403)
        assert lms_calls(stack, "damstra") == before
        assert {k: v["groups"] for k, v in stack.damstra.users.items()} == snapshot


async def test_malformed_group_requests_change_nothing(stack: DemoStack, gateway: Any) -> None:
    async with scim(stack, "skyprep", gateway=gateway) as client:
        ada_id = await new_user(client, "ada@example.com")
        group_id = SAFETY_ID["skyprep"]
        before = lms_calls(stack, "skyprep")
        bad_patches: list[tuple[dict[str, Any], int, str | None]] = [
            (patch({"op": "add", "path": "members.display", "value": "x"}), 400, None),
            (patch({"op": "add", "path": f'members[value eq "{ada_id}"]', "value": []}),
             400, "invalidPath"),
            (patch({"op": "add", "path": "members", "value": [{"display": "x"}]}),
             400, "invalidValue"),
            (patch({"op": "add", "path": "members", "value": [{"value": 12}]}), 400, None),
            (patch({"op": "remove", "path": 'members[display eq "x"]'}), 400, "invalidFilter"),
            (patch({"op": "launch", "path": "members"}), 400, None),
            ({"Operations": "nope"}, 400, None),
        ]
        for body, status, scim_type in bad_patches:
            response = await client.patch(f"/Groups/{group_id}", json=body)
            assert_scim_error(response, status, scim_type)
        for bad_id in ("999", "n.%21%21", "x.bm90LWpzb24", "a" * 600, "..%2F..%2FUsers"):
            assert_scim_error(await client.get(f"/Groups/{bad_id}"), 404)
        for query in ('displayName co "Saf"', 'members eq "1"', "displayName eq"):
            assert_scim_error(await client.get("/Groups", params={"filter": query}), 400,
                              "invalidFilter")
        assert_scim_error(await client.post("/Groups", json={"schemas": [GROUP]}), 400)
        assert lms_calls(stack, "skyprep") == before
        assert not stack.skyprep.users["ada@example.com"].user_groups


async def test_discovery_lists_groups(stack: DemoStack, gateway: Any) -> None:
    async with scim(stack, "litmos", gateway=gateway) as client:
        types = (await client.get("/ResourceTypes")).json()["Resources"]
        assert [t["endpoint"] for t in types] == ["/Users", "/Groups"]
        assert "accepted and ignored" in types[1]["description"]
        assert (await client.get("/ResourceTypes/Group")).json()["schema"] == GROUP
        assert (await client.get(f"/Schemas/{GROUP}")).json()["id"] == GROUP
