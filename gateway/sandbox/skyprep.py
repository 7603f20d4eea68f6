"""A SkyPrep Admin API simulator (demo and tests only), following SkyPrep's "Introduction to
SkyPrep APIs" and its Admin API reference.

* ``/admin/api/<action>`` by GET or POST: ``test_connection``, ``get_login_key``,
  ``create_user``, ``update_user``, ``get_user``, ``get_users``, ``destroy_user``,
  ``get_user_group_enrollments_for_user``, ``remove_user_from_user_group``, ``get_user_groups``,
  ``get_user_group`` (its ``users`` assumed to be shaped as ``get_user`` answers).
* Access window: ``create_user``/``update_user`` take ``access_start_date`` and
  ``access_end_date`` ("July 30, 2017"; an empty value clears it, assumed). ``get_user``
  shows them (the reference's sample elides them as "More JSON data"; assumed), and the
  sign-in page refuses a user outside the window (assumed: the reference documents the
  dates, not their effect).
* Groups: ``user_groups`` (``;``-joined names) adds the user to groups by name, creating
  missing groups; ``get_user`` lists them with ids as ``user_groups`` (assumed shape).
* ``api_key``/``acct_key`` from the POST body (form or JSON), the query string, or the
  ``X-SkyPrep-API-Key`` / ``X-SkyPrep-Acct-Key`` headers.
* Errors: 400 (bad parameters), 401 (no/wrong credentials), 403 (the key may not use this
  action), 404 (no such user or action), 500 (injected), each with a JSON body.
* 100 calls per minute per client IP. The docs only say calls "may be rate limited"; we
  assume the answer is 429 with a ``Retry-After`` header.
* ``/account/login_with_key`` is the tenant's sign-in page the returned ``url`` points at;
  a valid login key shows "Signed in to SkyPrep as ..." (everything HTML-escaped).
* Key types: ``daily`` keys work until the UTC day ends, and ``get_login_key`` answers the
  user's same daily key all day; ``time`` keys expire after ``TIME_KEY_SECONDS`` (the real
  duration is undocumented); ``otl`` keys work once.

Test hooks: :attr:`users`, :attr:`calls`, :attr:`faults`, :attr:`limiter`.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.sandbox._common import CallLog, Faults, RateLimiter

_TRUE = {"true", "1", "yes", "on", "t"}
# "time" keys: the docs do not say how long they live; we assume 15 minutes.
TIME_KEY_SECONDS = 15 * 60


@dataclass
class SkyPrepUser:
    """One simulated SkyPrep user."""

    id: int
    email: str
    first_name: str = ""
    last_name: str = ""
    role: str = "learner"
    card_no: str = ""
    user_groups: list[str] = field(default_factory=list)
    access_start_date: str = ""
    access_end_date: str = ""
    group_ids: dict[str, int] = field(default_factory=dict, repr=False)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%B %d %Y %H:%M:%S"))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "username": self.email,
            "email": self.email,
            "card_no": self.card_no,
            "role": self.role,
            "user_groups": [{"id": self.group_ids.get(g), "name": g} for g in self.user_groups],
            "access_start_date": self.access_start_date or None,
            "access_end_date": self.access_end_date or None,
            "created_at": self.created_at,
        }

    def access_ended(self, today: date) -> bool:
        """True when ``access_end_date`` is set and before ``today`` (outside the window)."""
        end = _parse_date(self.access_end_date)
        return end is not None and end < today


@dataclass
class _LoginKey:
    email: str
    key_type: str
    expires: float


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status)


def _as_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    return "" if value is None else str(value)


class SkyPrepSimulator:
    """One SkyPrep tenant (``acct_key``) reachable with one API key."""

    def __init__(
        self,
        api_key: str,
        acct_key: str,
        login_base_url: str | None = None,
        rate_limit_per_minute: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.acct_key = acct_key
        self.login_base_url = (login_base_url or f"https://{acct_key}").rstrip("/")
        self.users: dict[str, SkyPrepUser] = {}  # lower-cased e-mail -> user
        self.login_keys: dict[str, _LoginKey] = {}
        self.calls = CallLog()
        self.faults = Faults()
        self.limiter = RateLimiter(rate_limit_per_minute, 60.0)
        # Actions the API key may use; None means all (the docs' "full access" default).
        self.allowed_actions: set[str] | None = None
        self._clock = clock
        self._next_id = 1000
        # Group name -> id: the tenant's user groups, shared by every user (test hook).
        self.groups: dict[str, int] = {}
        self.app = Starlette(
            routes=[
                Route("/admin/api/{action:str}", self._api, methods=["GET", "POST"]),
                Route("/admin/api/{action:str}/", self._api, methods=["GET", "POST"]),
                Route("/account/login_with_key", self._login_page, methods=["GET"]),
            ]
        )
        self._actions: dict[str, Callable[[dict[str, str]], Response]] = {
            "test_connection": lambda p: JSONResponse({"message": "success"}),
            "get_users": self._get_users,
            "get_user": self._get_user,
            "create_user": self._create_user,
            "update_user": self._update_user,
            "destroy_user": self._destroy_user,
            "get_login_key": self._get_login_key,
            "get_user_group_enrollments_for_user": self._group_enrollments,
            "remove_user_from_user_group": self._remove_from_group,
            "get_user_groups": self._user_groups,
            "get_user_group": self._user_group,
        }

    # -- test hooks ------------------------------------------------------------------

    def add_user(self, email: str, first_name: str = "", last_name: str = "",
                 groups: list[str] | None = None, *, role: str = "learner") -> SkyPrepUser:
        """Create a user directly (as an admin would in the SkyPrep UI); ``role`` as in the
        reference: learner, manager, admin, power_user, ..."""
        self._next_id += 1
        user = SkyPrepUser(self._next_id, email, first_name, last_name, role=role,
                           group_ids=self.groups)
        self._add_groups(user, groups or [])
        self.users[email.lower()] = user
        return user

    def _add_groups(self, user: SkyPrepUser, names: list[str]) -> None:
        for name in names:
            if name not in self.groups:
                self.groups[name] = 5000 + len(self.groups) + 1
            if name not in user.user_groups:
                user.user_groups.append(name)

    def delete_user(self, email: str) -> None:
        self.users.pop(email.lower(), None)

    # -- HTTP ------------------------------------------------------------------------

    async def _params(self, request: Request) -> dict[str, str]:
        params: dict[str, str] = dict(request.query_params)
        if request.method == "POST":
            ctype = request.headers.get("content-type", "")
            if "json" in ctype:
                try:
                    body = json.loads(await request.body() or b"{}")
                except ValueError:
                    raise _BadParams("request body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise _BadParams("request body must be a JSON object")
                params.update({str(k): _as_str(v) for k, v in body.items()})
            else:
                form = await request.form()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
        for header, name in (("x-skyprep-api-key", "api_key"), ("x-skyprep-acct-key", "acct_key")):
            if header in request.headers and name not in params:
                params[name] = request.headers[header]
        return params

    async def _api(self, request: Request) -> Response:
        action = request.path_params["action"]
        self.calls.record(request.method, request.url.path, action)
        client = request.client.host if request.client else "unknown"
        if not self.limiter.hit(client):
            return JSONResponse(
                {"status": "error", "message": "Rate limit exceeded: 100 calls per minute"},
                status_code=429, headers={"Retry-After": str(self.limiter.retry_after(client))},
            )
        fault = await self.faults.before()
        if fault is not None:
            return fault
        try:
            params = await self._params(request)
        except _BadParams as exc:
            return _error(400, str(exc))
        api_key, acct_key = params.get("api_key", ""), params.get("acct_key", "")
        if not api_key or not acct_key:
            return _error(401, "api_key and acct_key are required")
        if not (secrets.compare_digest(api_key.encode(), self.api_key.encode())
                and acct_key.lower() == self.acct_key.lower()):
            return _error(401, "Invalid API key or account")
        handler = self._actions.get(action)
        if handler is None:
            return _error(404, f"Unknown API action {action}")
        if self.allowed_actions is not None and action not in self.allowed_actions:
            return _error(403, "This API key does not have access to this route")
        return handler(params)

    def _find(self, params: dict[str, str]) -> SkyPrepUser | None:
        if params.get("user_id"):
            # Ids are numbers: only ASCII digits name one (str.isdigit would take '١٢٣').
            if not re.fullmatch(r"[0-9]{1,20}", params["user_id"]):
                return None
            return next((u for u in self.users.values() if str(u.id) == params["user_id"]), None)
        email = params.get("user_email") or params.get("email") or ""
        return self.users.get(email.lower())

    def _get_users(self, params: dict[str, str]) -> Response:
        return JSONResponse([u.as_json() for u in self.users.values()])

    def _get_user(self, params: dict[str, str]) -> Response:
        if not (params.get("user_id") or params.get("user_email")):
            return _error(400, "user_id or user_email is required")
        user = self._find(params)
        return JSONResponse(user.as_json()) if user else _error(404, "User not found")

    def _apply(self, user: SkyPrepUser, params: dict[str, str]) -> None:
        """Apply create/update parameters; raise _BadParams before changing anything."""
        for name in ("access_start_date", "access_end_date"):
            if params.get(name) and _parse_date(params[name]) is None:
                raise _BadParams(f"{name} is not a date")
        email = params.get("email", "")
        if email and email.lower() != user.email.lower():
            if not _valid_email(email):
                raise _BadParams("A valid email is required")
            if email.lower() in self.users:
                raise _BadParams("A user with this email already exists")
            if self.users.get(user.email.lower()) is user:
                self.users[email.lower()] = self.users.pop(user.email.lower())
            user.email = email
        for name in ("first_name", "last_name", "role", "card_no", "access_start_date",
                     "access_end_date"):
            if name in params:
                setattr(user, name, params[name])
        if params.get("user_groups"):
            self._add_groups(user, [g.strip() for g in params["user_groups"].split(";")
                                    if g.strip()])

    def _create_user(self, params: dict[str, str]) -> Response:
        email = params.get("email") or params.get("user_email") or ""
        if not _valid_email(email):
            return _error(400, "A valid email is required")
        if email.lower() in self.users:
            # Assumed: the docs do not say what a duplicate create answers.
            return _error(400, "A user with this email already exists")
        user = self.add_user(email)
        try:
            self._apply(user, {k: v for k, v in params.items() if k != "email"})
        except _BadParams as exc:
            self.delete_user(email)
            return _error(400, str(exc))
        return JSONResponse(user.as_json())

    def _update_user(self, params: dict[str, str]) -> Response:
        if not (params.get("user_id") or params.get("user_email")):
            return _error(400, "user_id or user_email is required")
        user = self._find(params)
        if user is None:
            return _error(404, "User not found")
        try:
            self._apply(user, params)  # an "email" parameter renames the account
        except _BadParams as exc:
            return _error(400, str(exc))
        return JSONResponse(user.as_json())

    def _group_enrollments(self, params: dict[str, str]) -> Response:
        if not (params.get("user_id") or params.get("user_email")):
            return _error(400, "user_id or user_email is required")
        user = self._find(params)
        if user is None:
            return _error(404, "User not found")
        return JSONResponse([{"id": self.groups[g], "name": g} for g in user.user_groups])

    def _remove_from_group(self, params: dict[str, str]) -> Response:
        if not (params.get("user_id") or params.get("user_email")):
            return _error(400, "user_id or user_email is required")
        user = self._find(params)
        if user is None:
            return _error(404, "User not found")
        wanted = params.get("user_group_id", "")
        name = next((n for n, i in self.groups.items() if str(i) == wanted), None)
        if name is None:
            return _error(404, "User group not found")
        if name in user.user_groups:
            user.user_groups.remove(name)
        return JSONResponse({"message": "success"})

    def _user_groups(self, params: dict[str, str]) -> Response:
        return JSONResponse([{"id": i, "name": n} for n, i in self.groups.items()])

    def _user_group(self, params: dict[str, str]) -> Response:
        """``get_user_group``: the group's name and its users (assumed: as ``get_user``)."""
        wanted = params.get("user_group_id", "")
        name = next((n for n, i in self.groups.items() if str(i) == wanted), None)
        if name is None:
            return _error(404, "User group not found")
        return JSONResponse({"id": self.groups[name], "name": name, "users": [
            u.as_json() for u in self.users.values() if name in u.user_groups]})

    def _destroy_user(self, params: dict[str, str]) -> Response:
        user = self._find(params)
        if user is None:
            return _error(404, "User not found")
        del self.users[user.email.lower()]
        return JSONResponse({"message": "success"})

    def _get_login_key(self, params: dict[str, str]) -> Response:
        email = params.get("user_email", "")
        if not _valid_email(email):
            return _error(400, "A valid user_email is required")
        key_type = params.get("key_type") or "daily"  # assumed default when omitted
        if key_type not in ("daily", "time", "otl"):
            return _error(400, "key_type must be daily, time or otl")
        user = self.users.get(email.lower())
        if user is None:
            if params.get("autocreate", "").lower() not in _TRUE:
                return _error(404, "User not found")
            user = self.add_user(email)
            self._apply(user, {k: v for k, v in params.items()
                               if k in ("first_name", "last_name", "user_groups")})
        elif params.get("user_groups"):
            # Assumed: groups sent for an existing user are added (as SkyPrep's AD bridge
            # relies on); names are only used when the account is created.
            self._apply(user, {"user_groups": params["user_groups"]})
        now = self._clock()
        # A daily key is the user's key for the UTC day: asked again that day, SkyPrep answers
        # the same key (what lets the gateway reuse it).
        key = next((k for k, v in self.login_keys.items()
                    if key_type == "daily" and v.key_type == "daily"
                    and v.email == user.email.lower() and v.expires > now), None)
        if key is None:
            key = secrets.token_urlsafe(24)
            if key_type == "daily":
                expires = (now // 86400 + 1) * 86400  # end of the current UTC day
            else:
                expires = now + TIME_KEY_SECONDS
            self.login_keys[key] = _LoginKey(user.email.lower(), key_type, expires)
        query = urlencode({"user_email": user.email, "login_key": key})
        return JSONResponse({
            "email": user.email,
            "login_key": key,
            "url": f"{self.login_base_url}/account/login_with_key?{query}",
        })

    async def _login_page(self, request: Request) -> Response:
        key = request.query_params.get("login_key", "")
        email = request.query_params.get("user_email", "").lower()
        entry = self.login_keys.get(key)
        user = self.users.get(email)
        if entry is None or entry.email != email or user is None or entry.expires <= self._clock():
            return _page("Sign-in link not valid",
                         "This sign-in link is not valid or has expired.", 401)
        if user.access_ended(datetime.fromtimestamp(self._clock(), UTC).date()):
            return _page("Access ended", "Your access to this training site has ended.", 403)
        if entry.key_type == "otl":
            del self.login_keys[key]
        name = f"{user.first_name} {user.last_name}".strip() or user.email
        groups = ", ".join(user.user_groups) or "none"
        text = f"Signed in to SkyPrep as {name} ({user.email}) — groups: {groups}"
        return _page("SkyPrep", text, 200)


class _BadParams(Exception):
    pass


def _parse_date(value: str) -> date | None:
    """A reference-style date ("July 30, 2017") or an ISO date; None when it is neither."""
    for fmt in ("%B %d, %Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(value.strip(), fmt).date()
        except ValueError:
            continue
    return None


def _valid_email(value: str) -> bool:
    local, _, domain = value.partition("@")
    return bool(local and "." in domain and len(value) <= 254
                and not any(c.isspace() or c in "<>;," for c in value))


def _page(title: str, text: str, status: int) -> HTMLResponse:
    body = (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1 id=\"status\">{html.escape(text)}</h1></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers={
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": "default-src 'none'",
    })
