"""SkyPrep account lifecycle (SCIM joiners, movers, leavers): the LifecycleCapable half of
:class:`gateway.connectors.skyprep.SkyPrepConnector`, kept here so each file stays small.

Contract: SkyPrep's Admin API reference (``get_user``, ``get_users``, ``create_user``,
``update_user``, ``get_user_group_enrollments_for_user``, ``remove_user_from_user_group``).
What the reference leaves open, and what we assume (the simulator makes the same choices):

* Ids: ``LmsUser.user_id`` is SkyPrep's numeric user id (stable when the e-mail changes);
  ``update_user`` by ``user_id`` takes ``email`` like ``create_user`` ("parameters are the
  same as create"), which renames the account. Sign-in caches key accounts by e-mail.
* Deactivation: the reference documents no active flag for users, only the access window
  ``access_start_date``/``access_end_date`` on ``update_user`` (and user statuses "active,
  inactive or disabled" as a course-progress filter). A leaver gets ``access_end_date`` =
  yesterday (UTC), so the account is already outside its window whatever the tenant's time
  zone; reactivation sends an empty ``access_end_date`` (assumed to clear it: the reference
  only says omitted parameters are not updated). ``create_user`` takes the same parameters,
  so an inactive joiner is created with the end date in the same call.
* Reading the state: ``get_user`` is assumed to show ``access_end_date`` (its sample ends in
  "More JSON data"): none or today and later is active; a past or unreadable date inactive.
  ``access_start_date`` is not looked at (nothing here sets it).
* Groups are names (``user_groups``, ``;``-joined, as ``get_login_key`` takes them, assumed
  for create/update too); ``get_user`` is assumed to list them as ``user_groups``. Sending
  names only adds; leaving a group the app manages (a ``group_map`` value) takes the
  group's id from ``get_user_group_enrollments_for_user`` and one
  ``remove_user_from_user_group`` per group. Groups the app does not manage are left alone.
* ``get_users`` is documented without paging: a page is one ``get_users`` call, sliced here.
  ``match_by = "employee_number"`` reads ``get_users`` too and compares ``card_no``.
* A duplicate ``create_user`` is not documented; any 400 is followed by a ``get_user`` by
  e-mail: an existing account makes it a Conflict, otherwise the 400 stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from gateway.connectors._accounts import numeric_id, refuse_privileged
from gateway.connectors._lifecycle import check_page, mappable_roles
from gateway.connectors.base import LmsUser
from gateway.errors import (
    AmbiguousAccount,
    BadRequest,
    Conflict,
    ConnectorError,
    LmsRejected,
    NotFound,
)
from gateway.identity import Profile
from gateway.settings import AppSettings

_NO_USER = "skyprep: no such user"


def join_groups(groups: tuple[str, ...]) -> str:
    """``;``-joined group names; a name containing ``;`` would split into two groups, so
    such names are refused rather than silently changing meaning."""
    for group in groups:
        if ";" in group or not group.strip():
            raise ConnectorError("SkyPrep group names may not be empty or contain ';'")
    return ";".join(groups)


def excess_role(body: dict[str, Any], allowed: set[str]) -> str | None:
    """The user's role when it is above ``allowed`` (lower-cased role names), else None.
    An answer without ``role`` is SkyPrep's default role, learner (the reference's get_user
    sample shows none); a role that is present but not text is unreadable: privileged."""
    role = body.get("role", "learner")
    if isinstance(role, str) and role.strip().lower() in allowed:
        return None
    return role if isinstance(role, str) else "unreadable role"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _day(day: date) -> str:
    """A date as the reference writes them: "July 30, 2017"."""
    return f"{day:%B} {day.day}, {day.year}"


def _today() -> date:
    return datetime.now(UTC).date()


def access_open(body: dict[str, Any]) -> bool:
    """False when a ``get_user`` answer's ``access_end_date`` has passed (or is unreadable)."""
    end = body.get("access_end_date")
    if end is None or end == "":
        return True
    for fmt in ("%B %d, %Y", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(_text(end).strip(), fmt).date() >= _today()
        except ValueError:
            continue
    return False  # an end date we cannot read: do not report the account as usable


def _group_names(body: dict[str, Any]) -> list[str]:
    raw = body.get("user_groups")
    if not isinstance(raw, list):
        return []
    names = [g.get("name") if isinstance(g, dict) else g for g in raw]
    return [n for n in names if isinstance(n, str) and n]


@dataclass(frozen=True, slots=True)
class _Read:
    """``LmsUser.source`` of SkyPrep accounts: the ``get_user`` answer (as updated since)."""

    body: dict[str, Any]


def _group_ids(body: dict[str, Any]) -> dict[str, str]:
    """Group name -> numeric id, where ``get_user``'s ``user_groups`` gives ids."""
    raw = body.get("user_groups")
    pairs = [(g.get("name"), numeric_id(g.get("id"))) for g in raw or []
             if isinstance(g, dict)] if isinstance(raw, list) else []
    return {n: i for n, i in pairs if isinstance(n, str) and n and i is not None}


def _lms_user(body: dict[str, Any], *, whole: bool = True) -> LmsUser:
    """``whole``: ``body`` is a full ``get_user`` answer (a list entry may not be)."""
    user_id = numeric_id(body.get("id"))
    if user_id is None:
        raise ConnectorError("skyprep: user answer has no numeric id")
    email = _text(body.get("email")) or _text(body.get("username"))
    return LmsUser(
        user_id=user_id, username=_text(body.get("username")) or email, email=email,
        first_name=_text(body.get("first_name")), last_name=_text(body.get("last_name")),
        active=access_open(body), employee_number=_text(body.get("card_no")) or None,
        groups=tuple(_group_names(body)), source=_Read(dict(body)) if whole else None,
    )


class SkyPrepLifecycle:
    """LifecycleCapable for SkyPrep (mixed into SkyPrepConnector)."""

    app_name: str
    app: AppSettings

    if TYPE_CHECKING:
        async def _post(
            self, operation: str, data: dict[str, str], *, idempotent: bool,
            passthrough: tuple[int, ...] = (),
        ) -> tuple[int, Any]: ...

    # -- shared with sign-in -------------------------------------------------------------

    async def _read_user(self, key: dict[str, str]) -> dict[str, Any] | None:
        """``get_user`` by ``user_id`` or ``user_email``; None on 404. The answer must be the
        user asked for."""
        status, body = await self._post("get_user", key, idempotent=True, passthrough=(404,))
        if status == 404:
            return None
        if not isinstance(body, dict):
            raise ConnectorError("get_user: answer is not a JSON object")
        if "user_id" in key and numeric_id(body.get("id")) != key["user_id"]:
            raise ConnectorError("get_user: answer is for another user")
        email = body.get("email")
        if "user_email" in key and email is not None and (
                not isinstance(email, str) or email.lower() != key["user_email"].lower()):
            raise ConnectorError("get_user: answer is for another user")
        return body

    def _manageable(self, body: dict[str, Any]) -> None:
        allowed = {"learner"} | {r.strip().lower() for r in mappable_roles(self.app)}
        role = excess_role(body, allowed)
        if role is not None:
            refuse_privileged(self.app_name, self.app,
                              lms_user_id=numeric_id(body.get("id")) or "unknown", why=role)

    async def _by_id(self, user_id: str) -> dict[str, Any]:
        if numeric_id(user_id) != user_id:
            raise NotFound(_NO_USER)
        body = await self._read_user({"user_id": user_id})
        if body is None:
            raise NotFound(_NO_USER)
        self._manageable(body)
        return body

    def _known(self, user_id: str, current: LmsUser | None) -> dict[str, Any] | None:
        """The account as ``current`` (returned by this connector) holds it, when it is
        ``user_id``'s: a write right after a read needs no second read."""
        if current is None or current.user_id != user_id or not isinstance(
                current.source, _Read) or numeric_id(current.source.body.get("id")) != user_id:
            return None
        body = dict(current.source.body)
        self._manageable(body)  # as the read did; costs no call
        return body

    # -- LifecycleCapable ----------------------------------------------------------------

    async def get_user(self, user_id: str) -> LmsUser:
        """``get_user`` by id (1 call)."""
        return _lms_user(await self._by_id(user_id))

    async def find_user(self, profile: Profile) -> LmsUser | None:
        """``get_user`` by e-mail, or ``get_users`` by ``card_no`` (1 call either way)."""
        if self.app.match_by == "employee_number":
            if not profile.employee_number:
                raise BadRequest("skyprep: app matches by employee number; profile has none")
            matches = [u for u in await self._all_users()
                       if u.get("card_no") == profile.employee_number]
            if len(matches) > 1:
                raise AmbiguousAccount(f"skyprep: {len(matches)} users share an employee number")
            body = matches[0] if matches else None
        else:
            body = await self._read_user({"user_email": profile.email})
        if body is None:
            return None
        self._manageable(body)
        return _lms_user(body)

    async def _all_users(self) -> list[dict[str, Any]]:
        _, body = await self._post("get_users", {}, idempotent=True)
        if not isinstance(body, list):
            raise ConnectorError("get_users: answer is not a JSON array")
        return [u for u in body if isinstance(u, dict) and numeric_id(u.get("id")) is not None]

    async def list_users(self, start: int, count: int) -> tuple[list[LmsUser], int | None]:
        """One ``get_users`` call (undocumented paging), sliced; privileged accounts are left
        out unless the app adopts them, so the total is exact."""
        count = check_page(start, count)
        users = await self._all_users()
        if not self.app.adopt_privileged_accounts:
            allowed = {"learner"} | {r.strip().lower() for r in mappable_roles(self.app)}
            users = [u for u in users if excess_role(u, allowed) is None]
        return [_lms_user(u, whole=False) for u in users[start:start + count]], len(users)

    async def create_user(self, profile: Profile, *, active: bool = True) -> LmsUser:
        """``create_user`` (1 call; 2 when SkyPrep answers 400, to tell a Conflict)."""
        data = {"email": profile.email, "first_name": profile.first_name,
                "last_name": profile.last_name}
        if profile.employee_number:
            data["card_no"] = profile.employee_number
        if profile.role:
            data["role"] = profile.role
        if profile.groups:
            data["user_groups"] = join_groups(profile.groups)
        if not active:
            data["access_end_date"] = _day(_today() - timedelta(days=1))
        # Not retried: a lost answer followed by a retry would meet the account it created.
        status, body = await self._post("create_user", data, idempotent=False,
                                        passthrough=(400,))
        if status == 400:
            if await self._read_user({"user_email": profile.email}) is not None:
                raise Conflict("skyprep: an account with this e-mail already exists")
            raise LmsRejected("create_user: SkyPrep answered 400")
        if not isinstance(body, dict):
            raise ConnectorError("create_user: answer is not a JSON object")
        sent = {"username": profile.email, "card_no": profile.employee_number,
                "user_groups": list(profile.groups), **data}
        return _lms_user({**sent, **body})

    async def update_user(
        self, user_id: str, profile: Profile, *, current: LmsUser | None = None,
    ) -> LmsUser:
        """``get_user`` (unless ``current`` holds it), then ``update_user`` when anything
        differs (0-2 calls), plus ``get_user_group_enrollments_for_user`` and one
        ``remove_user_from_user_group`` per managed group the profile no longer has."""
        body = self._known(user_id, current) or await self._by_id(user_id)
        held = _group_names(body)
        data = {"user_id": user_id, "email": profile.email, "first_name": profile.first_name,
                "last_name": profile.last_name, "card_no": profile.employee_number or ""}
        if profile.role:
            data["role"] = profile.role
        missing = [g for g in profile.groups if g not in held]
        if missing:
            data["user_groups"] = join_groups(tuple(missing))
        changed = bool(missing) or any(
            _text(body.get(k)) != v for k, v in data.items() if k not in ("user_id", "email"))
        changed = changed or _text(body.get("email")).lower() != profile.email.lower()
        if changed:
            status, answer = await self._post("update_user", data, idempotent=True,
                                              passthrough=(400, 404))
            if status == 404:
                raise NotFound(_NO_USER)
            if status == 400:
                if (_text(body.get("email")).lower() != profile.email.lower()
                        and await self._read_user({"user_email": profile.email}) is not None):
                    raise Conflict("skyprep: another account has this e-mail address")
                raise LmsRejected("update_user: SkyPrep answered 400")
            body = {**body, **{k: v for k, v in data.items() if k != "user_groups"},
                    **(answer if isinstance(answer, dict) else {})}
        managed = set(self.app.group_map.values())
        leave = [g for g in held if g in managed and g not in profile.groups]
        if leave:
            await self._leave_groups(user_id, leave, _group_ids(body))
        groups = [g for g in held if g not in leave] + missing
        return _lms_user({**body, "id": user_id, "user_groups": groups})

    async def _leave_groups(self, user_id: str, names: list[str],
                            known: dict[str, str]) -> None:
        """Remove the user from groups ``names``. Their ids come from ``get_user``'s
        ``user_groups`` when it gave them (``known``), else from one
        ``get_user_group_enrollments_for_user`` call."""
        ids: dict[Any, str | None] = dict(known)
        if any(name not in ids for name in names):
            _, enrolled = await self._post("get_user_group_enrollments_for_user",
                                           {"user_id": user_id}, idempotent=True)
            if not isinstance(enrolled, list):
                raise ConnectorError(
                    "get_user_group_enrollments_for_user: answer is not an array")
            ids = {g.get("name"): numeric_id(g.get("id"))
                   for g in enrolled if isinstance(g, dict)}
        for name in names:
            group_id = ids.get(name)
            if group_id is None:
                continue  # not (or no longer) a member: nothing to remove
            await self._post("remove_user_from_user_group",
                             {"user_id": user_id, "user_group_id": group_id}, idempotent=True)

    async def group_members(self, group: str, limit: int) -> list[LmsUser]:
        """``get_user_groups`` (the group's id by name), then ``get_user_group`` (its users):
        2 calls. A name SkyPrep does not know yet has no members (SkyPrep creates groups
        by name when a user is first put in one)."""
        _, groups = await self._post("get_user_groups", {}, idempotent=True)
        if not isinstance(groups, list):
            raise ConnectorError("get_user_groups: answer is not a JSON array")
        group_id = next((numeric_id(g.get("id")) for g in groups
                         if isinstance(g, dict) and g.get("name") == group), None)
        if group_id is None:
            return []
        status, body = await self._post("get_user_group", {"user_group_id": group_id},
                                        idempotent=True, passthrough=(404,))
        if status == 404:
            return []
        users = body.get("users") if isinstance(body, dict) else None
        if not isinstance(users, list):
            raise ConnectorError("get_user_group: answer has no users list")
        rows = [u for u in users if isinstance(u, dict) and numeric_id(u.get("id")) is not None]
        if not self.app.adopt_privileged_accounts:
            allowed = {"learner"} | {r.strip().lower() for r in mappable_roles(self.app)}
            rows = [u for u in rows if excess_role(u, allowed) is None]
        return [_lms_user(u, whole=False) for u in rows[:limit + 1]]

    async def set_active(
        self, user_id: str, active: bool, *, current: LmsUser | None = None,
    ) -> LmsUser:
        """``get_user`` (unless ``current`` holds it), then ``update_user`` with
        ``access_end_date`` when the state differs (0-2 calls)."""
        body = self._known(user_id, current) or await self._by_id(user_id)
        if access_open(body) == active:
            return _lms_user(body)
        end = "" if active else _day(_today() - timedelta(days=1))
        status, _ = await self._post("update_user", {"user_id": user_id, "access_end_date": end},
                                     idempotent=True, passthrough=(404,))
        if status == 404:
            raise NotFound(_NO_USER)
        return _lms_user({**body, "access_end_date": end or None})
