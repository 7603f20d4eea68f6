"""Litmos account lifecycle (SCIM joiners, movers, leavers) and the user rules sign-in
shares with it: the LifecycleCapable half of :class:`gateway.connectors.litmos.LitmosConnector`,
kept here so each file stays small.

Contract: the Litmos "Developer API" overview (users ``GET``/``POST``/``PUT`` with
``Active``; list paging with ``start`` and ``limit`` 1-1000; 404 unknown, 409 exists) and
Litmos' public API pages for teams, which the overview only names ("Add & Remove Users from a
Team"): ``POST /teams/{id}/users``, ``DELETE /teams/{id}/users/{user-id}`` and
``GET /users/{id}/teams``.

* ``LmsUser.user_id`` is Litmos' opaque ``Id``; ``groups`` are team ids (what ``group_map``
  maps to, as at sign-in), read with one ``GET /users/{id}/teams`` for a single user. List
  pages carry no teams (Litmos' user list has none; one call per user would spend the
  budget), so their ``groups`` are empty.
* ``GET /users/{x}`` also answers usernames: a lookup by id only takes an answer whose
  ``Id`` is the id asked for, so a username that equals an id never selects another user.
* Matching: Litmos accounts are found by ``UserName`` (the app's ``username`` rule), exactly
  as sign-in finds them; Litmos has no employee-number field in the documented user.
* Leavers: ``PUT`` with ``Active: false`` (the whole user goes back, as Litmos replaces it).
* Teams: updates add the missing teams (the app's ``teams`` and the profile's) and remove
  the user from teams the app manages (``group_map`` values) that the profile no longer has.
* The user list gives no total: ``list_users`` answers None for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.connectors._accounts import refuse_privileged
from gateway.connectors._lifecycle import MAX_PAGE, check_page, mappable_roles
from gateway.connectors.base import LmsUser
from gateway.errors import AccountGone, Conflict, ConnectorError, NotFound
from gateway.identity import Profile
from gateway.settings import AppSettings, LitmosSettings

# Litmos ids are short alphanumeric strings; anything else from the LMS is not put in a path.
LITMOS_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NO_USER = "litmos: no such user"


def level(access_level: str) -> str:
    """An AccessLevel compared loosely: the document writes "TeamLeader" and "Account Owner",
    the API's JSON ``Team_Leader`` / ``Account_Owner``."""
    return "".join(c for c in access_level.lower() if c.isascii() and c.isalnum())


def checked_user(body: Any, operation: str) -> dict[str, Any]:
    """A user object from Litmos, with an Id we are willing to put in a URL path."""
    if not isinstance(body, dict):
        raise ConnectorError(f"{operation}: Litmos answer is not a user object")
    user_id = body.get("Id")
    if not isinstance(user_id, str) or not LITMOS_ID.fullmatch(user_id):
        raise ConnectorError(f"{operation}: Litmos user id has an unexpected form")
    return body


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class _Read:
    """``LmsUser.source`` of Litmos accounts: the user object and its team ids as read (or
    written since)."""

    user: dict[str, Any]
    teams: list[str]


def _lms_user(user: dict[str, Any], teams: list[str] | None) -> LmsUser:
    """``teams`` None: not read (list pages), so the LmsUser cannot stand for a read."""
    return LmsUser(
        user_id=str(user["Id"]), username=_text(user.get("UserName")),
        email=_text(user.get("Email")), first_name=_text(user.get("FirstName")),
        last_name=_text(user.get("LastName")), active=user.get("Active") is not False,
        groups=tuple(teams or ()),
        source=_Read(dict(user), list(teams)) if teams is not None else None,
    )


