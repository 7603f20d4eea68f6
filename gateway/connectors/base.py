"""What every LMS connector offers, and the values it hands back.

A connector is a plain class with async methods and no framework imports. It gets its
settings, an :class:`gateway.connectors._http.LmsHttp` (pooled client + budget + error
mapping) and turns a :class:`gateway.identity.Profile` into a signed-in LMS session.

Contract of :meth:`Connector.sign_in` (what ``provisioning.py`` relies on):

* ``known`` is the account cached from an earlier sign-in of this employee, or None.
* ``known`` given and ``known.profile_digest == profile.digest()``: the connector spends
  exactly **one** LMS call (the one that mints the link).
* ``known`` given but the digest differs: the connector may update the account first
  (when the app's ``update_on_login`` is on), then mint the link.
* ``known`` None: find, create or reactivate the account, then mint the link.
* ``known`` given and ``verify`` True (provisioning asks for it once the cached account was
  last checked longer than the app's ``revalidate_seconds`` ago): look at the account itself
  again (still there? deactivated, Not Current?) and reactivate it or raise
  :class:`gateway.errors.AccountInactive`, as for a first sign-in, then mint the link.
* The LMS says the cached user does not exist: raise :class:`gateway.errors.AccountGone`;
  provisioning drops the cache entry and calls again with ``known=None``.
* ``known`` None and the account found (not created) has a role above what the Profile
  grants: raise :class:`gateway.errors.PrivilegedAccount` (see ``_accounts.py``) unless the
  app adopts privileged accounts; nothing is changed in the LMS and no link is minted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from gateway.identity import Profile


@dataclass(frozen=True, slots=True)
class LmsAccount:
    """An LMS account as the gateway caches it: never a secret, never a link."""

    user_id: str
    profile_digest: str


class ProvisionAction(StrEnum):
    NONE = "none"
    CREATED = "created"
    UPDATED = "updated"
    REACTIVATED = "reactivated"


@dataclass(frozen=True, slots=True)
class SignIn:
    """A freshly minted sign-in link. ``url`` is a credential: never log it; only
    ``gateway/links.py`` may keep it, encrypted, and only while ``reusable_until`` allows.

    ``reusable_until`` (epoch seconds) is set by the connector when the *vendor* makes this
    link usable more than once until then (a SkyPrep ``daily`` key, a Damstra magic link
    within its ``expiresIn``), already minus a safety margin; None means single use (SkyPrep
    ``otl``/``time`` keys, Litmos LoginKeys): never reused, whatever the app's settings."""

    url: str
    account: LmsAccount
    action: ProvisionAction
    reusable_until: float | None = None

    def __repr__(self) -> str:
        return (f"SignIn(url=<redacted>, account={self.account!r}, action={self.action!s}, "
                f"reusable_until={self.reusable_until!r})")


# A reusable link stops being handed out this long before the vendor says it expires: clock
# skew between the gateway and the LMS, and the time a browser takes to follow the redirect.
REUSE_MARGIN_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class LessonSchedule:
    """One lesson schedule of an employee (Damstra), as a portal may show it."""

    id: str
    name: str
    status: str
    start_date: str | None = None
    due_date: str | None = None
    thumbnail_url: str | None = None


@runtime_checkable
class Connector(Protocol):
    """One LMS tenant."""

    async def test_connection(self) -> None:
        """Raise a ConnectorError when the LMS cannot be reached or refuses our credentials."""

    async def sign_in(
        self, profile: Profile, known: LmsAccount | None, target: str | None, *,
        verify: bool = False,
    ) -> SignIn:
        """Provision as needed and mint a sign-in link (see the module docstring)."""

    async def aclose(self) -> None:
        """Close the HTTP client."""


@runtime_checkable
class EmbedCapable(Protocol):
    """Connectors whose LMS can show a lesson player in a portal's iframe (Damstra)."""

    async def lesson_schedules(self, user_id: str, status: str | None) -> list[LessonSchedule]:
        """The employee's lesson schedules, optionally filtered by status."""

    async def embed_url(self, user_id: str, lesson_schedule_id: str) -> str:
        """A player URL for a lesson schedule that belongs to ``user_id``.

        A schedule of another employee raises NotFound, exactly like a missing one.
        """


@dataclass(frozen=True, slots=True)
class LmsUser:
    """An LMS account as SCIM provisioning sees it (never a secret). ``user_id`` is the LMS's
    own id; ``groups`` are LMS group (Damstra) or team (Litmos) names where the LMS has them.

    ``source`` is the connector's own copy of what it read (or just wrote), opaque to everyone
    else: handing the LmsUser back as ``current`` to ``update_user``/``set_active`` lets the
    connector write without reading the account a second time. It may hold vendor fields, so
    it is left out of ``repr`` and comparisons; list pages carry none."""

    user_id: str
    username: str
    email: str
    first_name: str
    last_name: str
    active: bool
    employee_number: str | None = None
    groups: tuple[str, ...] = ()
    source: object = field(default=None, repr=False, compare=False)


@runtime_checkable
class LifecycleCapable(Protocol):
    """Connectors that can manage accounts outside a sign-in (SCIM: joiners, movers, leavers).

    The LMS is the system of record: these read and write the LMS directly; nothing is kept
    in the gateway. Deactivation never deletes an account (training records stay). Accounts
    with a role above a learner's are refused with PrivilegedAccount unless the app adopts them.
    Errors: NotFound for an unknown ``user_id``, the ConnectorError family otherwise.
    """

    async def get_user(self, user_id: str) -> LmsUser:
        """The account with this LMS id."""

    async def find_user(self, profile: Profile) -> LmsUser | None:
        """The account the app's ``match_by`` rule selects for ``profile``, or None."""

    async def list_users(self, start: int, count: int) -> tuple[list[LmsUser], int | None]:
        """One page of accounts (0-based ``start``) and the total when the LMS tells it."""

    async def create_user(self, profile: Profile, *, active: bool = True) -> LmsUser:
        """Create the account (Conflict when the LMS already has one for this profile)."""

    async def update_user(
        self, user_id: str, profile: Profile, *, current: LmsUser | None = None,
    ) -> LmsUser:
        """Bring the account's names, e-mail, employee number and groups to ``profile``.
        ``current``: this account as this connector just returned it (``get_user`` or a
        write); the connector then skips its own read (privileged accounts still refused)."""

    async def set_active(
        self, user_id: str, active: bool, *, current: LmsUser | None = None,
    ) -> LmsUser:
        """Reactivate or deactivate the account (never delete it); ``current`` as above."""


@runtime_checkable
class GroupCapable(Protocol):
    """Connectors that can list the members of an LMS group (Damstra group, Litmos team,
    SkyPrep user group) for SCIM Groups. Memberships change through
    :meth:`LifecycleCapable.update_user` (the profile's ``groups``)."""

    async def group_members(self, group: str, limit: int) -> list[LmsUser]:
        """Accounts in ``group`` (a ``group_map`` value), at most ``limit + 1`` so the caller
        can tell there are more; privileged accounts are left out unless the app adopts
        them. NotFound when the LMS has no such group."""
