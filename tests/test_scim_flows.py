"""Joiner, mover, leaver, returner end to end, as Entra ID and Okta send them: SCIM creates
the account, the employee signs in through the demo IdP, SCIM renames them, deactivates
them (the next sign-in is refused with a clear page; the LMS keeps the account, inactive),
reactivates them, and they sign in again."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import pytest

from gateway.sandbox.demo import DemoStack
from tests.flows.agent import sign_in
from tests.scim_support import entra_user, okta_user, patch, roomy_demo, scim, user_filter

ALICE = "alice.anderson@example.com"  # the demo OpenID Provider's emp-1001


def lms_account(stack: DemoStack, app: str) -> tuple[bool, str]:
    """(active, family name) of Alice's account as the LMS itself holds it."""
    if app == "skyprep":
        user = stack.skyprep.users[ALICE]
        return not user.access_ended(date.today()), user.last_name
    if app == "damstra":
        (found,) = [u for u in stack.damstra.users.values() if u["emailAddress"] == ALICE]
        return bool(found["active"]), str(found["lastName"])
    (litmos,) = [u for u in stack.litmos.users.values() if u.Email == ALICE]
    return bool(litmos.Active), litmos.LastName


async def signs_in(stack: DemoStack, app: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20) as browser:
        return await sign_in(browser, f"{stack.gateway_url}/login/{app}?idp=demo-oidc",
                             "emp-1001")


def deactivation(shape: str) -> dict[str, Any]:
    if shape == "entra":  # Entra: capitalised op, string boolean, path given
        return patch({"op": "Replace", "path": "active", "value": "False"})
    return patch({"op": "replace", "value": {"active": False}})  # Okta


def reactivation(shape: str) -> dict[str, Any]:
    if shape == "entra":
        return patch({"op": "Replace", "path": "active", "value": "True"})
    return patch({"op": "replace", "value": {"active": True}})


@pytest.mark.parametrize(("app", "shape"), [
    ("skyprep", "entra"), ("damstra", "entra"), ("litmos", "entra"),
    ("skyprep", "okta"), ("damstra", "okta"), ("litmos", "okta"),
])
async def test_joiner_mover_leaver_returner(app: str, shape: str) -> None:
    async with roomy_demo() as stack, scim(stack, app) as client:
        # Joiner: the IdP looks the person up, finds nobody, creates them.
        assert (await client.get("/Users", params=user_filter(ALICE))).json()[
            "totalResults"] == 0
        body = (entra_user(ALICE, "Alice", "Anderson", number="1001") if shape == "entra"
                else okta_user(ALICE, "Alice", "Anderson"))
        created = await client.post("/Users", json=body)
        assert created.status_code == 201, created.text
        user_id = created.json()["id"]
        page = await signs_in(stack, app)
        assert page.status_code == 200, page.text[:300]

        # Mover: renamed at the IdP.
        if shape == "entra":
            rename = patch({"op": "Replace", "path": "name.familyName", "value": "Anders"},
                           {"op": "Replace", "path": "displayName", "value": "Alice Anders"})
            moved = await client.patch(f"/Users/{user_id}", json=rename)
        else:
            moved = await client.put(f"/Users/{user_id}", json={
                **okta_user(ALICE, "Alice", "Anders"), "id": user_id})
        assert moved.status_code == 200, moved.text
        assert lms_account(stack, app) == (True, "Anders")

        # Leaver: deactivated; the account stays at the LMS, inactive; sign-in is refused.
        off = await client.patch(f"/Users/{user_id}", json=deactivation(shape))
        assert off.status_code == 200 and off.json()["active"] is False
        assert lms_account(stack, app) == (False, "Anders")
        refused = await signs_in(stack, app)
        assert refused.status_code == 403, refused.text[:300]
        assert "deactivated" in refused.text
        assert lms_account(stack, app)[0] is False  # the sign-in did not reactivate it

        # Returner: reactivated by the IdP, signs in again.
        on = await client.patch(f"/Users/{user_id}", json=reactivation(shape))
        assert on.status_code == 200 and on.json()["active"] is True
        again = await signs_in(stack, app)
        assert again.status_code == 200, again.text[:300]
        # Active again (Damstra's demo app updates names from the sign-in: the demo IdP's
        # directory still says "Anderson", so the name is not checked here).
        assert lms_account(stack, app)[0] is True
