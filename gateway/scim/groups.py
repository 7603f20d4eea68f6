"""One app's SCIM Groups: IdP group memberships become LMS group (Damstra), team (Litmos)
or user group (SkyPrep) memberships through the app's ``group_map``; the LMS stays the
system of record and the gateway keeps nothing.

* **Which groups exist**: one SCIM Group per LMS group the ``group_map`` names. Its ``id``
  is derived from the LMS group (the Damstra group id, the Litmos team id, as they are;
  otherwise ``n.`` + the name in base64url, for SkyPrep's names) and its ``displayName``
  is the first ``group_map`` key naming it. An IdP's group is this Group when its
  ``displayName`` or its ``externalId`` is a ``group_map`` key (Entra sends the group's
  name and its object id, and sign-in group claims carry either).
* **Other groups are accepted and ignored**: a POST of a group the map does not name
  answers 201 with an id that encodes its names (``x.`` + base64url), and member changes on
  it change nothing. Entra provisions every assigned group (assignment is also how it
  scopes users), and a 4xx there would fill its provisioning log with failures and can
  quarantine the job; Okta pushes only the groups an admin picks. Filters and listings
  show mapped groups only, so the IdP's first lookup of an unmapped group finds nothing.
  When the operator later maps the name, the ``x.`` id starts changing LMS memberships.
* **Trust**: members are LMS user ids the IdP's client can see (its ``email_domains``);
  privileged accounts are refused (403). A member change on a mapped group needs the IdP
  in the app's ``group_idps`` (as its group claims at sign-in do), else 403. Every member
  is read (and checked) before the first write, so a request refused for trust changes
  nothing. One that runs out of LMS budget (429) or meets an LMS outage (503) between its
  writes is applied in part; member changes are idempotent, so the IdP's retry completes it.
* **Members** are read from the LMS for ``GET /Groups/{id}`` (left out with
  ``excludedAttributes=members``) and for a full replacement (PUT, or PATCH ``replace`` of
  ``members``); listings and searches leave them out, which keeps them to no LMS call.
  Accounts outside the IdP's domains are never shown and never removed by a replacement.
* DELETE of a Group answers 204 and changes nothing at the LMS: the LMS group and its
  members stay (the next sign-in's group claims still refresh them).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from gateway import jsonsafe
from gateway.connectors.base import GroupCapable, LmsUser
from gateway.errors import NotFound
from gateway.identity import Profile
from gateway.policy import group_idps
from gateway.scim.errors import ScimError
from gateway.scim.service import ScimService

# A group larger than this is not listed (400 tooMany): its listing alone would spend a
# sign-in rush's worth of LMS calls. Member changes per request are capped the same way.
MAX_MEMBERS = 10_000
MAX_CHANGES = 1_000
_PLAIN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
USER_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


@dataclass(frozen=True, slots=True)
class GroupRef:
    """A SCIM Group as the gateway understands it; ``lms_group`` None: not in the map."""

    id: str
    display_name: str
    external_id: str | None
    lms_group: str | None


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise NotFound("scim: malformed group id") from None


def lms_group_id(value: str) -> str:
    """The SCIM id of the LMS group ``value`` (a ``group_map`` value)."""
    return value if _PLAIN.match(value) else "n." + _b64(value)


class GroupService:
    """SCIM Groups of one app, over its :class:`ScimService` (users, trust, audit)."""

    def __init__(self, users: ScimService) -> None:
        self.users = users
        self.app = users.app
        # LMS group -> the first group_map key naming it (its displayName).
        self._names: dict[str, str] = {}
        for key, value in users.app.group_map.items():
            self._names.setdefault(value, key)

    # -- resolution (no LMS call) ----------------------------------------------------------

    def mapped(self) -> list[GroupRef]:
        """Every Group the map names, in the map's order."""
        return [GroupRef(lms_group_id(v), k, None, v) for v, k in self._names.items()]

    def named(self, display_name: str | None, external_id: str | None) -> GroupRef:
        """The Group an IdP's group is: mapped by its name or external id, else unmanaged."""
        for key in (display_name, external_id):
            value = self.app.group_map.get(key) if key else None
            if value is not None:
                return GroupRef(lms_group_id(value), self._names[value], None, value)
        names = json.dumps([display_name or "", external_id or ""], separators=(",", ":"))
        return GroupRef("x." + _b64(names), display_name or "", external_id, None)

    def by_id(self, group_id: str) -> GroupRef:
        """The Group ``group_id`` names; NotFound when it names no Group of this app."""
        if group_id.startswith("x."):
            try:
                display, external = jsonsafe.loads(_unb64(group_id[2:]))
            except (ValueError, TypeError):
                raise NotFound("scim: malformed group id") from None
            if not isinstance(display, str) or not isinstance(external, str):
                raise NotFound("scim: malformed group id")
            ref = self.named(display or None, external or None)
            # Mapped since the IdP stored this id: keep the id it knows.
            return GroupRef(group_id, ref.display_name, ref.external_id, ref.lms_group)
        value = _unb64(group_id[2:]) if group_id.startswith("n.") else group_id
        if value not in self._names or lms_group_id(value) != group_id:
            raise NotFound("scim: no such group in this app's group_map")
        return GroupRef(group_id, self._names[value], None, value)

    # -- members ---------------------------------------------------------------------------

    async def members(self, idp: str, ref: GroupRef) -> list[LmsUser]:
        """The group's members ``idp`` may see (none for an unmanaged group)."""
        if ref.lms_group is None:
            return []
        connector = self.users.connector
        if not isinstance(connector, GroupCapable):
            raise ScimError(501, None, "this LMS cannot list group members")
        found = await connector.group_members(ref.lms_group, MAX_MEMBERS)
        if len(found) > MAX_MEMBERS:
            raise ScimError(400, "tooMany", f"the group has more than {MAX_MEMBERS} members")
        return [u for u in found if self.users.visible(idp, u)]

    async def change(self, idp: str, ref: GroupRef, wanted: dict[str, bool]) -> None:
        """Make each user id in ``wanted`` a member (True) or not (False) of the group."""
        if ref.lms_group is None or not wanted:
            return  # a group the map does not name: accepted, ignored (module docstring)
        self.check_trusted(idp, ref)
        if len(wanted) > MAX_CHANGES:
            raise ScimError(400, "tooMany", f"at most {MAX_CHANGES} member changes at once")
        # Every member is read and checked before the first write (nothing changes when one
        # is refused; a 429/503 between writes leaves a part done, which a retry completes);
        # a member to remove that is gone or not the IdP's is already "out".
        plan: list[tuple[LmsUser, bool]] = []
        for user_id, member in wanted.items():
            try:
                if not USER_ID.match(user_id):
                    raise NotFound("scim: malformed member id")
                plan.append((await self.users.get(idp, user_id), member))
            except NotFound:
                if member:
                    raise ScimError(400, "invalidValue", "a member is not a user this "
                                                         "client provisions") from None
        for user, member in plan:
            await self._set_member(idp, user, ref.lms_group, member)

    def check_trusted(self, idp: str, ref: GroupRef) -> None:
        """403 unless ``idp`` may change memberships of ``ref`` (mapped groups only)."""
        if ref.lms_group is not None and idp not in group_idps(self.app):
            raise ScimError(403, None, "this IdP's groups are not trusted for this app "
                                       "(group_idps)")

    async def _set_member(self, idp: str, user: LmsUser, group: str, member: bool) -> None:
        if (group in user.groups) == member:
            return  # already so: a retried request costs only its reads
        groups = tuple(g for g in user.groups if g != group) + ((group,) if member else ())
        profile = Profile(email=user.email, first_name=user.first_name,
                          last_name=user.last_name, username=user.username,
                          employee_number=user.employee_number, groups=groups)
        await self.users.connector.update_user(user.user_id, profile, current=user)
        self.users.audit(idp, "group-add" if member else "group-remove", user.user_id,
                         group=group)

    async def apply(self, idp: str, ref: GroupRef, steps: list[tuple[str, list[str]]]) -> None:
        """Apply member steps in order: ("add" | "remove" | "set", user ids). A "set" (PUT,
        PATCH ``replace`` of members) reads the current members first; only differences
        cost further LMS calls (members who stay are not read again)."""
        if ref.lms_group is None or not steps:
            return
        self.check_trusted(idp, ref)
        wanted: dict[str, bool] = {}
        if any(kind == "set" for kind, _ in steps):
            held = {user.user_id for user in await self.members(idp, ref)}
            final = set(held)
            for kind, ids in steps:
                if kind == "set":
                    final = set(ids)
                elif kind == "add":
                    final |= set(ids)
                else:
                    final -= set(ids)
            wanted = {i: True for i in final - held} | {i: False for i in held - final}
        else:
            for kind, ids in steps:
                wanted.update({i: kind == "add" for i in ids})
        await self.change(idp, ref, wanted)
