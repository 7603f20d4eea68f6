"""Recently minted sign-in links the LMS itself makes reusable, kept so that a repeat sign-in
of the same employee costs no LMS call (issue 11, items 2 and 3).

Only links a connector marks reusable (:attr:`gateway.connectors.base.SignIn.reusable_until`:
SkyPrep ``daily`` keys, Damstra magic links within their ``expiresIn``) are ever kept; one-time
keys and Litmos LoginKeys never are, whatever the app says. Per app, ``reuse_links``:

* ``repeat_clicks`` (default): for ``repeat_click_seconds`` after minting, so a double click or
  an impatient reload gets the link minted seconds ago instead of spending the app's budget;
* ``until_expiry`` (opt-in): until the link expires (a bearer credential for that long: see
  the README for the trade-off);
* ``never``.

Either way a link is reused no longer than ``revalidate_seconds`` after it was minted, so the
account's periodic check (provisioning's ``verify``) is delayed by at most that much, never
skipped: once the link is gone the next sign-in goes through provisioning, which checks the
account when it is due. A link is also handed out only while the account cache still holds
the same LMS account (so whatever drops that entry: SCIM deactivation, AccountGone, drops
reuse too) and, when the app updates accounts on login, only while the Profile is unchanged
(a changed one goes through provisioning, which sends the update and mints a new link).

Every gateway check that precedes provisioning (session, app access rules, IdP authority)
still runs: the caller looks up a link only where it would otherwise call provisioning.

Storage: one entry per (app, employee) in the shared store, so every replica sees it; the key
name holds an HMAC of the IdP identity (no e-mail address, nothing hostile input can shape).
The value is sealed with AES-GCM under a key derived (HKDF-SHA256, its own ``info`` label) from
``[gateway] signing_key``; the associated data binds app, employee and target, so a value
copied to another key (another employee, another app) or read for another target does not
open. TTL: until the link stops being reusable. The link never reaches logs, metrics or
exception text (:class:`CachedLink` redacts its ``repr``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.connectors.base import LmsAccount, SignIn
from gateway.errors import StoreUnavailable
from gateway.identity import Identity, Profile
from gateway.observability import log_event
from gateway.settings import AppSettings
from gateway.store.base import Store

log = logging.getLogger("gateway.links")

_VERSION = b"\x01"
_NONCE = 12
# Links are at most a few hundred characters (Litmos documents 512); anything much bigger in
# the store is not ours.
_MAX_VALUE = 4096


class AccountCache(Protocol):
    """What link reuse needs of provisioning: the account it has cached for an employee."""

    async def cached_account(self, identity: Identity) -> LmsAccount | None:
        """The cached LMS account, or None."""


@dataclass(frozen=True, slots=True)
class CachedLink:
    """A link kept for reuse. ``url`` is a credential: its ``repr`` never shows it."""

    url: str
    user_id: str
    minted_at: float
    until: float

    def __repr__(self) -> str:
        return (f"CachedLink(url=<redacted>, user_id={self.user_id!r}, "
                f"minted_at={self.minted_at!r}, until={self.until!r})")


def _derive(secret: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)


def reuse_window(settings: AppSettings) -> float:
    """Seconds after minting that the app lets a link be reused (0: never)."""
    if settings.reuse_links == "never" or settings.account_cache_seconds == 0:
        return 0.0
    # Apps whose links are single use (Litmos LoginKeys; SkyPrep keys other than daily) never
    # have one to reuse: no store read for them. The connector's reusable_until decides for
    # the others (and would say None here too).
    if settings.connector == "litmos" or (
            settings.skyprep is not None and settings.skyprep.key_type != "daily"):
        return 0.0
    window = (settings.repeat_click_seconds if settings.reuse_links == "repeat_clicks"
              else math.inf)
    # Never past the account's next check (see the module docstring).
    return float(min(window, settings.revalidate_seconds))


class RecentLinks:
    """The encrypted cache of reusable links, shared by every app of the process."""

    def __init__(self, signing_key: str, store: Store, *,
                 clock: Callable[[], float] = time.time) -> None:
        """``clock`` is wall-clock time: ``reusable_until`` and what replicas share are."""
        secret = signing_key.encode()
        self._aead = AESGCM(_derive(secret, b"gateway.recent-links.v1 encryption"))
        self._name_key = _derive(secret, b"gateway.recent-links.v1 key names")
        self._store = store
        self._clock = clock

    # -- keys and sealing --------------------------------------------------------------------

    def _employee(self, identity: Identity) -> str:
        return hmac.new(self._name_key, identity.key.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _key(app: str, employee: str) -> str:
        return f"link:{app}:{employee}"

    @staticmethod
    def _aad(app: str, employee: str, target: str | None) -> bytes:
        return json.dumps(["gateway.link.v1", app, employee, target]).encode()

    def _seal(self, link: CachedLink, aad: bytes) -> bytes:
        plain = json.dumps({"u": link.url, "id": link.user_id, "m": link.minted_at,
                            "x": link.until}).encode()
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plain, aad)

    def _open(self, raw: bytes, aad: bytes) -> CachedLink | None:
        """The link sealed in ``raw`` for ``aad``, or None for anything else (another key's
        value, another signing key, tampering, garbage). Never raises with the value."""
        if len(raw) > _MAX_VALUE or not raw.startswith(_VERSION) or len(raw) < 1 + _NONCE + 16:
            return None
        try:
            plain = self._aead.decrypt(raw[1:1 + _NONCE], raw[1 + _NONCE:], aad)
        except InvalidTag:
            return None
        try:
            data = json.loads(plain)
            link = CachedLink(str(data["u"]), str(data["id"]), float(data["m"]),
                              float(data["x"]))
        except (ValueError, TypeError, KeyError):
            return None
        return link if math.isfinite(link.until) and math.isfinite(link.minted_at) else None

    # -- the three operations ----------------------------------------------------------------

    async def lookup(self, app: str, settings: AppSettings, accounts: AccountCache,
                     identity: Identity, profile: Profile, target: str | None) -> str | None:
        """A link minted earlier that may be handed out again now, or None.

        Call it only after every check that precedes provisioning passed. Raises
        StoreUnavailable when the store cannot be read (never read as "no link")."""
        window = reuse_window(settings)
        if window <= 0:
            return None
        employee = self._employee(identity)
        raw = await self._store.get(self._key(app, employee))
        if raw is None:
            return None
        link = self._open(raw, self._aad(app, employee, target))
        now = self._clock()
        # The app's settings now, not those in force when the link was kept, decide; and a
        # link "minted" in the future is not one we wrote in good faith.
        if link is None or not (link.minted_at - 300 <= now < min(link.until,
                                                                  link.minted_at + window)):
            return None
        account = await accounts.cached_account(identity)
        if account is None or account.user_id != link.user_id:
            # Provisioning forgot the account (SCIM deactivated it, the LMS lost it, the
            # cache expired): the link goes with it.
            await self._store.delete(self._key(app, employee))
            return None
        if settings.update_on_login and account.profile_digest != profile.digest():
            return None  # a changed profile is sent to the LMS; that sign-in mints anew
        return link.url

    async def remember(self, app: str, settings: AppSettings, identity: Identity,
                       target: str | None, sign_in: SignIn) -> None:
        """Keep ``sign_in``'s link when the vendor made it reusable and the app reuses links.
        Best effort: a store that cannot take it costs a later sign-in an LMS call."""
        vendor_until = sign_in.reusable_until
        window = reuse_window(settings)
        if vendor_until is None or window <= 0:
            return
        now = self._clock()
        until = min(vendor_until, now + window)
        if until <= now + 1:
            return
        employee = self._employee(identity)
        link = CachedLink(sign_in.url, sign_in.account.user_id, now, until)
        try:
            await self._store.set(self._key(app, employee),
                                  self._seal(link, self._aad(app, employee, target)), until - now)
        except StoreUnavailable as exc:
            log_event(log, logging.WARNING, "could not keep a reusable sign-in link", app=app,
                      reason=exc.reason)

    async def forget(self, identity: Identity, apps: Iterable[str]) -> None:
        """Drop the employee's links of every app in ``apps`` (sign-out, another person
        signing in on the same browser, the account refused)."""
        employee = self._employee(identity)
        for app in apps:
            await self._store.delete(self._key(app, employee))
