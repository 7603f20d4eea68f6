"""A Litmos API simulator (demo and tests only), following the Litmos "Developer API" overview
and Litmos' public SSO documentation on the user's ``LoginKey``.

* ``/v1.svc/...``: ``apikey`` header (or query parameter) and a ``source`` query parameter
  are required (403 otherwise, as the docs' table says); JSON with ``format=json`` or a
  JSON Content-Type, a small XML rendering of GET answers otherwise.
* Users: ``GET /users`` (search, start, limit, sort, dir), ``GET /users/{id-or-username}``,
  ``POST /users`` (201 with the whole user incl. Id, OriginalId, LoginKey; 409 when the
  username exists), ``PUT /users/{id}``, ``DELETE /users/{id}``.
* Teams: ``GET /teams``, ``GET``/``POST /teams/{id}/users``, ``DELETE /teams/{id}/users/{user-id}``
  and ``GET /users/{id}/teams`` (the overview only names "Add & Remove Users from a Team";
  the paths are those of Litmos' public API pages). Courses: ``GET /courses``,
  ``GET /courses/{id}``.
* String values in JSON answers are HTML-escaped like the real Litmos (``O&#39;Brien``).
* ``LoginKey`` is ``<login_base_url>/login.aspx?loginkey=<guid>``; using it at
  ``/login.aspx`` signs in (``&c=<course OriginalId>`` lands in the course) and replaces
  the key, so a used key no longer works.
* More than 100 requests per API key in a rolling minute: 503 "Rate Limit Exceeded".

Test hooks: :attr:`users`, :attr:`teams`, :attr:`courses`, :attr:`calls`, :attr:`faults`.
"""

from __future__ import annotations

import html
import itertools
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.sandbox._common import CallLog, Faults, RateLimiter

_USER_FIELDS = ("FirstName", "LastName", "Email", "AccessLevel", "DisableMessages", "Active",
                "SkipFirstLogin", "IsCustomUsername", "TimeZone", "UserName")
_SORT_FIELDS = {"FirstName", "LastName", "UserName", "Active", "Email"}


@dataclass
class LitmosUser:
    """One simulated Litmos user."""

    Id: str
    OriginalId: int
    UserName: str
    FirstName: str = ""
    LastName: str = ""
    Email: str = ""
    AccessLevel: str = "Learner"
    DisableMessages: bool = False
    Active: bool = True
    SkipFirstLogin: bool = False
    IsCustomUsername: bool = False
    TimeZone: str = ""
    LoginKey: str = ""
    LastLogin: str = ""

    def as_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items()}
        data["FullName"] = f"{self.FirstName} {self.LastName}".strip()
        return data


@dataclass
class LitmosCourse:
    Id: str
    OriginalId: int
    Name: str
    Code: str = ""
    Active: bool = True


@dataclass
class LitmosTeam:
    Id: str
    Name: str
    members: set[str] = field(default_factory=set)


def _escape(value: Any) -> Any:
    """HTML-escape every string, as Litmos does in JSON answers."""
    if isinstance(value, str):
        return html.escape(value, quote=True).replace("&#x27;", "&#39;")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _new_id() -> str:
    return secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")


