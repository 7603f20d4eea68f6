"""SkyPrep connector (contract: SkyPrep's "Introduction to SkyPrep APIs" and its Admin API
reference).

``get_login_key`` with ``autocreate`` finds or creates the account (names and ``;``-joined
groups) and answers the sign-in ``url``. So a returning employee costs exactly one call; a new
one costs two, because ``get_user`` first checks the existing account's role (see
*Privileged accounts* below), and one when the app sets ``adopt_privileged_accounts``.

* Every call is an HTTPS POST with ``api_key``/``acct_key`` in the form body, never in the
  query string (the docs warn that query strings end up in logs).
* SkyPrep accounts are keyed by e-mail: ``LmsAccount.user_id`` is the lower-cased e-mail.
* ``get_login_key`` does not say whether it created the account, so the action is reported
  as ``none`` unless we updated the account first.
* A cached account that was deleted in SkyPrep is re-created transparently while
  ``autocreate`` is on; with it off, a 404 for a cached account is AccountGone, and for an
  unknown employee AccessDenied (nobody may create the account).
* SkyPrep documents no deep links: any ``target`` raises UnsafeTarget.
* ``get_login_key`` takes no role; ``Profile.role`` is applied by ``update_user`` when the
  profile changed and the app has ``update_on_login`` on.
* Privileged accounts: the Admin API reference creates "Users (learners, admins, managers)"
  with a ``role`` (``manager``, ``admin``; ``power_user`` for Power Users). ``get_login_key``
  neither shows the role nor can be told to refuse, so a first sign-in (no cached account)
  first asks ``get_user`` by e-mail: 404 means new (get_login_key creates it as a learner), an
  existing user whose role is not ``learner`` (nor the app's mapped role), or whose role is
  unreadable, is not adopted (an answer without ``role`` counts as a learner, see below).
  That is 2 calls for a first sign-in, 1 for a returning one
  (and 1 for every sign-in when ``adopt_privileged_accounts`` is on).
* A cached account is the account of the cached e-mail: when the IdP now sends another
  e-mail address, that is another SkyPrep account and is treated as a first sign-in.
* Deactivated accounts: SkyPrep has no active flag; a leaver's access window ends
  (``access_end_date`` in the past, see ``skyprep_users.py``). The ``get_user`` a first
  sign-in makes anyway (and ``verify``, which adds that one call for a cached account) sees
  it: the window is reopened (``update_user`` clears the end date, one more call) when the
  app reactivates, else AccountInactive. With ``adopt_privileged_accounts`` a first sign-in
  reads nothing, and SkyPrep's own page refuses a link of an ended account.
  ``get_login_key`` re-creates a deleted account (or answers 404 without autocreate).
* Link reuse (``gateway/links.py``): a ``daily`` key is valid for its whole UTC day, so the
  SignIn says it is reusable until the day ends (minus a margin); ``time`` and ``otl`` keys
  never are.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.connectors._accounts import numeric_id, refuse_privileged
from gateway.connectors._http import LmsHttp, json_body, same_origin
from gateway.connectors.base import REUSE_MARGIN_SECONDS, LmsAccount, ProvisionAction, SignIn
from gateway.connectors.skyprep_users import SkyPrepLifecycle, access_open, excess_role
from gateway.connectors.skyprep_users import join_groups as _groups
from gateway.errors import (
    AccessDenied,
    AccountGone,
    AccountInactive,
    ConfigError,
    ConnectorError,
    UnsafeTarget,
)
from gateway.identity import Profile
from gateway.settings import AppSettings, SkyPrepSettings


def daily_key_reusable_until(minted_at: float) -> float | None:
    """Until when a ``daily`` key minted at ``minted_at`` may be handed out again: SkyPrep's
    daily key is valid for the UTC day it was issued on (and ``get_login_key`` answers the same
    key all that day), so until that day ends, minus REUSE_MARGIN_SECONDS; None when less
    than the margin is left."""
    until = (minted_at // 86400 + 1) * 86400 - REUSE_MARGIN_SECONDS
    return until if until > minted_at else None


class SkyPrepConnector(SkyPrepLifecycle):
    """One SkyPrep tenant (Connector; LifecycleCapable through ``skyprep_users.py``)."""

    # "SkyPrep's APIs are limited to 100 API calls per minute" (Introduction to SkyPrep APIs)
    # without naming the answer; 429 is assumed. A 503 is an outage, not "slow down".
    rate_limit_statuses = frozenset({429})

    def first_sign_in_calls(self, profile: Profile) -> int:
        """LMS calls a first sign-in needs (reserved at once by the budget): get_user then
        get_login_key; get_login_key alone when privileged accounts are adopted anyway."""
        return 1 if self.app.adopt_privileged_accounts else 2

    def __init__(
        self, app_name: str, app: AppSettings, http: LmsHttp, *, dev_mode: bool = False
    ) -> None:
        if app.skyprep is None:
            raise ConfigError([f"app.{app_name}.skyprep: section missing"])
        self.app_name = app_name
        self.app = app
        self.settings: SkyPrepSettings = app.skyprep
        self.http = http
        http.rate_limit_statuses = self.rate_limit_statuses
        self.dev_mode = dev_mode
        self._base = self.settings.api_url.rstrip("/")
        self._link_host = self.settings.login_host or self.settings.acct_key

    async def _post(
        self, operation: str, data: dict[str, str], *, idempotent: bool,
        passthrough: tuple[int, ...] = (),
    ) -> tuple[int, Any]:
        form = {
            "api_key": self.settings.api_key.reveal(),
            "acct_key": self.settings.acct_key,
            **data,
        }
        response = await self.http.call(
            operation, "POST", f"{self._base}/{operation}",
            idempotent=idempotent, passthrough=passthrough, form=form,
            headers={"Accept": "application/json"},
        )
        return response.status_code, json_body(response, operation)

    async def test_connection(self) -> None:
        """Call ``test_connection``; raise a ConnectorError unless SkyPrep says success."""
        _, body = await self._post("test_connection", {}, idempotent=True)
        if not isinstance(body, dict) or body.get("message") != "success":
            raise ConnectorError("test_connection: SkyPrep did not answer success")

    async def sign_in(
        self, profile: Profile, known: LmsAccount | None, target: str | None, *,
        verify: bool = False,
    ) -> SignIn:
        """Provision (through ``get_login_key`` autocreate) and mint a sign-in link."""
        if target is not None:
            raise UnsafeTarget("SkyPrep has no documented deep links")
        if profile.groups:
            _groups(profile.groups)  # refuse before any call, not halfway through
        action = ProvisionAction.NONE
        digest = profile.digest()
        if known is not None and known.user_id != profile.email.lower():
            known = None  # another e-mail is another SkyPrep account: check it afresh
        adopt = self.app.adopt_privileged_accounts
        if (known is None and not adopt) or (known is not None and verify):
            if await self._check_adoptable(profile, check_role=not adopt):
                action = ProvisionAction.REACTIVATED
        if known is not None and known.profile_digest != digest and self.app.update_on_login:
            if await self._update(profile):
                action = ProvisionAction.UPDATED
            elif not self.settings.autocreate:
                raise AccountGone("update_user: cached SkyPrep user no longer exists")
        minted_at = time.time()
        url = await self._login_key(profile, known)
        reusable = (daily_key_reusable_until(minted_at) if self.settings.key_type == "daily"
                    else None)  # "time" keys' lifetime is not ours to know; "otl": one use
        return SignIn(url, LmsAccount(profile.email.lower(), digest), action, reusable)

    async def _check_adoptable(self, profile: Profile, *, check_role: bool = True) -> bool:
        """``get_user`` by e-mail: nothing (404) or a learner passes; anyone else is refused
        before get_login_key could sign the browser in as them. An account whose access
        ended is reopened (True) or refused with AccountInactive, per the app."""
        body = await self._read_user({"user_email": profile.email})
        if body is None:
            return False
        # The reference's get_user sample shows no "role" (it ends in "//More JSON data");
        # create_user's answer does. An answer without the key is read as SkyPrep's default
        # role, learner: refusing it would lock out every existing account on a tenant whose
        # get_user omits roles. A role that is present must be one we allow.
        role = excess_role(body, {"learner", (profile.role or "learner").strip().lower()})
        if role is not None and check_role:
            refuse_privileged(self.app_name, self.app,
                              lms_user_id=numeric_id(body.get("id")) or "unknown", why=role)
        if access_open(body):
            return False
        if not self.app.reactivate:
            raise AccountInactive("skyprep: the user's access has ended; app forbids "
                                  "reactivation")
        await self._post("update_user", {"user_email": profile.email, "access_end_date": ""},
                         idempotent=True)
        return True

    async def _update(self, profile: Profile) -> bool:
        """``update_user``; False when SkyPrep has no such user (404)."""
        data = {
            "user_email": profile.email,
            "first_name": profile.first_name,
            "last_name": profile.last_name,
        }
        if profile.employee_number:
            data["card_no"] = profile.employee_number
        if profile.role:
            data["role"] = profile.role
        if profile.groups:
            # Assumed: update_user takes the same user_groups as get_login_key.
            data["user_groups"] = _groups(profile.groups)
        status, _ = await self._post("update_user", data, idempotent=True, passthrough=(404,))
        return status != 404

    async def _login_key(self, profile: Profile, known: LmsAccount | None) -> str:
        data = {
            "user_email": profile.email,
            "key_type": self.settings.key_type,
            "autocreate": "true" if self.settings.autocreate else "false",
            "first_name": profile.first_name,
            "last_name": profile.last_name,
        }
        if profile.groups:
            data["user_groups"] = _groups(profile.groups)
        # Safe to retry: the account is keyed by e-mail, so a retry after a lost answer finds
        # the account the first attempt created, and an unused one-time key is harmless.
        status, body = await self._post(
            "get_login_key", data, idempotent=True, passthrough=(404,)
        )
        if status == 404:
            if known is not None:
                raise AccountGone("get_login_key: cached SkyPrep user no longer exists")
            raise AccessDenied("get_login_key: no SkyPrep account and autocreate is off")
        if not isinstance(body, dict):
            raise ConnectorError("get_login_key: answer is not a JSON object")
        email = body.get("email")
        if email is not None and (
            not isinstance(email, str) or email.lower() != profile.email.lower()
        ):
            raise ConnectorError("get_login_key: answer is for another user")
        url = body.get("url")
        if not isinstance(url, str) or not same_origin(
            url, self._link_host, allow_http=self.dev_mode
        ):
            raise ConnectorError(
                f"get_login_key: sign-in link is not on the tenant host {self._link_host}"
            )
        return url

    async def aclose(self) -> None:
        await self.http.client.aclose()
