"""Account lifecycle behaviour that differs per LMS (the shared part is in
tests/lifecycle_conformance.py): how a leaver looks in each LMS, vendor error bodies,
matching by employee number, renames that collide."""

from __future__ import annotations

import pytest

from gateway.errors import (
    AmbiguousAccount,
    BadRequest,
    Conflict,
    LmsAuthError,
    NotFound,
    PrivilegedAccount,
)
from gateway.sandbox.damstra import BAD_KEY, NOT_AUTHORISED
from tests.connector_conformance import profile
from tests.lifecycle_conformance import lifecycle

# -- SkyPrep ------------------------------------------------------------------------------


async def test_skyprep_leaver_keeps_the_account_but_its_sign_in_page_refuses() -> None:
    async with lifecycle("skyprep") as lc:
        joiner = profile(1)
        user = await lc.connector.create_user(joiner)
        await lc.connector.set_active(user.user_id, False)
        stored = lc.h.simulator.users[joiner.email]
        assert stored.access_end_date  # deactivated through the access window, not deleted
        signed = await lc.h.connector.sign_in(joiner, None, None)
        # First sign-in of a leaver: the app reactivates by default (as for Damstra's Not
        # Current); with reactivation off, see the conformance verify tests.
        assert signed.action.value == "reactivated"
        assert (await lc.h.open_link(signed.url)).status_code == 200
        await lc.connector.set_active(user.user_id, False)
        link = await lc.h.connector.sign_in(joiner, signed.account, None)  # cached: 1 call
        page = await lc.h.open_link(link.url)
        assert page.status_code == 403 and "access to this training site has ended" in page.text
        await lc.connector.set_active(user.user_id, True)
        assert stored.access_end_date == ""
        again = await lc.h.connector.sign_in(joiner, signed.account, None)
        assert (await lc.h.open_link(again.url)).status_code == 200


async def test_skyprep_matches_by_employee_number_through_card_no() -> None:
    async with lifecycle("skyprep", match_by="employee_number") as lc:
        user = await lc.connector.create_user(profile(2, employee_number="E-42"))
        before = lc.h.lms_calls()
        found = await lc.connector.find_user(profile(99, employee_number="E-42"))
        assert found is not None and found.user_id == user.user_id
        assert lc.h.simulator.calls.operations()[before:] == ["get_users"]
        assert await lc.connector.find_user(profile(99, employee_number="E-43")) is None
        with pytest.raises(BadRequest):
            await lc.connector.find_user(profile(3, employee_number=None))
        lc.h.simulator.add_user("other@example.com").card_no = "E-42"
        with pytest.raises(AmbiguousAccount):
            await lc.connector.find_user(profile(99, employee_number="E-42"))


async def test_skyprep_moving_to_a_taken_e_mail_is_a_conflict_and_changes_nothing() -> None:
    async with lifecycle("skyprep") as lc:
        user = await lc.connector.create_user(profile(4))
        await lc.connector.create_user(profile(5))
        before = lc.h.snapshot()
        with pytest.raises(Conflict):
            await lc.connector.update_user(user.user_id, profile(4, email="employee5@example.com"))
        assert lc.h.snapshot() == before


async def test_skyprep_role_from_the_apps_mapping_is_manageable() -> None:
    """An account whose role the app's own role_map grants is not 'privileged' for SCIM."""
    async with lifecycle("skyprep") as lc:
        lc.h.simulator.add_user("coach@example.com", role="instructor")
        with pytest.raises(PrivilegedAccount):
            await lc.connector.find_user(profile(6, email="coach@example.com"))
        lc.h.connector.app.role_map["coaches"] = "instructor"
        found = await lc.connector.find_user(profile(6, email="coach@example.com"))
        assert found is not None


# -- Damstra ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "body"), [(401, BAD_KEY), (403, NOT_AUTHORISED)])
async def test_damstra_documented_credential_errors_are_auth_errors(
    status: int, body: dict[str, object]
) -> None:
    async with lifecycle("damstra") as lc:
        user = await lc.connector.create_user(profile(1))
        for call in (lambda: lc.connector.get_user(user.user_id),
                     lambda: lc.connector.set_active(user.user_id, False),
                     lambda: lc.connector.list_users(0, 10)):
            lc.h.simulator.faults.fail_next(status, body)
            with pytest.raises(LmsAuthError) as info:
                await call()
            assert str(body["internalCode"]) in str(info.value)
        assert lc.view(user.user_id).active


async def test_damstra_leaver_is_not_current_and_its_link_is_refused() -> None:
    async with lifecycle("damstra", reactivate=False) as lc:
        joiner = profile(2)
        user = await lc.connector.create_user(joiner)
        signed = await lc.h.connector.sign_in(joiner, None, None)
        await lc.connector.set_active(user.user_id, False)
        assert lc.h.simulator.users[int(user.user_id)]["clientStatusId"] == 57
        page = await lc.h.open_link(signed.url)
        assert page.status_code == 403 and "not current" in page.text


async def test_damstra_create_is_a_conflict_when_the_employee_number_exists() -> None:
    async with lifecycle("damstra", match_by="employee_number") as lc:
        lc.h.simulator.add_user("Ada", "Old", "old@example.com", employee_number="E-7")
        with pytest.raises(Conflict):
            await lc.connector.create_user(profile(3, employee_number="E-7"))
        assert lc.h.account_count() == 1
        found = await lc.connector.find_user(profile(3, employee_number="E-7"))
        assert found is not None and found.email == "old@example.com"


async def test_damstra_moving_to_a_taken_e_mail_is_a_conflict_and_changes_nothing() -> None:
    async with lifecycle("damstra") as lc:
        user = await lc.connector.create_user(profile(4))
        await lc.connector.create_user(profile(5))
        before = lc.h.snapshot()
        with pytest.raises(Conflict):
            await lc.connector.update_user(user.user_id, profile(4, email="employee5@example.com"))
        assert lc.h.snapshot() == before


# -- Litmos -------------------------------------------------------------------------------


async def test_litmos_id_lookup_never_answers_a_username() -> None:
    async with lifecycle("litmos") as lc:
        lc.h.simulator.add_user("ada", "Ada", "Lovelace", "ada@example.com")
        # GET /users/{x} also matches usernames: a "user id" that is a username is unknown.
        assert lc.h.simulator.by_username("ada") is not None
        with pytest.raises(NotFound):
            await lc.connector.get_user("ada")
        # And a username that equals another user's id does not shadow that user.
        user = await lc.connector.create_user(profile(1))
        lc.h.simulator.add_user(user.user_id, "Eve", "Impostor", "eve@example.com")
        got = await lc.connector.get_user(user.user_id)
        assert got.email == "employee1@example.com"


async def test_litmos_renaming_to_a_taken_username_is_a_conflict() -> None:
    async with lifecycle("litmos") as lc:
        user = await lc.connector.create_user(profile(2))
        await lc.connector.create_user(profile(3))
        before = lc.h.snapshot()
        with pytest.raises(Conflict):
            await lc.connector.update_user(user.user_id,
                                           profile(2, username="employee3@example.com"))
        assert lc.h.snapshot() == before


async def test_litmos_list_uses_documented_paging() -> None:
    async with lifecycle("litmos") as lc:
        for n in range(4):
            await lc.connector.create_user(profile(n))
        page, total = await lc.connector.list_users(1, 2)
        assert total is None and [u.username for u in page] == [
            "employee1@example.com", "employee2@example.com"]
        assert all(u.groups == () for u in page)  # the user list carries no teams
