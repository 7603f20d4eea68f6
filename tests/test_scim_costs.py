"""LMS calls per SCIM operation, per connector, measured through the gateway against each
LMS simulator: asserted exactly (:data:`CALLS`) and printed as the table issue 14's closing
note quotes (``pytest -s tests/test_scim_costs.py``). Writes reuse the account the service
read for its trust checks (``current=``), so none reads it twice."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import httpx

from gateway.sandbox.demo import DemoStack
from tests.scim_support import APPS, entra_user, gateway_with, patch, roomy_demo, scim, user_filter
from tests.test_scim import lms_calls
from tests.test_scim_groups import GROUP, SAFETY_ID, mapped

OPERATIONS = (
    "GET /Users?filter userName (absent)", "POST /Users", "GET /Users?filter userName",
    "GET /Users/{id}", "PATCH name", "PUT unchanged", "PATCH active=false",
    "DELETE (already inactive)", "PATCH active=true", "GET /Users (a page)",
    "GET /Groups?filter displayName", "POST /Groups", "PATCH Group add 1 member",
    "PATCH Group add (already in)", "GET /Groups/{id} (members)",
    "PATCH Group remove 1 member", "PUT Group (1 member more)", "DELETE /Groups/{id}",
)
# skyprep, damstra, litmos
_TABLE = {
    "GET /Users?filter userName (absent)": (1, 1, 1),
    "POST /Users": (2, 3, 2),
    "GET /Users?filter userName": (1, 1, 2),
    "GET /Users/{id}": (1, 1, 2),
    "PATCH name": (2, 2, 3),
    "PUT unchanged": (1, 1, 2),
    "PATCH active=false": (2, 2, 3),
    "DELETE (already inactive)": (1, 1, 2),
    "PATCH active=true": (2, 2, 3),
    "GET /Users (a page)": (1, 1, 1),
    "GET /Groups?filter displayName": (0, 0, 0),
    "POST /Groups": (0, 0, 0),
    "PATCH Group add 1 member": (2, 2, 3),
    "PATCH Group add (already in)": (1, 1, 2),
    "GET /Groups/{id} (members)": (2, 1, 1),
    "PATCH Group remove 1 member": (2, 2, 3),
    "PUT Group (1 member more)": (4, 3, 4),
    "DELETE /Groups/{id}": (0, 0, 0),
}
CALLS = {app: {op: row[i] for op, row in _TABLE.items()} for i, app in enumerate(APPS)}


async def _measure(stack: DemoStack, app: str, client: httpx.AsyncClient) -> dict[str, int]:
    spent: dict[str, int] = {}

    async def run(label: str, call: Awaitable[httpx.Response]) -> Any:
        before = lms_calls(stack, app)
        response = await call
        assert response.status_code < 300, (label, response.text)
        spent[label] = lms_calls(stack, app) - before
        return response.json() if response.content else None

    ada, bob = "ada@example.com", "bob@example.com"
    body = entra_user(ada, "Ada", "Lovelace", number="7")
    await run("GET /Users?filter userName (absent)", client.get("/Users",
                                                                 params=user_filter(ada)))
    user = await run("POST /Users", client.post("/Users", json=body))
    user_id = user["id"]
    await run("GET /Users?filter userName", client.get("/Users", params=user_filter(ada)))
    await run("GET /Users/{id}", client.get(f"/Users/{user_id}"))
    await run("PATCH name", client.patch(f"/Users/{user_id}", json=patch(
        {"op": "Replace", "path": "name.familyName", "value": "Byron"})))
    current = {**body, "name": {"givenName": "Ada", "familyName": "Byron"}}
    await run("PUT unchanged", client.put(f"/Users/{user_id}", json=current))
    await run("PATCH active=false", client.patch(f"/Users/{user_id}", json=patch(
        {"op": "Replace", "path": "active", "value": "False"})))
    deleted = await client.delete(f"/Users/{user_id}")  # measured by hand: no JSON body
    before = lms_calls(stack, app)
    assert (await client.delete(f"/Users/{user_id}")).status_code == deleted.status_code == 204
    spent["DELETE (already inactive)"] = lms_calls(stack, app) - before
    await run("PATCH active=true", client.patch(f"/Users/{user_id}", json=patch(
        {"op": "Replace", "path": "active", "value": "True"})))
    await run("GET /Users (a page)", client.get("/Users", params={"count": 10}))

    bob_id = (await client.post("/Users", json=entra_user(bob, "Bob", "Brown"))).json()["id"]
    group_id = SAFETY_ID[app]
    await run("GET /Groups?filter displayName", client.get("/Groups", params={
        "filter": 'displayName eq "Safety"', "excludedAttributes": "members"}))
    await run("POST /Groups", client.post("/Groups", json={
        "schemas": [GROUP], "displayName": "Safety"}))
    add = patch({"op": "Add", "path": "members", "value": [{"value": user_id}]})
    await run("PATCH Group add 1 member", client.patch(f"/Groups/{group_id}", json=add))
    await run("PATCH Group add (already in)", client.patch(f"/Groups/{group_id}", json=add))
    read = await run("GET /Groups/{id} (members)", client.get(f"/Groups/{group_id}"))
    assert [m["value"] for m in read["members"]] == [user_id]
    await run("PATCH Group remove 1 member", client.patch(f"/Groups/{group_id}", json=patch(
        {"op": "Remove", "path": f'members[value eq "{user_id}"]'})))
    await client.patch(f"/Groups/{group_id}", json=add)
    await run("PUT Group (1 member more)", client.put(f"/Groups/{group_id}", json={
        "schemas": [GROUP], "displayName": "Safety",
        "members": [{"value": user_id}, {"value": bob_id}]}))
    before = lms_calls(stack, app)
    assert (await client.delete(f"/Groups/{group_id}")).status_code == 204
    spent["DELETE /Groups/{id}"] = lms_calls(stack, app) - before
    return spent


async def test_lms_calls_per_scim_operation() -> None:
    measured: dict[str, dict[str, int]] = {}
    for app in APPS:
        async with roomy_demo() as stack, gateway_with(stack, mapped(stack.settings)) as gw:
            async with scim(stack, app, gateway=gw) as client:
                measured[app] = await _measure(stack, app, client)
    width = max(len(op) for op in OPERATIONS)
    print("\nLMS calls per SCIM operation (through the gateway, LMS simulators):")
    print(f"  {'SCIM operation':<{width}}  " + "  ".join(f"{a:>7}" for a in APPS))
    for op in OPERATIONS:
        print(f"  {op:<{width}}  " + "  ".join(f"{measured[a][op]:>7}" for a in APPS))
    assert measured == CALLS
