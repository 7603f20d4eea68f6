"""Litmos connector (contract: the Litmos "Developer API" overview and Litmos' public SSO
documentation on the user's ``LoginKey``).

* JSON everywhere: ``format=json`` and ``source`` in the query string, the API key in the
  ``apikey`` header (never in a URL). Strings in Litmos JSON may be HTML-escaped
  (``O&#39;Brien``), so every string of an answer is unescaped before use.
* Sign-in link: the user's ``LoginKey``, which changes on every use: it is read from a
  fresh answer for every sign-in and never stored. A returning employee (cached account,
  unchanged profile) costs exactly one call, ``GET /users/{id}``; a new employee's create
  answer carries the LoginKey, so no fetch follows the create.
* Provisioning: ``GET /users/{username}``; none: ``POST /users``; 409 there: someone else
  created it meanwhile, fetch it. New or first-seen users are added to the app's teams plus
  the teams their groups map to. Inactive users are reactivated or refused per app.
* Deep links: ``course:<OriginalId>`` appends ``&c=<OriginalId>``; any other target is
  refused. (The OriginalId is the number Litmos shows in course URLs.)
* Ids: Litmos user and team ``Id``s are opaque strings (not numbers), so they are held to a
  strict ASCII charset (``_ID``) rather than to digits; the course OriginalId is a number.
* Privileged accounts: "Litmos API overview" (Authentication & Access Level) names the
  AccessLevels Learner, TeamLeader, Administrator and Account Owner. Anything but Learner (or
  the AccessLevel the app maps for the employee) is above a learner; an existing user with
  such an AccessLevel, or none we can read, is not adopted unless the app says so.
* Revalidation: every sign-in reads the user (the LoginKey comes from that read), so an
  inactive user is noticed on every sign-in; ``verify`` costs nothing extra here.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from gateway.connectors._accounts import refuse_privileged
from gateway.connectors._http import LmsHttp, json_body, same_origin
from gateway.connectors.base import LmsAccount, ProvisionAction, SignIn
from gateway.connectors.litmos_users import LITMOS_ID as _ID
from gateway.connectors.litmos_users import LitmosLifecycle
from gateway.connectors.litmos_users import checked_user as _user
from gateway.connectors.litmos_users import level as _level
from gateway.errors import (
    AccountGone,
    AccountInactive,
    ConfigError,
    Conflict,
    ConnectorError,
    UnsafeTarget,
)
from gateway.identity import Profile
from gateway.settings import AppSettings, LitmosSettings

REGION_URLS = {
    "us": "https://api.litmos.com/v1.svc",
    "eu": "https://api.litmoseu.com/v1.svc",
    "au": "https://api.litmos.com.au/v1.svc",
}
_COURSE_TARGET = re.compile(r"^course:([0-9]{1,12})$")
_MAX_LOGIN_KEY = 512  # documented maximum length of a LoginKey URL
# Fields sent back on PUT: Litmos replaces the user with the body, so the current values go
# back with our changes; LoginKey, Id-like and read-only fields are left out.
_PUT_FIELDS = ("UserName", "FirstName", "LastName", "Email", "AccessLevel", "DisableMessages",
               "Active", "SkipFirstLogin", "IsCustomUsername", "TimeZone")


def _unescape(value: Any) -> Any:
    if isinstance(value, str):
        return html.unescape(value)
    if isinstance(value, dict):
        return {k: _unescape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unescape(v) for v in value]
    return value


class LitmosConnector(LitmosLifecycle):
    """One Litmos company (Connector; LifecycleCapable through ``litmos_users.py``)."""

    # "Litmos API overview", API Usage Limits: over 100 requests in a rolling minute "the API
    # will return HTTP 503 (Service Unavailable) - Rating Limit Exceeded".
    rate_limit_statuses = frozenset({429, 503})

    def first_sign_in_calls(self, profile: Profile) -> int:
        """LMS calls a first sign-in needs (reserved at once by the budget): look the
        username up, create, then one call per team (the LoginKey comes with the user)."""
        return 2 + len(dict.fromkeys((*self.settings.teams, *profile.groups)))

    def __init__(
        self, app_name: str, app: AppSettings, http: LmsHttp, *, dev_mode: bool = False
    ) -> None:
        if app.litmos is None:
            raise ConfigError([f"app.{app_name}.litmos: section missing"])
        self.app_name = app_name
        self.app = app
        self.settings: LitmosSettings = app.litmos
        self.http = http
        http.rate_limit_statuses = self.rate_limit_statuses
        self.dev_mode = dev_mode
        self._base = (self.settings.api_url or REGION_URLS[self.settings.region]).rstrip("/")

    # -- plumbing --------------------------------------------------------------------

    async def _call(
        self, operation: str, method: str, path: str, *, idempotent: bool,
        ok: tuple[int, ...] = (200,), passthrough: tuple[int, ...] = (),
        params: dict[str, str] | None = None, body: Any = None,
    ) -> tuple[int, Any]:
        response = await self.http.call(
            operation, method, f"{self._base}{path}", idempotent=idempotent, ok=ok,
            passthrough=passthrough,
            params={"source": self.settings.source, "format": "json", **(params or {})},
            headers={"apikey": self.settings.api_key.reveal(),
                     "Accept": "application/json", "Content-Type": "application/json"},
            json_data=body,
        )
        status = response.status_code
        if status in passthrough or not response.content:
            return status, None
        return status, _unescape(json_body(response, operation))

    async def _get_user(self, operation: str, key: str) -> dict[str, Any] | None:
        """``GET /users/{id-or-username}``; None on 404."""
        status, body = await self._call(
            operation, "GET", f"/users/{quote(key, safe='')}", idempotent=True,
            passthrough=(404,),
        )
        return None if status == 404 else _user(body, operation)

    # -- Connector -------------------------------------------------------------------

    async def test_connection(self) -> None:
        """List one user: proves the host, the API key and the source are accepted."""
        _, body = await self._call("test_connection", "GET", "/users", idempotent=True,
                                   params={"limit": "1"})
        if not isinstance(body, list):
            raise ConnectorError("test_connection: Litmos answer is not a list")

    async def sign_in(
        self, profile: Profile, known: LmsAccount | None, target: str | None, *,
        verify: bool = False,
    ) -> SignIn:
        """Provision as needed, then hand out the user's current LoginKey. ``verify`` adds
        nothing: the one read every sign-in makes already shows ``Active``."""
        course = _course(target)
        digest = profile.digest()
        if known is not None:
            if not _ID.fullmatch(known.user_id):
                raise AccountGone("cached Litmos user id has an unexpected form")
            user = await self._get_user("get_user", known.user_id)
            if user is None:
                raise AccountGone("get_user: cached Litmos user no longer exists")
            if str(user.get("UserName", "")).lower() != profile.username.lower():
                # Renamed in Litmos, or our username rule changed: find it afresh.
                raise AccountGone("get_user: cached Litmos user now has another username")
            user, action = await self._existing(
                user, profile, refresh=known.profile_digest != digest
            )
        else:
            user, action = await self._find_or_create(profile)
        url = self._login_url(user, course)
        return SignIn(url, LmsAccount(user["Id"], digest), action)

    async def aclose(self) -> None:
        await self.http.client.aclose()

    # -- provisioning ----------------------------------------------------------------

    async def _find_or_create(self, profile: Profile) -> tuple[dict[str, Any], ProvisionAction]:
        user = await self._find(profile.username)
        if user is not None:
            self._check_adoptable(user, profile)
            return await self._existing(user, profile, refresh=True)
        body = self.new_user_body(profile)
        status, answer = await self._call(
            "create_user", "POST", "/users", idempotent=False, ok=(201, 200), passthrough=(409,),
            body=body,
        )
        if status == 409:
            # Someone (another replica, an admin) created it meanwhile: use theirs.
            user = await self._find(profile.username)
            if user is None:
                raise ConnectorError("create_user: 409 but the existing user cannot be found")
            self._check_adoptable(user, profile)
            return await self._existing(user, profile, refresh=True)
        user = _user(answer, "create_user")
        self._check_username(user, profile.username)
        await self._add_to_teams(user, profile)
        return user, ProvisionAction.CREATED

    async def _find(self, username: str) -> dict[str, Any] | None:
        """The user whose UserName is ``username``, or None.

        ``GET /users/{x}`` matches ids too, so an answer is only taken when its UserName is
        ours: a username that happens to equal another user's Id must not sign in as them.
        """
        if username in (".", "..") or any(c in username for c in "/\\?#%"):
            # Not safe as one path segment (servers decode %2F before routing): search.
            return await self._search(username)
        user = await self._get_user("find_user", username)
        if user is None:
            return None
        if str(user.get("UserName", "")).lower() == username.lower():
            return user
        return await self._search(username)

    async def _search(self, username: str) -> dict[str, Any] | None:
        _, rows = await self._call("search_users", "GET", "/users", idempotent=True,
                                   params={"search": username[:50], "limit": "1000"})
        if not isinstance(rows, list):
            raise ConnectorError("search_users: Litmos answer is not a list")
        matches = [r for r in rows if isinstance(r, dict)
                   and str(r.get("UserName", "")).lower() == username.lower()]
        if not matches:
            return None
        user_id = matches[0].get("Id")
        if not isinstance(user_id, str) or not _ID.fullmatch(user_id):
            raise ConnectorError("search_users: Litmos user id has an unexpected form")
        return await self._get_user("get_user", user_id)

    async def _existing(
        self, user: dict[str, Any], profile: Profile, *, refresh: bool
    ) -> tuple[dict[str, Any], ProvisionAction]:
        """Reactivate (or refuse) an inactive user; with ``refresh``, bring it up to date
        (when the app updates on login) and put it in its teams. ``user`` keeps the LoginKey
        of the fetch: neither a PUT nor a team change uses it."""
        action = ProvisionAction.NONE
        if user.get("Active") is False:
            if not self.app.reactivate:
                raise AccountInactive("Litmos user is inactive and the app may not reactivate")
            await self._put(user, {"Active": True}, "reactivate_user")
            user = {**user, "Active": True}
            action = ProvisionAction.REACTIVATED
        if not refresh:
            return user, action
        if self.app.update_on_login:
            wanted = {"FirstName": profile.first_name, "LastName": profile.last_name,
                      "Email": profile.email}
            if profile.role:
                wanted["AccessLevel"] = profile.role
            if any(user.get(k) != v for k, v in wanted.items()):
                await self._put(user, wanted, "update_user")
                user = {**user, **wanted}
                action = action if action is ProvisionAction.REACTIVATED else (
                    ProvisionAction.UPDATED)
        await self._add_to_teams(user, profile)
        return user, action

    def _check_adoptable(self, user: dict[str, Any], profile: Profile) -> None:
        """Refuse an existing user whose AccessLevel is above Learner and above the mapped
        role (see the module docstring); before any reactivation, update or team change."""
        level = user.get("AccessLevel")
        allowed = {"learner", _level(profile.role or "Learner")}
        if isinstance(level, str) and _level(level) in allowed:
            return
        refuse_privileged(self.app_name, self.app, lms_user_id=str(user["Id"]),
                          why=level if isinstance(level, str) else "unreadable AccessLevel")

    async def _put(self, user: dict[str, Any], changes: dict[str, Any], operation: str) -> None:
        body = {k: user[k] for k in _PUT_FIELDS if k in user}
        body.update(changes)
        body["Id"] = user["Id"]
        status, _ = await self._call(operation, "PUT", f"/users/{user['Id']}", idempotent=True,
                                     passthrough=(404, 409), body=body)
        if status == 404:
            raise AccountGone(f"{operation}: Litmos user no longer exists")
        if status == 409:
            raise Conflict(f"{operation}: another Litmos user has this UserName")

    async def _add_to_teams(self, user: dict[str, Any], profile: Profile) -> None:
        await self._join_teams(user, list(dict.fromkeys((*self.settings.teams,
                                                         *profile.groups))))

    # -- sign-in link ----------------------------------------------------------------

    def _check_username(self, user: dict[str, Any], username: str) -> None:
        if str(user.get("UserName", "")).lower() != username.lower():
            raise ConnectorError("Litmos answered with another user than the one asked for")

    def _login_url(self, user: dict[str, Any], course: str | None) -> str:
        url = user.get("LoginKey")
        if (not isinstance(url, str) or len(url) > _MAX_LOGIN_KEY
                or not same_origin(url, self.settings.login_host, allow_http=self.dev_mode)):
            raise ConnectorError(
                f"Litmos LoginKey is not a link on the company host {self.settings.login_host}"
            )
        if course is None:
            return url
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "c"]
        query.append(("c", course))
        return urlunsplit(parts._replace(query=urlencode(query)))


def _course(target: str | None) -> str | None:
    """The course OriginalId of a ``course:<id>`` target; other targets are refused."""
    if target is None:
        return None
    match = _COURSE_TARGET.fullmatch(target)
    if match is None:
        raise UnsafeTarget("Litmos targets must be course:<OriginalId>")
    return match.group(1)
