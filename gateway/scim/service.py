"""One app's SCIM Users, translated statelessly into LMS calls (the LMS is the system of
record; nothing about a person is kept in the gateway).

Trust, as at sign-in: a SCIM User becomes an :class:`Identity` of the calling IdP and goes
through ``authority.vouch`` (the IdP's ``email_domains``) and the app's mapping
(``policy.profile_for``) before any LMS write. Accounts of people outside the IdP's domains
are invisible to its client (404, as if absent; nothing changed); a request that would
create or move someone outside them is refused (403). Privileged LMS accounts are refused
by the connector (PrivilegedAccount, 403).

``required_groups`` is not applied here: a SCIM User carries no group memberships, and the
IdP's assignment of people to the app is what decides who is provisioned. Sign-in still
applies it. An update keeps the account's LMS groups and role (SCIM Users carry neither).

Deactivation (PATCH/PUT ``active: false``, or DELETE) never deletes: it deactivates the LMS
account and drops the gateway's cached account, so the employee's next sign-in looks the
account up again and is refused (check-config requires ``reactivate = false`` for apps
provisioned over SCIM, or a sign-in would undo the leaver's deactivation).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from gateway.auth.authority import vouch
from gateway.connectors.base import LifecycleCapable, LmsUser
from gateway.errors import NotFound, PrivilegedAccount
from gateway.identity import Profile
from gateway.observability import AUDIT_LOGGER, log_event
from gateway.policy import normalise_email, profile_for
from gateway.provisioning import Provisioner
from gateway.scim.errors import ScimError
from gateway.scim.filters import Lookup
from gateway.scim.resources import identity_of
from gateway.settings import AppSettings, OidcIdpSettings, SamlIdpSettings

audit_log = logging.getLogger(AUDIT_LOGGER)


class ScimService:
    """SCIM Users of one app, for the IdPs whose SCIM clients may provision it."""

    def __init__(
        self,
        app_name: str,
        app: AppSettings,
        connector: LifecycleCapable,
        provisioner: Provisioner,
        idps: dict[str, OidcIdpSettings | SamlIdpSettings],
    ) -> None:
        self.app_name = app_name
        self.app = app
        self.connector = connector
        self.provisioner = provisioner
        self._idps = idps
        # The sign-in mapping minus the group rule SCIM cannot evaluate (module docstring).
        self._mapping = dataclasses.replace(app, required_groups=())

    # -- reads -------------------------------------------------------------------------

    async def get(self, idp: str, user_id: str) -> LmsUser:
        """The account ``user_id``; NotFound when absent or outside the IdP's domains."""
        user = await self.connector.get_user(user_id)
        if not self.visible(idp, user):
            raise NotFound(f"scim: LMS user {user_id} is outside IdP {idp}'s domains")
        return user

    async def search(
        self, idp: str, lookup: Lookup | None, start: int, count: int
    ) -> tuple[list[LmsUser], int]:
        """A page (0-based ``start``) of the accounts ``lookup`` selects, or of all accounts
        visible to ``idp`` when None, and the total the response reports.

        Unfiltered, ``start`` counts LMS accounts. For an IdP limited to ``email_domains``
        the total counts only its own people up to this page: the LMS-wide total would tell
        it how many accounts other IdPs' people hold. Such an IdP finds people by filter
        (``userName eq``), as Entra and Okta do; an unfiltered listing is one page."""
        if lookup is None:
            users, total = await self.connector.list_users(start, max(count, 1))
            visible = [u for u in users if self.visible(idp, u)][:count]
            if self._idps[idp].email_domains:
                return visible, start + len(visible)
            return visible, total if total is not None else start + len(users)
        found = await self._find(idp, lookup)
        matches = [found] if found is not None else []
        return matches[start:start + count], len(matches)

    async def _find(self, idp: str, lookup: Lookup) -> LmsUser | None:
        if lookup.kind == "external_id":
            return None  # never stored (see resources.py)
        if lookup.kind == "id":
            try:
                return await self.get(idp, lookup.value)
            except NotFound:
                return None
        kind = lookup.kind
        if kind == "username":
            if self.app.username == "employee_number":
                kind = "employee_number"
            elif self.app.username == "email" or "@" in lookup.value:
                kind = "email"
            else:
                return None  # a subject: the LMS cannot be searched by it
        wanted = "email" if kind == "email" else "employee_number"
        if self.app.match_by != wanted:
            raise ScimError(400, "invalidFilter",
                            f"this app finds accounts by {self.app.match_by}; filter on it")
        value = lookup.value.strip()
        if kind == "email":
            email = normalise_email(value)
            if email is None or not self._owns(idp, email):
                return None  # another IdP's address: not even looked up
            probe = Profile(email=email, first_name="", last_name="", username=email)
        else:
            probe = Profile(email="", first_name="", last_name="", username=value,
                            employee_number=value)
        try:
            user = await self.connector.find_user(probe)
        except PrivilegedAccount:
            # Privileged accounts are not managed over SCIM (left out of listings too); a
            # 403 here would tell the caller this number is an admin's, maybe elsewhere.
            return None
        if user is None or not self.visible(idp, user):
            return None
        same = (user.email.lower() == value.lower() if kind == "email"
                else (user.employee_number or "") == value)
        return user if same else None

    # -- writes ------------------------------------------------------------------------

    async def create(self, idp: str, resource: Any) -> LmsUser:
        """Create the account (409 uniqueness when the LMS already has one for this person:
        IdPs then look it up by filter and PATCH it)."""
        profile = self._profile(idp, resource)
        taken = ScimError(409, "uniqueness", "the LMS already has an account for this person")
        try:
            existing = await self.connector.find_user(profile)
        except PrivilegedAccount:
            if self.app.match_by == "email":
                raise  # the address is in the caller's domains: its own admin, say so
            # Matched by employee number, maybe someone outside the caller's domains: say
            # "taken" without saying it is an admin's.
            raise taken from None
        if existing is not None:
            raise taken
        active = resource.active is not False
        user = await self.connector.create_user(profile, active=active)
        self.audit(idp, "create", user.user_id)
        return user

    async def replace(self, idp: str, current: LmsUser, resource: Any) -> LmsUser:
        """Bring ``current`` (already read with :meth:`get`) to ``resource`` (PUT, or the
        result of a PATCH): one update when names, e-mail or employee number differ, one
        activation change when ``active`` differs; nothing when nothing does."""
        # A SCIM User carries no groups: keep the account's groups and role (the mapping
        # would give ``default_role`` and demote someone ``role_map`` raised at sign-in).
        profile = dataclasses.replace(self._profile(idp, resource), groups=current.groups,
                                      role=None)
        user = current
        want_active = current.active if resource.active is None else bool(resource.active)
        if want_active and not user.active:
            user = await self._set_active(idp, user, True)
        if _differs(user, profile):
            user = await self.connector.update_user(user.user_id, profile, current=user)
            self.audit(idp, "update", user.user_id)
        if not want_active and user.active:
            user = await self._set_active(idp, user, False)
        return user

    async def deactivate(self, idp: str, user_id: str) -> None:
        """DELETE: deactivate (never delete; training records stay). Repeating it is harmless."""
        user = await self.get(idp, user_id)
        if user.active:
            await self._set_active(idp, user, False)
        else:
            await self._forget(user)

    async def _set_active(self, idp: str, user: LmsUser, active: bool) -> LmsUser:
        # ``current``: the account as just read, so the connector writes without re-reading.
        result = await self.connector.set_active(user.user_id, active, current=user)
        self.audit(idp, "reactivate" if active else "deactivate", user.user_id)
        if not active:
            await self._forget(user)
        return result

    async def _forget(self, user: LmsUser) -> None:
        # Sign-ins cache the account under the id the connector signs in with: the LMS id,
        # or the e-mail address where the LMS API addresses users by it (SkyPrep).
        await self.provisioner.forget_user(user.user_id)
        if user.email:
            await self.provisioner.forget_user(user.email.lower())

    # -- trust -------------------------------------------------------------------------

    def _profile(self, idp: str, resource: Any) -> Profile:
        """The Profile the app's mapping gives the IdP's User (AccessDenied: 403)."""
        identity = identity_of(idp, resource)
        if normalise_email(identity.email) is None:
            # Every LMS account needs one; a malformed request, not a refusal.
            raise ScimError(400, "invalidValue", "a (work) e-mail address is required")
        vouch(identity, self._idps[idp])
        return profile_for(self.app_name, self._mapping, identity)

    def visible(self, idp: str, user: LmsUser) -> bool:
        """Whether ``user`` is one of ``idp``'s people (its ``email_domains``)."""
        email = normalise_email(user.email)
        return self._owns(idp, email) if email is not None else not self._idps[idp].email_domains

    def _owns(self, idp: str, email: str) -> bool:
        """Whether the (normalised) address is in ``idp``'s domains."""
        domains = self._idps[idp].email_domains
        if not domains:
            return True  # the app's only IdP (check-config): every account is its people's
        return email.rpartition("@")[2] in domains

    def audit(self, idp: str, action: str, user_id: str, **extra: str) -> None:
        """One audit event per LMS change: who (the IdP), what, which LMS account (and
        group); never the credential or an e-mail address."""
        log_event(audit_log, logging.INFO, "scim", idp=idp, app=self.app_name,
                  action=action, lms_user_id=user_id, **extra)


def _differs(user: LmsUser, profile: Profile) -> bool:
    return (
        user.email.lower() != profile.email.lower()
        or user.first_name != profile.first_name
        or user.last_name != profile.last_name
        or user.username != profile.username
        or (user.employee_number or None) != (profile.employee_number or None)
    )