class LitmosSimulator:
    """One Litmos company reachable with one API key."""

    def __init__(
        self,
        api_key: str,
        login_base_url: str,
        source_required: bool = True,
        rate_limit_per_minute: int = 100,
    ) -> None:
        self.api_key = api_key
        self.login_base_url = login_base_url.rstrip("/")
        self.source_required = source_required
        self.users: dict[str, LitmosUser] = {}
        self.teams: dict[str, LitmosTeam] = {}
        self.courses: dict[str, LitmosCourse] = {}
        self.calls = CallLog()
        self.faults = Faults()
        self.limiter = RateLimiter(rate_limit_per_minute, 60.0)
        self.sources: list[str] = []
        self._original_ids = itertools.count(5_000_001)
        base = "/v1.svc"
        self.app = Starlette(routes=[
            Route(f"{base}/users", self._users, methods=["GET", "POST"]),
            Route(f"{base}/users/{{key}}", self._user, methods=["GET", "PUT", "DELETE"]),
            Route(f"{base}/teams", self._teams, methods=["GET"]),
            Route(f"{base}/teams/{{team_id}}/users", self._team_users,
                  methods=["GET", "POST"]),
            Route(f"{base}/teams/{{team_id}}/users/{{user_id}}", self._team_user,
                  methods=["DELETE"]),
            Route(f"{base}/users/{{key}}/teams", self._user_teams, methods=["GET"]),
            Route(f"{base}/courses", self._courses, methods=["GET"]),
            Route(f"{base}/courses/{{course_id}}", self._course, methods=["GET"]),
            Route("/login.aspx", self._login_page, methods=["GET"]),
        ])

    # -- test hooks ------------------------------------------------------------------

    def add_user(self, username: str, first_name: str = "", last_name: str = "",
                 email: str = "", *, active: bool = True,
                 access_level: str = "Learner") -> LitmosUser:
        """Create a user directly, as an admin would in the Litmos UI (``access_level``:
        Learner, Team_Leader, Administrator, Account_Owner)."""
        user = LitmosUser(_new_id(), next(self._original_ids), username, first_name,
                          last_name, email or username, AccessLevel=access_level, Active=active)
        user.LoginKey = self._new_login_key()
        self.users[user.Id] = user
        return user

    def add_team(self, name: str, team_id: str | None = None) -> LitmosTeam:
        team = LitmosTeam(team_id or _new_id(), name)
        self.teams[team.Id] = team
        return team

    def add_course(self, name: str) -> LitmosCourse:
        course = LitmosCourse(_new_id(), next(self._original_ids), name)
        self.courses[course.Id] = course
        return course

    def set_active(self, user_id: str, active: bool) -> None:
        """Deactivate (or reactivate) a user, as an admin would in the Litmos UI."""
        self.users[user_id].Active = active

    def delete_user(self, user_id: str) -> None:
        self.users.pop(user_id, None)
        for team in self.teams.values():
            team.members.discard(user_id)

    def by_username(self, username: str) -> LitmosUser | None:
        return next((u for u in self.users.values()
                     if u.UserName.lower() == username.lower()), None)

    def _new_login_key(self) -> str:
        return f"{self.login_base_url}/login.aspx?loginkey={uuid.uuid4()}"

    # -- request plumbing ------------------------------------------------------------

    async def _guard(self, request: Request, operation: str) -> Response | None:
        """Log, rate-limit, faults and credentials; a Response means "answer this"."""
        self.calls.record(request.method, request.url.path, operation)
        key = request.headers.get("apikey") or request.query_params.get("apikey") or ""
        if key and not self.limiter.hit(key):
            return Response("Rate Limit Exceeded", status_code=503, media_type="text/plain")
        fault = await self.faults.before()
        if fault is not None:
            return fault
        if not key or not secrets.compare_digest(key.encode(), self.api_key.encode()):
            return _error(403, "Invalid API key")
        source = request.query_params.get("source", "")
        if self.source_required and not source:
            return _error(403, "The source parameter is required")
        if len(source) > 50:
            return _error(400, "source may be at most 50 characters")
        self.sources.append(source)
        return None

    def _out(
        self, request: Request, data: Any, status: int = 200, root: str = "Result"
    ) -> Response:
        wants_json = (request.query_params.get("format", "").lower() == "json"
                      or "json" in request.headers.get("content-type", ""))
        if wants_json:
            return JSONResponse(_escape(data), status_code=status)
        return Response(_to_xml(root, data), status_code=status, media_type="text/xml")

    @staticmethod
    async def _json(request: Request) -> Any:
        if "json" not in request.headers.get("content-type", ""):
            raise _Bad("the simulator accepts JSON request bodies only")
        try:
            return json.loads(await request.body())
        except ValueError:
            raise _Bad("request body is not valid JSON") from None

    # -- users -----------------------------------------------------------------------

    async def _users(self, request: Request) -> Response:
        refused = await self._guard(request, f"{request.method} /users")
        if refused is not None:
            return refused
        try:
            if request.method == "POST":
                return self._create(request, await self._json(request))
            return self._list(request)
        except _Bad as exc:
            return _error(400, str(exc))

    def _list(self, request: Request) -> Response:
        q = request.query_params
        try:
            start, limit = int(q.get("start", "0")), int(q.get("limit", "100"))
        except ValueError:
            raise _Bad("start and limit must be numbers") from None
        if start < 0 or not 1 <= limit <= 1000:
            raise _Bad("start must be 0+ and limit 1-1000")
        search = q.get("search", "").lower()
        if len(search) > 50:
            raise _Bad("search may be at most 50 characters")
        found = [u for u in self.users.values() if not search or any(
            search in v.lower() for v in (u.UserName, u.FirstName, u.LastName, u.Email))]
        sort = q.get("sort", "UserName")
        if sort not in _SORT_FIELDS:
            raise _Bad("unknown sort field")
        found.sort(key=lambda u: str(getattr(u, sort)).lower(),
                   reverse=q.get("dir", "ASC").upper() == "DESC")
        summary = [{k: u.as_json()[k] for k in ("Id", "UserName", "FirstName", "LastName",
                                                 "Active", "Email", "AccessLevel")}
                   for u in found[start:start + limit]]
        return self._out(request, summary, root="Users")

    def _create(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("UserName"), str):
            raise _Bad("UserName is required")
        username = body["UserName"].strip()
        custom = body.get("IsCustomUsername") is True
        if not username or (not custom and "@" not in username):
            raise _Bad("UserName must be an e-mail address unless IsCustomUsername is true")
        if self.by_username(username) is not None:
            return _error(409, "A user with this UserName already exists")
        user = self.add_user(username)
        self._apply(user, body)
        return self._out(request, user.as_json(), 201, root="User")

    @staticmethod
    def _apply(user: LitmosUser, body: dict[str, Any]) -> None:
        for name in _USER_FIELDS:
            if name in body and body[name] is not None:
                current = getattr(user, name)
                value = body[name]
                if isinstance(current, bool) != isinstance(value, bool):
                    raise _Bad(f"{name} has the wrong type")
                setattr(user, name, value if isinstance(value, bool) else str(value))

    async def _user(self, request: Request) -> Response:
        refused = await self._guard(request, f"{request.method} /users/{{id}}")
        if refused is not None:
            return refused
        key = request.path_params["key"]
        user = self.users.get(key) or (self.by_username(key) if request.method == "GET" else None)
        if user is None:
            return _error(404, "User not found")
        if request.method == "GET":
            return self._out(request, user.as_json(), root="User")
        if request.method == "DELETE":
            self.delete_user(user.Id)
            return Response(status_code=200)
        try:
            body = await self._json(request)
            if not isinstance(body, dict) or body.get("Id", user.Id) != user.Id:
                raise _Bad("body must be a user object with the same Id")
            other = self.by_username(str(body.get("UserName", user.UserName)))
            if other is not None and other.Id != user.Id:
                return _error(409, "UserName already taken")
            self._apply(user, body)
        except _Bad as exc:
            return _error(400, str(exc))
        return self._out(request, user.as_json(), root="User")

    # -- teams and courses -----------------------------------------------------------

    async def _teams(self, request: Request) -> Response:
        refused = await self._guard(request, "GET /teams")
        return refused or self._out(
            request, [{"Id": t.Id, "Name": t.Name} for t in self.teams.values()], root="Teams")

    async def _team_users(self, request: Request) -> Response:
        refused = await self._guard(request, f"{request.method} /teams/{{id}}/users")
        if refused is not None:
            return refused
        team = self.teams.get(request.path_params["team_id"])
        if team is None:
            return _error(404, "Team not found")
        if request.method == "GET":
            return self._members(request, team)
        try:
            body = await self._json(request)
        except _Bad as exc:
            return _error(400, str(exc))
        if not isinstance(body, list) or not all(isinstance(b, dict) for b in body):
            return _error(400, "body must be a list of users")
        ids = [str(b.get("Id", "")) for b in body]
        if any(i not in self.users for i in ids):
            return _error(404, "User not found")
        team.members.update(ids)
        return Response(status_code=201)

    def _members(self, request: Request, team: LitmosTeam) -> Response:
        """``GET /teams/{id}/users`` (Litmos' Team Users page), paged like ``GET /users``."""
        q = request.query_params
        try:
            start, limit = int(q.get("start", "0")), int(q.get("limit", "100"))
        except ValueError:
            return _error(400, "start and limit must be numbers")
        if start < 0 or not 1 <= limit <= 1000:
            return _error(400, "start must be 0+ and limit 1-1000")
        members = sorted((self.users[i] for i in team.members if i in self.users),
                         key=lambda u: u.UserName.lower())
        rows = [{k: u.as_json()[k] for k in ("Id", "UserName", "FirstName", "LastName",
                                             "Active", "Email", "AccessLevel")}
                for u in members[start:start + limit]]
        return self._out(request, rows, root="Users")

    async def _team_user(self, request: Request) -> Response:
        refused = await self._guard(request, "DELETE /teams/{id}/users/{id}")
        if refused is not None:
            return refused
        team = self.teams.get(request.path_params["team_id"])
        if team is None:
            return _error(404, "Team not found")
        user_id = request.path_params["user_id"]
        if user_id not in self.users:
            return _error(404, "User not found")
        team.members.discard(user_id)
        return Response(status_code=200)

    async def _user_teams(self, request: Request) -> Response:
        refused = await self._guard(request, "GET /users/{id}/teams")
        if refused is not None:
            return refused
        user = self.users.get(request.path_params["key"])
        if user is None:
            return _error(404, "User not found")
        teams = [{"Id": t.Id, "Name": t.Name} for t in self.teams.values()
                 if user.Id in t.members]
        return self._out(request, teams, root="Teams")

    def _course_json(self, c: LitmosCourse) -> dict[str, Any]:
        return {"Id": c.Id, "OriginalId": c.OriginalId, "Name": c.Name, "Code": c.Code,
                "Active": c.Active}

    async def _courses(self, request: Request) -> Response:
        refused = await self._guard(request, "GET /courses")
        return refused or self._out(
            request, [self._course_json(c) for c in self.courses.values()], root="Courses")

    async def _course(self, request: Request) -> Response:
        refused = await self._guard(request, "GET /courses/{id}")
        if refused is not None:
            return refused
        course = self.courses.get(request.path_params["course_id"])
        if course is None:
            return _error(404, "Course not found")
        return self._out(request, self._course_json(course), root="Course")

    # -- the company's sign-in page ---------------------------------------------------

    async def _login_page(self, request: Request) -> Response:
        key = request.query_params.get("loginkey", "")
        wanted = f"{self.login_base_url}/login.aspx?loginkey={key}"
        user = next((u for u in self.users.values() if key and u.LoginKey == wanted), None)
        if user is None:
            return _page("This login link is not valid or was already used.", 401)
        if not user.Active:
            return _page("This Litmos account is deactivated.", 403)
        user.LoginKey = self._new_login_key()  # a key works once
        text = f"Signed in to Litmos as {user.FirstName} {user.LastName} ({user.UserName})"
        course_id = request.query_params.get("c")
        if course_id:
            course = next((c for c in self.courses.values()
                           if str(c.OriginalId) == course_id), None)
            text += f" in course {course.Name}" if course else " (course not found)"
        return _page(text, 200)


class _Bad(Exception):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"Message": message}, status_code=status)


def _to_xml(root: str, data: Any) -> bytes:
    def build(tag: str, value: Any) -> ET.Element:
        element = ET.Element(tag)
        if isinstance(value, dict):
            element.extend(build(k, v) for k, v in value.items())
        elif isinstance(value, list):
            element.extend(build(tag.rstrip("s") or "Item", v) for v in value)
        else:
            element.text = str(value).lower() if isinstance(value, bool) else str(value)
        return element
    out: bytes = ET.tostring(build(root, data), encoding="utf-8", xml_declaration=True)
    return out


def _page(text: str, status: int) -> HTMLResponse:
    body = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>Litmos</title></head>"
            f"<body><h1 id=\"status\">{html.escape(text)}</h1></body></html>")
    return HTMLResponse(body, status_code=status, headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": "default-src 'none'"})
