"""SCIM 2.0 Users over the demo's real LMS simulators: discovery, create/get/list/filter,
PUT/PATCH/DELETE semantics, credentials (401/403), IdP domain authority (403), malformed
bodies (400, nothing changed at the LMS), metrics and audit events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import date

import pytest

from gateway.sandbox.demo import DemoStack
from tests.scim_support import (
    APPS,
    ENTERPRISE,
    ERROR,
    entra_user,
    gateway_with,
    okta_user,
    patch,
    replace_idp_scim,
    roomy_demo,
    scim,
    user_filter,
)


@pytest.fixture
async def stack() -> AsyncIterator[DemoStack]:
    async with roomy_demo() as demo:
        yield demo


def lms_calls(stack: DemoStack, app: str) -> int:
    simulator = {"skyprep": stack.skyprep, "damstra": stack.damstra, "litmos": stack.litmos}[app]
    return simulator.calls.count()


def lms_active(stack: DemoStack, app: str, email: str) -> bool:
    """What the LMS itself says (not the gateway): the account exists and is it active?"""
    if app == "skyprep":
        user = stack.skyprep.users[email.lower()]
        return not user.access_ended(date.today())
    if app == "damstra":
        (found,) = [u for u in stack.damstra.users.values() if u["emailAddress"] == email]
        return bool(found["active"])
    (litmos,) = [u for u in stack.litmos.users.values() if u.Email == email]
    return bool(litmos.Active)


def assert_scim_error(response: object, status: int, scim_type: str | None = None) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/scim+json")  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["schemas"] == [ERROR] and body["status"] == str(status)
    if scim_type is not None:
        assert body["scimType"] == scim_type


async def test_discovery_documents(stack: DemoStack) -> None:
    async with scim(stack, "litmos") as client:
        config = await client.get("/ServiceProviderConfig")
        assert config.status_code == 200
        assert config.headers["content-type"].startswith("application/scim+json")
        assert config.json()["patch"]["supported"] is True
        assert config.json()["bulk"]["supported"] is False
        types = (await client.get("/ResourceTypes")).json()
        assert [t["endpoint"] for t in types["Resources"]] == ["/Users", "/Groups"]
        assert types["Resources"][0]["schemaExtensions"][0]["schema"] == ENTERPRISE
        user_type = await client.get("/ResourceTypes/User")
        assert user_type.json()["name"] == "User"
        schemas = (await client.get("/Schemas")).json()
        assert {s["id"] for s in schemas["Resources"]} >= {ENTERPRISE}
        assert (await client.get(f"/Schemas/{ENTERPRISE}")).json()["id"] == ENTERPRISE
        assert_scim_error(await client.get("/Bulk"), 404)


@pytest.mark.parametrize("app", APPS)
async def test_create_get_filter_update_deactivate(stack: DemoStack, app: str) -> None:
    email = "new.hire@example.com"
    async with scim(stack, app) as client:
        assert (await client.get("/Users", params=user_filter(email))).json()["totalResults"] == 0
        created = await client.post("/Users", json=entra_user(email, "New", "Hire", number="77"))
        assert created.status_code == 201, created.text
        user = created.json()
        assert created.headers["location"].endswith(f"/Users/{user['id']}")
        assert user["userName"] == email and user["active"] is True
        assert user["name"] == {"givenName": "New", "familyName": "Hire"}
        if app != "litmos":  # Litmos users have no employee number field
            assert user[ENTERPRISE]["employeeNumber"] == "77"
        assert lms_active(stack, app, email)

        # Entra retries a create: 409 uniqueness, then finds the account by filter.
        again = await client.post("/Users", json=entra_user(email, "New", "Hire"))
        assert_scim_error(again, 409, "uniqueness")
        for query in (f'userName eq "{email.upper()}"', f'emails.value eq "{email}"',
                      f'emails[type eq "work"].value eq "{email}"', f'id eq "{user["id"]}"'):
            listed = (await client.get("/Users", params={"filter": query})).json()
            assert listed["totalResults"] == 1, query
            assert listed["Resources"][0]["id"] == user["id"]
        unknown = await client.get("/Users", params={"filter": 'externalId eq "new.hire"'})
        assert unknown.json()["totalResults"] == 0  # never stored: IdPs match by userName

        fetched = await client.get(f"/Users/{user['id']}")
        assert fetched.json()["emails"][0]["value"] == email

        renamed = await client.patch(f"/Users/{user['id']}", json=patch(
            {"op": "Replace", "path": "name.familyName", "value": "Hire-Smith"}))
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"]["familyName"] == "Hire-Smith"
        assert (await client.get(f"/Users/{user['id']}")).json()["name"]["familyName"] == (
            "Hire-Smith")

        # DELETE deactivates, never deletes: the account (and its training) stays.
        gone = await client.delete(f"/Users/{user['id']}")
        assert gone.status_code == 204
        assert not lms_active(stack, app, email)
        after = await client.get(f"/Users/{user['id']}")
        assert after.status_code == 200 and after.json()["active"] is False
        assert (await client.delete(f"/Users/{user['id']}")).status_code == 204  # repeatable

        back = await client.patch(f"/Users/{user['id']}", json=patch(
            {"op": "replace", "value": {"active": True}}))
        assert back.json()["active"] is True and lms_active(stack, app, email)


async def test_okta_put_and_patch_active_only(stack: DemoStack) -> None:
    email = "okta.person@example.com"
    async with scim(stack, "damstra") as client:
        created = (await client.post("/Users", json=okta_user(email, "Okta", "Person"))).json()
        user_id = created["id"]
        # Okta deactivates with a PATCH carrying only active, as a boolean.
        off = await client.patch(f"/Users/{user_id}", json=patch(
            {"op": "replace", "value": {"active": False}}))
        assert off.json()["active"] is False and not lms_active(stack, "damstra", email)
        # ... and updates with PUT of the whole user (id and meta included).
        full = {**okta_user(email, "Okta", "Renamed"), "id": user_id}
        put = await client.put(f"/Users/{user_id}", json=full)
        assert put.status_code == 200, put.text
        assert put.json()["name"]["familyName"] == "Renamed" and put.json()["active"] is True
        assert lms_active(stack, "damstra", email)
        # The same PUT again changes nothing at the LMS beyond reading the account.
        before = lms_calls(stack, "damstra")
        assert (await client.put(f"/Users/{user_id}", json=full)).status_code == 200
        assert lms_calls(stack, "damstra") - before == 1


async def test_paging_lists_only_the_idps_people(stack: DemoStack) -> None:
    async with scim(stack, "litmos") as client:
        for i in range(3):
            response = await client.post(
                "/Users", json=entra_user(f"p{i}@example.com", "P", f"Person{i}"))
            assert response.status_code == 201
    async with scim(stack, "litmos", "demo-saml") as client:
        response = await client.post("/Users", json=entra_user("s@example.org", "S", "Sub"))
        assert response.status_code == 201
        listed = (await client.get("/Users", params={"startIndex": 1, "count": 50})).json()
        assert [u["userName"] for u in listed["Resources"]] == ["s@example.org"]
    async with scim(stack, "litmos") as client:
        page = (await client.get("/Users", params={"startIndex": 2, "count": 1})).json()
        assert page["startIndex"] == 2 and page["itemsPerPage"] <= 1
        assert_scim_error(await client.get("/Users", params={"count": "many"}), 400,
                          "invalidValue")


async def test_credentials(stack: DemoStack) -> None:
    async with scim(stack, "skyprep", token="") as client:
        missing = await client.get("/Users")
        assert_scim_error(missing, 401)
        assert missing.headers["www-authenticate"].startswith("Bearer")
    async with scim(stack, "skyprep", token="not-the-demo-scim-token") as client:
        assert_scim_error(await client.get("/ServiceProviderConfig"), 401)
    async with scim(stack, "no-such-app") as client:
        assert_scim_error(await client.get("/Users"), 403)  # not scoped: before existence
    # An IdP whose SCIM client may provision SkyPrep only: Damstra is refused.
    settings = replace_idp_scim(stack.settings, "demo-saml", apps=("skyprep",))
    async with gateway_with(stack, settings) as gateway:
        async with scim(stack, "damstra", "demo-saml", gateway=gateway) as client:
            before = lms_calls(stack, "damstra")
            refused = await client.post("/Users", json=entra_user("x@example.org", "X", "Y"))
            assert_scim_error(refused, 403)
            assert lms_calls(stack, "damstra") == before
        async with scim(stack, "skyprep", "demo-saml", gateway=gateway) as client:
            assert (await client.get("/Users", params=user_filter("x@example.org"))
                    ).status_code == 200


async def test_idp_manages_only_its_own_domains(stack: DemoStack) -> None:
    async with scim(stack, "damstra") as company:
        created = await company.post("/Users", json=entra_user("own@example.com", "O", "Wn"))
        user_id = created.json()["id"]
    async with scim(stack, "damstra", "demo-saml") as subsidiary:
        before = lms_calls(stack, "damstra")
        foreign = await subsidiary.post("/Users", json=entra_user("x@example.com", "X", "Y"))
        assert_scim_error(foreign, 403)
        lookalike = await subsidiary.post(
            "/Users", json=entra_user("x@evil.example.org", "X", "Y"))
        assert_scim_error(lookalike, 403)
        assert lms_calls(stack, "damstra") == before  # refused before any LMS call
        # The other IdP's people are invisible to it: 404, nothing changed.
        assert_scim_error(await subsidiary.get(f"/Users/{user_id}"), 404)
        assert_scim_error(await subsidiary.delete(f"/Users/{user_id}"), 404)
        assert lms_active(stack, "damstra", "own@example.com")
        listed = await subsidiary.get("/Users", params=user_filter("own@example.com"))
        assert listed.json()["totalResults"] == 0
    async with scim(stack, "damstra") as company:
        # Moving one of its people into another IdP's domain is refused too.
        moved = await company.patch(f"/Users/{user_id}", json=patch(
            {"op": "replace", "path": "emails[type eq \"work\"].value",
             "value": "own@example.org"}))
        assert_scim_error(moved, 403)
        assert (await company.get(f"/Users/{user_id}")).json()["userName"] == "own@example.com"


async def test_privileged_accounts_are_refused(stack: DemoStack) -> None:
    admin = stack.skyprep.add_user("boss@example.com", "Boss", "Admin")
    stack.skyprep.users["boss@example.com"].role = "admin"
    async with scim(stack, "skyprep") as client:
        refused = await client.patch(f"/Users/{admin}", json=patch(
            {"op": "replace", "path": "active", "value": False}))
        assert refused.status_code in (403, 404), refused.text
        assert lms_active(stack, "skyprep", "boss@example.com")


MALFORMED: list[tuple[str, str, object, str | None]] = [
    ("POST", "/Users", "not json", "invalidSyntax"),
    ("POST", "/Users", ["a", "list"], "invalidSyntax"),
    ("POST", "/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}, None),
    ("POST", "/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": "a@example.com", "emails": [{"value": "not an address"}]},
     None),
    ("POST", "/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": "a@example.com", "active": "perhaps"}, None),
    ("PATCH", "/Users/{id}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                              "Operations": [{"op": "explode", "path": "active"}]},
     "invalidValue"),
    ("PATCH", "/Users/{id}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                              "Operations": []}, None),
    ("PATCH", "/Users/{id}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                              "Operations": [{"op": "replace", "path": "id", "value": "9"}]},
     None),
    ("PUT", "/Users/{id}", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}, None),
]


@pytest.mark.parametrize(("method", "path", "body", "scim_type"), MALFORMED)
async def test_malformed_bodies_change_nothing(
    stack: DemoStack, method: str, path: str, body: object, scim_type: str | None
) -> None:
    async with scim(stack, "litmos") as client:
        created = (await client.post("/Users", json=entra_user("m@example.com", "M", "M"))).json()
        before = stack.litmos.calls.count(method="POST") + stack.litmos.calls.count(method="PUT")
        content = body if isinstance(body, str) else None
        response = await client.request(
            method, path.format(id=created["id"]), content=content,
            json=None if content is not None else body)
        assert 400 <= response.status_code < 500, response.text
        assert_scim_error(response, response.status_code, scim_type)
        writes = stack.litmos.calls.count(method="POST") + stack.litmos.calls.count(method="PUT")
        assert writes == before  # nothing written at the LMS
        user = (await client.get(f"/Users/{created['id']}")).json()
        assert user["active"] is True and user["name"]["givenName"] == "M"


async def test_bad_filters_and_ids(stack: DemoStack) -> None:
    async with scim(stack, "skyprep") as client:
        for query in ('userName sw "a"', 'title eq "x"', 'userName eq "a" or userName eq "b"',
                      "userName eq", 'emails[type eq "home"].value eq "a@example.com"'):
            response = await client.get("/Users", params={"filter": query})
            assert_scim_error(response, 400, "invalidFilter")
        assert_scim_error(await client.get("/Users/..%2f..%2fadmin"), 404)
        assert_scim_error(await client.get("/Users/999999"), 404)
        too_big = await client.post("/Users", content=b"{" + b" " * 70_000 + b"}")
        assert_scim_error(too_big, 413)
        wrong_type = await client.post("/Users", content=b"{}",
                                       headers={"Content-Type": "text/plain"})
        assert_scim_error(wrong_type, 400, "invalidSyntax")


async def test_metrics_and_audit(stack: DemoStack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    async with scim(stack, "damstra") as client:
        created = (await client.post("/Users", json=entra_user("a.b@example.com", "A", "B"))
                   ).json()
        await client.delete(f"/Users/{created['id']}")
        await client.get("/Users", headers={"Authorization": "Bearer wrong-credential-123"})
    events = [getattr(r, "fields", {}) for r in caplog.records if r.name == "gateway.audit"]
    scim_events = [e for e in events if e.get("action") in ("create", "deactivate")]
    assert [e["action"] for e in scim_events] == ["create", "deactivate"]
    for event in scim_events:
        assert event["idp"] == "demo-oidc" and event["app"] == "damstra"
        assert event["lms_user_id"] == created["id"]
    assert "a.b@example.com" not in caplog.text and "demo-scim-token" not in caplog.text
    metrics = stack.gateway_app.state.services.metrics.registry
    value = metrics.get_sample_value(
        "gateway_scim_requests_total", {"app": "damstra", "op": "create", "status": "201"})
    assert value == 1.0
    assert metrics.get_sample_value(
        "gateway_scim_requests_total", {"app": "damstra", "op": "list", "status": "401"}) == 1.0