class LitmosLifecycle:
    """LifecycleCapable for Litmos (mixed into LitmosConnector)."""

    app_name: str
    app: AppSettings
    settings: LitmosSettings

    if TYPE_CHECKING:
        async def _call(
            self, operation: str, method: str, path: str, *, idempotent: bool,
            ok: tuple[int, ...] = (200,), passthrough: tuple[int, ...] = (),
            params: dict[str, str] | None = None, body: Any = None,
        ) -> tuple[int, Any]: ...

        async def _get_user(self, operation: str, key: str) -> dict[str, Any] | None: ...

        async def _find(self, username: str) -> dict[str, Any] | None: ...

        async def _put(self, user: dict[str, Any], changes: dict[str, Any],
                       operation: str) -> None: ...

    # -- shared with sign-in -------------------------------------------------------------

    def new_user_body(self, profile: Profile, *, active: bool = True) -> dict[str, Any]:
        """The ``POST /users`` body for a profile."""
        return {
            "UserName": profile.username,
            "FirstName": profile.first_name,
            "LastName": profile.last_name,
            "Email": profile.email,
            "AccessLevel": profile.role or "Learner",
            "DisableMessages": True,
            "Active": active,
            "SkipFirstLogin": True,
            "IsCustomUsername": profile.username.lower() != profile.email.lower(),
        }

    async def _join_teams(self, user: dict[str, Any], team_ids: list[str]) -> None:
        """``POST /teams/{id}/users`` for each team (one call each)."""
        for team_id in team_ids:
            if not LITMOS_ID.fullmatch(team_id):
                raise ConnectorError("Litmos team ids must be short alphanumeric ids")
            member = {"Id": user["Id"], "UserName": user.get("UserName", ""),
                      "FirstName": user.get("FirstName", ""), "LastName": user.get("LastName", "")}
            await self._call("add_team_user", "POST", f"/teams/{team_id}/users",
                             idempotent=True, ok=(201, 200), body=[member])

    # -- helpers -------------------------------------------------------------------------

    def _privileged(self, user: dict[str, Any]) -> str | None:
        allowed = {"learner"} | {level(r) for r in mappable_roles(self.app)}
        value = user.get("AccessLevel")
        if isinstance(value, str) and level(value) in allowed:
            return None
        return value if isinstance(value, str) else "unreadable AccessLevel"

    def _manageable(self, user: dict[str, Any]) -> None:
        why = self._privileged(user)
        if why is not None:
            refuse_privileged(self.app_name, self.app, lms_user_id=str(user["Id"]), why=why)

    async def _user(self, user_id: str) -> dict[str, Any]:
        if not LITMOS_ID.fullmatch(user_id):
            raise NotFound(_NO_USER)
        user = await self._get_user("get_user", user_id)
        if user is None or user.get("Id") != user_id:
            raise NotFound(_NO_USER)
        self._manageable(user)
        return user

    async def _teams(self, user_id: str) -> list[str]:
        status, body = await self._call("get_user_teams", "GET", f"/users/{user_id}/teams",
                                        idempotent=True, passthrough=(404,))
        if status == 404:
            raise NotFound(_NO_USER)
        if not isinstance(body, list):
            raise ConnectorError("get_user_teams: Litmos answer is not a list")
        ids = [t.get("Id") for t in body if isinstance(t, dict)]
        return [t for t in ids if isinstance(t, str) and LITMOS_ID.fullmatch(t)]

    async def _read(self, user_id: str,
                    current: LmsUser | None) -> tuple[dict[str, Any], list[str]]:
        """The user and its teams: from ``current`` when this connector returned it for
        ``user_id`` (no call; privileged accounts still refused), else read (2 calls)."""
        if current is not None and current.user_id == user_id and isinstance(
                current.source, _Read) and current.source.user.get("Id") == user_id:
            user = dict(current.source.user)
            self._manageable(user)
            return user, list(current.source.teams)
        user = await self._user(user_id)
        return user, await self._teams(user_id)

    async def _put_user(self, user: dict[str, Any], changes: dict[str, Any],
                        operation: str) -> None:
        try:
            await self._put(user, changes, operation)
        except AccountGone:
            raise NotFound(_NO_USER) from None

    # -- LifecycleCapable ----------------------------------------------------------------

    async def get_user(self, user_id: str) -> LmsUser:
        """``GET /users/{id}`` and ``GET /users/{id}/teams`` (2 calls)."""
        user = await self._user(user_id)
        return _lms_user(user, await self._teams(user_id))

    async def find_user(self, profile: Profile) -> LmsUser | None:
        """The user whose UserName is the profile's (as sign-in finds it: 1 call, 2 when
        the username is not a safe path segment or equals another user's id), plus its
        teams (1 call)."""
        user = await self._find(profile.username)
        if user is None:
            return None
        self._manageable(user)
        return _lms_user(user, await self._teams(str(user["Id"])))

    async def list_users(self, start: int, count: int) -> tuple[list[LmsUser], int | None]:
        """``GET /users?start=&limit=`` (1 call; Litmos gives no total). Privileged
        accounts are left out unless the app adopts them."""
        count = check_page(start, count)
        if count == 0:
            return [], None
        _, rows = await self._call("list_users", "GET", "/users", idempotent=True, params={
            "start": str(start), "limit": str(count), "sort": "UserName", "dir": "ASC"})
        if not isinstance(rows, list):
            raise ConnectorError("list_users: Litmos answer is not a list")
        users = [r for r in rows if isinstance(r, dict) and isinstance(r.get("Id"), str)
                 and LITMOS_ID.fullmatch(r["Id"])]
        if not self.app.adopt_privileged_accounts:
            users = [u for u in users if self._privileged(u) is None]
        return [_lms_user(u, None) for u in users[:count]], None

    async def create_user(self, profile: Profile, *, active: bool = True) -> LmsUser:
        """``POST /users`` (409: Conflict) and one ``POST /teams/{id}/users`` per team of
        the app and the profile."""
        status, answer = await self._call(
            "create_user", "POST", "/users", idempotent=False, ok=(201, 200),
            passthrough=(409,), body=self.new_user_body(profile, active=active))
        if status == 409:
            raise Conflict("litmos: a user with this UserName already exists")
        user = checked_user(answer, "create_user")
        if str(user.get("UserName", "")).lower() != profile.username.lower():
            raise ConnectorError("Litmos answered with another user than the one asked for")
        teams = list(dict.fromkeys((*self.settings.teams, *profile.groups)))
        await self._join_teams(user, teams)
        return _lms_user(user, teams)

    async def update_user(
        self, user_id: str, profile: Profile, *, current: LmsUser | None = None,
    ) -> LmsUser:
        """``GET`` the user and its teams (2 calls, none when ``current`` holds them),
        ``PUT`` when names, e-mail, username or the mapped AccessLevel differ (1), then one
        call per team joined or left."""
        user, teams = await self._read(user_id, current)
        wanted: dict[str, Any] = {
            "UserName": profile.username, "FirstName": profile.first_name,
            "LastName": profile.last_name, "Email": profile.email,
            "IsCustomUsername": profile.username.lower() != profile.email.lower()}
        if profile.role:
            wanted["AccessLevel"] = profile.role
        if any(user.get(k) != v for k, v in wanted.items() if k != "IsCustomUsername"):
            await self._put_user(user, wanted, "update_user")  # 409: Conflict
            user = {**user, **wanted}
        join = [t for t in dict.fromkeys((*self.settings.teams, *profile.groups))
                if t not in teams]
        await self._join_teams(user, join)
        managed = set(self.app.group_map.values())
        leave = [t for t in teams if t in managed and t not in profile.groups
                 and t not in self.settings.teams]
        for team_id in leave:
            # 404: the team or membership is gone already, which is what we wanted.
            await self._call("remove_team_user", "DELETE", f"/teams/{team_id}/users/{user_id}",
                             idempotent=True, passthrough=(404,))
        return _lms_user(user, [t for t in teams if t not in leave] + join)

    async def group_members(self, group: str, limit: int) -> list[LmsUser]:
        """``GET /teams/{id}/users``, one call per 1000 members (NotFound: no such team).
        Rows carry no teams, as list pages."""
        if not LITMOS_ID.fullmatch(group):
            raise NotFound("litmos: no such team")
        rows: list[dict[str, Any]] = []
        start = 0
        while len(rows) <= limit:
            status, page = await self._call(
                "team_users", "GET", f"/teams/{group}/users", idempotent=True,
                passthrough=(404,), params={"start": str(start), "limit": str(MAX_PAGE)})
            if status == 404:
                raise NotFound("litmos: no such team")
            if not isinstance(page, list):
                raise ConnectorError("team_users: Litmos answer is not a list")
            rows += [r for r in page if isinstance(r, dict) and isinstance(r.get("Id"), str)
                     and LITMOS_ID.fullmatch(r["Id"])]
            start += len(page)
            if len(page) < MAX_PAGE:
                break
        if not self.app.adopt_privileged_accounts:
            rows = [u for u in rows if self._privileged(u) is None]
        return [_lms_user(u, None) for u in rows[:limit + 1]]

    async def set_active(
        self, user_id: str, active: bool, *, current: LmsUser | None = None,
    ) -> LmsUser:
        """``GET`` the user and its teams (2 calls, none when ``current`` holds them), then
        ``PUT`` with ``Active`` when the state differs (1)."""
        user, teams = await self._read(user_id, current)
        if (user.get("Active") is not False) != active:
            await self._put_user(user, {"Active": active},
                                 "reactivate_user" if active else "deactivate_user")
            user = {**user, "Active": active}
        return _lms_user(user, teams)
