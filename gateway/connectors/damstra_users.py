"""Damstra Learning account lifecycle (SCIM joiners, movers, leavers) and the account rules
sign-in shares with it: the LifecycleCapable half of
:class:`gateway.connectors.damstra.DamstraConnector`, kept here so each file stays small.

Contract: the vendor's "Damstra Learning Public API" reference (API v2): user search
(``GET /user`` with ``emailAddress``/``empId``/``activeValue``/``startIndex``/``maxResults``
and a ``meta.totalResultCount``), ``GET /user/{id}``, create/update (``POST /user``,
``POST /user/{id}``, paths assumed as in ``damstra.py``), ``POST /user/{id}/activate`` and
``/inactivate``. Leavers become Not Current (57): their learning records stay.

* ``LmsUser.user_id`` is Damstra's numeric id; ``groups`` are group ids as text (the values
  ``group_map`` maps to). Updates replace only the groups the app manages (``group_map``
  values); other groups an admin gave the user stay.
* Damstra does not refuse a second account with the same e-mail or employee number, so
  ``create_user`` searches by the app's ``match_by`` first (the same search sign-in makes)
  and answers Conflict when it finds one. Create takes no status: an inactive joiner is
  created and then inactivated.
* Roles are not changed by updates (as at sign-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.connectors._accounts import numeric_id, refuse_privileged
from gateway.connectors._lifecycle import MAX_PAGE, check_page, mappable_roles
from gateway.connectors.base import LmsUser
from gateway.errors import (
    AccessDenied,
    AmbiguousAccount,
    BadRequest,
    Conflict,
    ConnectorError,
    GatewayError,
    NotFound,
)
from gateway.identity import Profile
from gateway.settings import AppSettings

if TYPE_CHECKING:
    import httpx

NOT_CURRENT = 57
ROLE_IDS = {"ADMIN": 3, "EDITOR": 4, "SUPERVISOR": 5, "TRAINEE": 6, "INSTRUCTOR": 8}
ROLE_NAMES = {**{i: n for n, i in ROLE_IDS.items()}, 7: "OWNER"}  # for operator messages
_NO_USER = "damstra: no such user"


def role_id(role: str | None) -> int:
    """Damstra role id for a mapped role name or id (TRAINEE when unset). OWNER is refused:
    the document says there is only ever one."""
    if role is None or not role.strip():
        return ROLE_IDS["TRAINEE"]
    key = role.strip().upper()
    if key in ROLE_IDS:
        return ROLE_IDS[key]
    number = numeric_id(key)
    if number is not None and int(number) in ROLE_IDS.values():
        return int(number)
    raise ConnectorError(f"damstra: role {role[:40]!r} is not a Damstra role the gateway may set")


def excess_roles(user: dict[str, Any], granted: set[int]) -> list[str]:
    """The user's roles above TRAINEE and above ``granted`` (the role ids the mapping gives),
    as text for the operator; unknown shapes and ids count as privileged (fail closed)."""
    roles = user.get("roles")
    if roles is None:
        roles = []  # "By default users are created with the TRAINEE(6) role."
    if not isinstance(roles, list):
        return ["unreadable roles"]
    excess: list[str] = []
    for item in roles:
        raw = item.get("id") if isinstance(item, dict) else item
        number = numeric_id(raw)
        if number is None:
            excess.append("unreadable role")
        elif int(number) != ROLE_IDS["TRAINEE"] and int(number) not in granted:
            excess.append(ROLE_NAMES.get(int(number), f"role id {number}"))
    supervised = user.get("groupsSupervised")
    if supervised and not granted & {ROLE_IDS["SUPERVISOR"], ROLE_IDS["ADMIN"]}:
        excess.append("supervises groups")
    return excess


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _group_ids(user: dict[str, Any]) -> list[int]:
    ids = [numeric_id(g.get("id")) for g in user.get("groups") or [] if isinstance(g, dict)]
    return [int(g) for g in ids if g is not None]


@dataclass(frozen=True, slots=True)
class _Read:
    """``LmsUser.source`` of Damstra accounts: the user object as read (or written since)."""

    user: dict[str, Any]


def _lms_user(user: dict[str, Any], *, whole: bool = True) -> LmsUser:
    """``whole``: ``user`` is a full user object (``GET /user/{id}`` or what we wrote)."""
    user_id = numeric_id(user.get("id"))
    if user_id is None:
        raise ConnectorError("damstra: user answer has no numeric id")
    return LmsUser(
        user_id=user_id, username=_text(user.get("userName")),
        email=_text(user.get("emailAddress")), first_name=_text(user.get("firstName")),
        last_name=_text(user.get("lastName")), active=user.get("clientStatusId") != NOT_CURRENT,
        employee_number=_text(user.get("employeeNumber")) or None,
        groups=tuple(str(g) for g in _group_ids(user)),
        source=_Read(dict(user)) if whole else None,
    )


class DamstraLifecycle:
    """LifecycleCapable for Damstra (mixed into DamstraConnector), plus the user search
    sign-in uses."""

    app_name: str
    app: AppSettings
    _managed_groups: set[int]

    if TYPE_CHECKING:
        async def _call(self, operation: str, method: str, path: str, *, idempotent: bool,
                        params: dict[str, str] | None = None, json_data: Any = None,
                        missing: GatewayError | None = None) -> httpx.Response: ...

        async def _json(self, operation: str, method: str, path: str, **kwargs: Any) -> Any: ...

        def _groups(self, profile: Profile) -> list[int]: ...

        def _create_body(self, profile: Profile) -> dict[str, Any]: ...

    # -- shared with sign-in -------------------------------------------------------------

    async def _search_match(self, profile: Profile) -> dict[str, Any] | None:
        """The one user (active or Not Current) the app's ``match_by`` selects, or None."""
        if self.app.match_by == "employee_number":
            if not profile.employee_number:
                raise AccessDenied("damstra: app matches by employee number; IdP sent none")
            params, field, want = {"empId": profile.employee_number}, "employeeNumber", (
                profile.employee_number)
        else:
            params, field, want = {"emailAddress": profile.email}, "emailAddress", profile.email
        params.update(activeValue="all", startIndex="0", maxResults="10")
        body = await self._json("search_users", "GET", "/user", params=params, idempotent=True)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise ConnectorError("damstra search_users: answer has no results list")
        # Search is documented as exact; check anyway rather than take a near match.
        fold = str.lower if field == "emailAddress" else str
        matches = [u for u in results if isinstance(u, dict)
                   and numeric_id(u.get("id")) is not None
                   and isinstance(u.get(field), str) and fold(u[field]) == fold(want)]
        if len(matches) > 1:
            ids = ", ".join(str(u["id"]) for u in matches[:5])
            raise AmbiguousAccount(f"damstra: {len(matches)} users match by {field} ({ids})")
        return matches[0] if matches else None

    # -- helpers -------------------------------------------------------------------------

    def _granted(self) -> set[int]:
        granted = set()
        for role in mappable_roles(self.app):
            try:
                granted.add(role_id(role))
            except ConnectorError:
                continue  # a role the gateway may not set grants nothing here
        return granted

    def _refuse_privileged(self, user: dict[str, Any]) -> None:
        excess = excess_roles(user, self._granted())
        if excess:
            refuse_privileged(self.app_name, self.app, lms_user_id=str(user.get("id")),
                              why=", ".join(excess))

    async def _user(self, user_id: str) -> dict[str, Any]:
        if numeric_id(user_id) != user_id:
            raise NotFound(_NO_USER)
        user = await self._json("get_user", "GET", f"/user/{user_id}", idempotent=True,
                                missing=NotFound(_NO_USER))
        if not isinstance(user, dict) or numeric_id(user.get("id")) != user_id:
            raise ConnectorError("damstra get_user: answer is not the user asked for")
        self._refuse_privileged(user)
        return user

    def _known(self, user_id: str, current: LmsUser | None) -> dict[str, Any] | None:
        """The user as ``current`` (returned by this connector) holds it, when it is
        ``user_id``'s: a write right after a read needs no second read."""
        if current is None or current.user_id != user_id or not isinstance(
                current.source, _Read) or numeric_id(current.source.user.get("id")) != user_id:
            return None
        user = dict(current.source.user)
        self._refuse_privileged(user)  # as the read did; costs no call
        return user

    def _match_key_changes(self, user: dict[str, Any], profile: Profile) -> bool:
        if self.app.match_by == "employee_number":
            return bool(profile.employee_number) and (
                user.get("employeeNumber") != profile.employee_number)
        return _text(user.get("emailAddress")).lower() != profile.email.lower()

    def _match_needs(self, profile: Profile) -> None:
        if self.app.match_by == "employee_number" and not profile.employee_number:
            raise BadRequest("damstra: app matches by employee number; profile has none")

    # -- LifecycleCapable ----------------------------------------------------------------

    async def get_user(self, user_id: str) -> LmsUser:
        """``GET /user/{id}`` (1 call)."""
        return _lms_user(await self._user(user_id))

    async def find_user(self, profile: Profile) -> LmsUser | None:
        """One search by ``emailAddress`` or ``empId`` (1 call)."""
        self._match_needs(profile)
        user = await self._search_match(profile)
        if user is None:
            return None
        self._refuse_privileged(user)
        return _lms_user(user)

    async def list_users(self, start: int, count: int) -> tuple[list[LmsUser], int | None]:
        """One search page of active and Not Current users (1 call); privileged accounts
        are left out unless the app adopts them (the total is Damstra's, so an upper bound)."""
        count = check_page(start, count)
        body = await self._json("search_users", "GET", "/user", idempotent=True, params={
            "activeValue": "all", "startIndex": str(start), "maxResults": str(max(count, 1))})
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise ConnectorError("damstra search_users: answer has no results list")
        meta = body.get("meta")
        total = numeric_id(meta.get("totalResultCount")) if isinstance(meta, dict) else None
        users = [u for u in results[:count]
                 if isinstance(u, dict) and numeric_id(u.get("id")) is not None]
        if not self.app.adopt_privileged_accounts:
            granted = self._granted()
            users = [u for u in users if not excess_roles(u, granted)]
        return ([_lms_user(u, whole=False) for u in users],
                int(total) if total is not None else None)

    async def create_user(self, profile: Profile, *, active: bool = True) -> LmsUser:
        """Search (Conflict when found), ``POST /user``, and ``inactivate`` for an inactive
        joiner: 2 calls, 3 when inactive."""
        self._match_needs(profile)
        if await self._search_match(profile) is not None:
            raise Conflict(f"damstra: a user already matches by {self.app.match_by}")
        body = self._create_body(profile)
        # Not retried: a retry after a lost answer would create a second account.
        created = await self._json("create_user", "POST", "/user", idempotent=False,
                                   json_data=body)
        user_id = numeric_id(created.get("id")) if isinstance(created, dict) else None
        if user_id is None:
            raise ConnectorError("damstra create_user: answer has no user id")
        if not active:
            await self._call("inactivate_user", "POST", f"/user/{user_id}/inactivate",
                             idempotent=True, missing=NotFound(_NO_USER))
        return _lms_user({**body, "id": user_id,
                          "clientStatusId": None if active else NOT_CURRENT})

    async def update_user(
        self, user_id: str, profile: Profile, *, current: LmsUser | None = None,
    ) -> LmsUser:
        """``GET /user/{id}`` (unless ``current`` holds it), then ``POST /user/{id}`` with
        the whole user when names, e-mail, employee number or managed groups differ (0-2
        calls); one search more when the ``match_by`` value changes (Conflict when another
        user has it)."""
        user = self._known(user_id, current) or await self._user(user_id)
        held = set(_group_ids(user))
        groups = sorted((held - self._managed_groups) | set(self._groups(profile)))
        wanted = {"firstName": profile.first_name, "lastName": profile.last_name,
                  "emailAddress": profile.email, "employeeNumber": profile.employee_number}
        if all(user.get(k) == v for k, v in wanted.items()) and set(groups) == held:
            return _lms_user(user)
        if self._match_key_changes(user, profile):
            # Damstra would accept a duplicate, and sign-in would then find two accounts.
            other = await self._search_match(profile)
            if other is not None and numeric_id(other.get("id")) != user_id:
                raise Conflict(f"damstra: another user already matches by {self.app.match_by}")
        body = {k: user.get(k) for k in ("id", "userName", "groupsSupervised", "roles",
                                         "timeZone")}
        body.update(wanted, phoneNumber=user.get("phoneNumber") or "",
                    mobileNumber=user.get("mobileNumber") or "",
                    groups=[{"id": g} for g in groups])
        body = {k: v for k, v in body.items() if v is not None or k == "employeeNumber"}
        await self._call("update_user", "POST", f"/user/{user_id}", json_data=body,
                         idempotent=True, missing=NotFound(_NO_USER))
        return _lms_user({**user, **body})

    async def group_members(self, group: str, limit: int) -> list[LmsUser]:
        """``GET /group/{id}/member``, one call per 1000 members (NotFound: no such group)."""
        if numeric_id(group) != group:
            raise NotFound("damstra: no such group")
        rows: list[dict[str, Any]] = []
        start = 0
        while len(rows) <= limit:
            body = await self._json(
                "group_members", "GET", f"/group/{group}/member", idempotent=True,
                params={"startIndex": str(start), "maxResults": str(MAX_PAGE)},
                missing=NotFound("damstra: no such group"))
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list):
                raise ConnectorError("damstra group_members: answer has no results list")
            rows += [u for u in results
                     if isinstance(u, dict) and numeric_id(u.get("id")) is not None]
            meta = body.get("meta")
            total = numeric_id(meta.get("totalResultCount")) if isinstance(meta, dict) else None
            start += len(results)
            if not results or total is None or start >= int(total):
                break
        if not self.app.adopt_privileged_accounts:
            granted = self._granted()
            rows = [u for u in rows if not excess_roles(u, granted)]
        return [_lms_user(u, whole=False) for u in rows[:limit + 1]]

    async def set_active(
        self, user_id: str, active: bool, *, current: LmsUser | None = None,
    ) -> LmsUser:
        """``GET /user/{id}`` (unless ``current`` holds it), then ``activate`` or
        ``inactivate`` when the state differs (0-2 calls)."""
        user = self._known(user_id, current) or await self._user(user_id)
        if (user.get("clientStatusId") != NOT_CURRENT) == active:
            return _lms_user(user)
        action = "activate" if active else "inactivate"
        await self._call(f"{action}_user", "POST", f"/user/{user_id}/{action}",
                         idempotent=True, missing=NotFound(_NO_USER))
        return _lms_user({**user, "clientStatusId": 56 if active else NOT_CURRENT})
