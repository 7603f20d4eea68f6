"""A Damstra Learning (Velpic) API v2 simulator for the demo and the tests.

Follows the vendor's "Damstra Learning Public API" reference (API v2). Where the document is
silent the simulator makes one plain choice and says so here:

* HTTP statuses are not documented, only bodies and ``internalCode``s. The simulator answers
  806 (bad AccessKey) with 401, 831 (not authorised) with 403, 840 (no such lesson schedule)
  with 404, 837/836 (completed/cancelled) with 400, a missing user with 404 and the body shape
  of the documented "Group not found" error, validation problems with 400, and too many calls
  with 429 + ``Retry-After`` (the rate limit itself is undocumented; default 100 per minute).
* Create and update user paths are missing from the saved page; like the group endpoints they
  are ``POST /user`` and ``POST /user/{id}`` (``PUT`` accepted too). ``GET /group/{id}/member``
  (documented) lists the users whose ``groups`` hold the group.
* ``generate_login_url`` is documented as the bare ``touch_token_url``; by default the
  simulator answers a JSON string. ``login_url_form`` switches to a JSON object or plain text.
* A magic link (``generate_login_url``) works for its whole ``expiresIn`` ("day" is 24 hours
  from minting), however often it is opened (the reference documents no single use).
* The real player URL is a single-page-app fragment route (``/#player/4321?...``); the
  simulator renders its pages server-side, so its player links use the path ``/player/{id}``.
"""

from __future__ import annotations

import hmac
import html
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.sandbox._common import CallLog, Faults, RateLimiter

ACTIVE, NOT_CURRENT = 56, 57
ROLE_IDS = frozenset({3, 4, 5, 6, 7, 8})
TRAINEE = 6
SCHEDULE_STATUSES = ("scheduled", "due", "overdue", "completed", "cancelled")
EXPIRES_IN = {"disabled": 0.0, "never": None, "day": 86400.0, "week": 7 * 86400.0,
              "month": 31 * 86400.0, "year": 366 * 86400.0}
PLAYER_TOKEN_SECONDS = 3600.0

BAD_KEY = {"message": "AccessKey does not exist", "reason": "Invalid access key",
           "internalCode": 806, "error": "Invalid security token"}
NOT_AUTHORISED = {"internalCode": 831, "error": "You are not authorised to make this request"}
NO_SCHEDULE = {"internalCode": 840, "error": "Lesson Schedule does not exist"}
COMPLETED = {"internalCode": 837, "error": "This lesson schedule is completed"}
CANCELLED = {"internalCode": 836, "error": "This lesson schedule is cancelled"}
USER_FIELDS = ("userName", "firstName", "lastName", "emailAddress", "phoneNumber",
               "mobileNumber", "employeeNumber", "timeZone")


def _ascii_id(raw: str) -> bool:
    """Damstra ids are numbers; ``str.isdigit`` would also take other scripts' digits
    (``'١٢٣'``), which ``int()`` turns into 123."""
    return re.fullmatch(r"[0-9]{1,20}", raw) is not None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Problem(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body


def _bad(message: str) -> _Problem:
    return _Problem(400, {"message": message, "reason": "Bad request", "error": True,
                          "statusCode": 400})


@dataclass
class _Link:
    user_id: int
    expires: float | None
    schedule_id: int | None = None


@dataclass
class DamstraSimulator:
    """One Damstra tenant. ``app`` is the Starlette app; the rest are test hooks."""

    access_key: str
    login_base_url: str
    rate_limit_per_minute: int = 100
    login_url_form: Literal["string", "object", "text"] = "string"
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    schedules: dict[int, dict[str, Any]] = field(default_factory=dict)
    calls: CallLog = field(default_factory=CallLog)
    faults: Faults = field(default_factory=Faults)
    # Operations answered with 831 (an AccessKey without the needed permission).
    denied_operations: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.login_base_url = self.login_base_url.rstrip("/")
        self.limiter = RateLimiter(self.rate_limit_per_minute, 60.0)
        self._ids = iter(range(1001, 10**9))
        self._links: dict[str, _Link] = {}
        self.app = Starlette(routes=self._routes())

    # -- test hooks ---------------------------------------------------------------------

    def add_user(self, first_name: str, last_name: str, email: str, *,
                 employee_number: str | None = None, status: int = ACTIVE,
                 roles: tuple[int, ...] = (TRAINEE,), groups: tuple[int, ...] = (),
                 user_name: str | None = None) -> int:
        """Seed a user; returns its id."""
        return self._create({"firstName": first_name, "lastName": last_name,
                             "emailAddress": email, "employeeNumber": employee_number,
                             "roles": list(roles), "groups": [{"id": g} for g in groups],
                             "userName": user_name}, status=status)

    def assign_lesson(self, user_id: int, lesson_name: str, *, status: str = "due",
                      due_date: str | None = None) -> int:
        """Schedule a lesson for a user; returns the lesson schedule id."""
        user = self.users[user_id]
        sid = next(self._ids)
        version = next(self._ids)
        self.schedules[sid] = {
            "id": sid, "lessonName": lesson_name, "lessonId": version, "lessonVersionId": version,
            "version": 1, "userId": user_id, "startDate": _now(), "endDate": due_date,
            "lessonStartedDate": None, "lessonCompletedDate": None,
            "userFirstName": user["firstName"], "userLastName": user["lastName"],
            "scheduleType": "manual", "status": status,
            "lessonThumbnail": f"{self.login_base_url}/downloads/lessons/{version}/thumbnail.png",
            "createdDate": _now(), "modifiedDate": _now(),
        }
        return sid

    def complete(self, schedule_id: int) -> None:
        self.schedules[schedule_id].update(status="completed", statusId=94,
                                           lessonCompletedDate=_now())

    def cancel(self, schedule_id: int) -> None:
        self.schedules[schedule_id]["status"] = "cancelled"

    def set_roles(self, user_id: int, roles: tuple[int, ...],
                  groups_supervised: tuple[int, ...] = ()) -> None:
        """Change a user's roles (and supervised groups), as an admin would in the UI."""
        self.users[user_id].update(roles=list(roles),
                                   groupsSupervised=[{"id": g} for g in groups_supervised])

    def set_status(self, user_id: int, client_status_id: int) -> None:
        self.users[user_id].update(clientStatusId=client_status_id,
                                   active=client_status_id == ACTIVE)

    def delete_user(self, user_id: int) -> None:
        del self.users[user_id]

    def reset(self) -> None:
        """Forget calls, faults and rate-limit counts (not users)."""
        self.calls.clear()
        self.faults.reset()
        self.limiter.reset()
        self.denied_operations.clear()

    # -- state ----------------------------------------------------------------------------

    def _create(self, body: dict[str, Any], status: int = ACTIVE) -> int:
        for name in ("firstName", "lastName", "emailAddress"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                raise _bad(f"{name} is required")
        roles = body.get("roles") or [TRAINEE]
        if not isinstance(roles, list) or any(r not in ROLE_IDS for r in roles):
            raise _bad("roles must be a list of role ids (3-8)")
        uid = next(self._ids)
        user_name = body.get("userName") or f"user{uid}"
        if any(u["userName"].lower() == str(user_name).lower() for u in self.users.values()):
            raise _bad("A user with that userName already exists")
        user: dict[str, Any] = {name: body.get(name) for name in USER_FIELDS}
        user.update(id=uid, userName=str(user_name), clientStatusId=status,
                    active=status == ACTIVE, roles=list(roles),
                    groups=self._groups(body.get("groups")),
                    groupsSupervised=self._groups(body.get("groupsSupervised")),
                    sendWelcomeEmail=body.get("sendWelcomeEmail", True),
                    clientId=76, createdDate=_now(), modifiedDate=_now())
        user["timeZone"] = user["timeZone"] or "Australia/Perth"
        self.users[uid] = user
        return uid

    @staticmethod
    def _groups(value: Any) -> list[dict[str, int]]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(
            isinstance(g, dict) and isinstance(g.get("id"), int) for g in value
        ):
            raise _bad("groups must be a list of {\"id\": number}")
        return [{"id": g["id"]} for g in value]

    def _update(self, user: dict[str, Any], body: dict[str, Any]) -> None:
        for name in USER_FIELDS:
            if name in body:
                user[name] = body[name]
        if "roles" in body:
            if not isinstance(body["roles"], list) or any(r not in ROLE_IDS for r in body["roles"]):
                raise _bad("roles must be a list of role ids (3-8)")
            user["roles"] = body["roles"]
        for name in ("groups", "groupsSupervised"):
            if name in body:
                user[name] = self._groups(body[name])
        user["modifiedDate"] = _now()

    def _user(self, raw: str) -> dict[str, Any]:
        user = self.users.get(int(raw)) if _ascii_id(raw) else None
        if user is None:
            raise _Problem(404, {"message": f"User with id {raw[:20]} not found",
                                 "reason": "User not found", "statusCode": 404})
        return user

    def _schedule(self, raw: str | None) -> dict[str, Any]:
        schedule = self.schedules.get(int(raw)) if raw and _ascii_id(raw) else None
        if schedule is None:
            raise _Problem(404, NO_SCHEDULE)
        return schedule

    @staticmethod
    def _public(user: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in user.items() if k != "sendWelcomeEmail"}

    def _mint(self, link: _Link) -> str:
        token = secrets.token_urlsafe(24)
        self._links[token] = link
        return token

    # -- API --------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        def api(operation: str, handler: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                return await self._serve(operation, handler, request)
            return endpoint

        p = "/api/v2"
        return [
            Route(f"{p}/user", api("search_users", self._search), methods=["GET"]),
            Route(f"{p}/user/", api("search_users", self._search), methods=["GET"]),
            Route(f"{p}/user", api("create_user", self._create_user), methods=["POST"]),
            Route(f"{p}/user/{{uid}}", api("get_user", self._get_user), methods=["GET"]),
            Route(f"{p}/user/{{uid}}", api("update_user", self._update_user),
                  methods=["POST", "PUT"]),
            Route(f"{p}/user/{{uid}}/activate", api("activate_user", self._activate),
                  methods=["POST"]),
            Route(f"{p}/user/{{uid}}/inactivate", api("inactivate_user", self._inactivate),
                  methods=["POST"]),
            Route(f"{p}/bulkUserImport", api("bulk_import", self._bulk), methods=["POST"]),
            Route(f"{p}/group/{{gid}}/member", api("group_members", self._group_members),
                  methods=["GET"]),
            Route(f"{p}/user/{{uid}}/generate_login_url",
                  api("generate_login_url", self._login_url), methods=["POST"]),
            Route(f"{p}/user/{{uid}}/lesson_schedule",
                  api("user_lesson_schedules", self._user_schedules), methods=["GET"]),
            Route(f"{p}/lesson_schedule/{{sid}}", api("get_lesson_schedule", self._get_schedule),
                  methods=["GET"]),
            Route(f"{p}/embed_player", api("embed_player", self._embed), methods=["GET"]),
            Route(f"{p}/embed_player/version/{{sid}}", api("embed_player_version", self._embed),
                  methods=["GET"]),
            Route("/touch_token", self._touch_page, methods=["GET"]),
            Route("/player/{sid}", self._player_page, methods=["GET"]),
        ]

    async def _serve(self, operation: str, handler: Any, request: Request) -> Response:
        self.calls.record(request.method, request.url.path, operation)
        injected = await self.faults.before()
        if injected is not None:
            return injected
        presented = request.headers.get("accesskey", "")
        if not hmac.compare_digest(presented.encode(), self.access_key.encode()):
            return JSONResponse(BAD_KEY, status_code=401)
        if not self.limiter.hit(self.access_key):
            retry = str(self.limiter.retry_after(self.access_key))
            return JSONResponse({"error": "Too many requests"}, status_code=429,
                                headers={"Retry-After": retry})
        if operation in self.denied_operations:
            return JSONResponse(NOT_AUTHORISED, status_code=403)
        try:
            body: Any = None
            if request.method in ("POST", "PUT") and await request.body():
                try:
                    body = await request.json()
                except ValueError:
                    raise _bad("body is not valid JSON") from None
            result: Response = await handler(request, body)
            return result
        except _Problem as problem:
            return JSONResponse(problem.body, status_code=problem.status)

    @staticmethod
    def _page(request: Request, total: int) -> tuple[int, int]:
        try:
            start = int(request.query_params.get("startIndex", "0"))
            # The document says maxResults "Default is 0"; read as "no explicit page size".
            size = int(request.query_params.get("maxResults", "0")) or 20
        except ValueError:
            raise _bad("startIndex and maxResults must be numbers") from None
        if start < 0 or size < 0:
            raise _bad("startIndex and maxResults must not be negative")
        return start, min(start + min(size, 1000), total)

    async def _search(self, request: Request, _: Any) -> Response:
        q = request.query_params
        active = q.get("activeValue", "active")
        if active not in ("active", "inactive", "all"):
            raise _bad("activeValue must be active, inactive or all")
        found = []
        for user in self.users.values():
            if active != "all" and (user["clientStatusId"] == ACTIVE) != (active == "active"):
                continue
            if "emailAddress" in q and (user["emailAddress"] or "").lower() != q[
                "emailAddress"
            ].lower():
                continue
            if "empId" in q and user["employeeNumber"] != q["empId"]:
                continue
            if q.get("q") and not any(q["q"].lower() in (user[k] or "").lower()
                                      for k in ("userName", "firstName", "lastName")):
                continue
            found.append(self._public(user))
        start, end = self._page(request, len(found))
        meta = {"totalResultCount": len(found), "startIndex": start, "endIndex": max(start, end)}
        return JSONResponse({"results": found[start:end], "meta": meta})

    async def _group_members(self, request: Request, _: Any) -> Response:
        """``GET /group/{groupId}/member``: the users whose ``groups`` hold the group (this
        simulator keeps no group registry, so an unknown group simply has no members)."""
        raw = request.path_params["gid"]
        if not _ascii_id(raw):
            raise _Problem(404, {"message": f"Group with id {raw[:20]} not found",
                                 "reason": "Group not found", "internalCode": 842,
                                 "statusCode": 404})
        found = [self._public(u) for u in self.users.values()
                 if any(g.get("id") == int(raw) for g in u["groups"])]
        start, end = self._page(request, len(found))
        meta = {"totalResultCount": len(found), "startIndex": start, "endIndex": max(start, end)}
        return JSONResponse({"results": found[start:end], "meta": meta})

    async def _create_user(self, _: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            raise _bad("a user object is required")
        user = self.users[self._create(body)]
        return JSONResponse({"id": user["id"], "createdDate": user["createdDate"],
                             "modifiedDate": user["modifiedDate"]})

    async def _get_user(self, request: Request, _: Any) -> Response:
        return JSONResponse(self._public(self._user(request.path_params["uid"])))

    async def _update_user(self, request: Request, body: Any) -> Response:
        user = self._user(request.path_params["uid"])
        if not isinstance(body, dict):
            raise _bad("a user object is required")
        for name in ("firstName", "lastName", "emailAddress"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                raise _bad(f"{name} is required")
        self._update(user, body)
        return JSONResponse(self._public(user))

    async def _activate(self, request: Request, _: Any) -> Response:
        user = self._user(request.path_params["uid"])
        self.set_status(user["id"], ACTIVE)
        return JSONResponse(self._public(user))

    async def _inactivate(self, request: Request, _: Any) -> Response:
        user = self._user(request.path_params["uid"])
        self.set_status(user["id"], NOT_CURRENT)
        return JSONResponse(self._public(user))

    async def _bulk(self, _: Request, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("users"), list):
            raise _bad("users is required")
        merge = body.get("mergeType", "none")
        keys = {"email": "emailAddress", "empNo": "employeeNumber", "userName": "userName"}
        if merge != "none" and merge not in keys:
            raise _bad("mergeType must be none, email, empNo or userName")
        out = []
        for item in body["users"]:
            if not isinstance(item, dict):
                raise _bad("each user must be an object")
            item = {**item, "roles": item.get("roles") or [TRAINEE]}  # documented reset
            match = None
            if merge in keys and item.get(keys[merge]):
                want = str(item[keys[merge]]).lower()
                match = next((u for u in self.users.values()
                              if str(u.get(keys[merge]) or "").lower() == want), None)
            if match is not None:
                self._update(match, item)
            else:
                match = self.users[self._create(item)]
            out.append(self._public(match))
        return JSONResponse(out)

    async def _login_url(self, request: Request, _: Any) -> Response:
        user = self._user(request.path_params["uid"])
        expires_in = request.query_params.get("expiresIn", "day")
        if expires_in not in EXPIRES_IN:
            raise _bad("expiresIn must be one of disabled, never, day, week, month, year")
        lifetime = EXPIRES_IN[expires_in]
        token = self._mint(_Link(user["id"], None if lifetime is None else time.time() + lifetime))
        url = f"{self.login_base_url}/touch_token?token={token}"
        if self.login_url_form == "object":
            return JSONResponse({"touch_token_url": url})
        if self.login_url_form == "text":
            return PlainTextResponse(url)
        return JSONResponse(url)

    async def _user_schedules(self, request: Request, _: Any) -> Response:
        user = self._user(request.path_params["uid"])
        status = request.query_params.get("status", "all")
        if status != "all" and status not in SCHEDULE_STATUSES:
            raise _bad("status must be one of all, " + ", ".join(SCHEDULE_STATUSES))
        found = [s for s in self.schedules.values()
                 if s["userId"] == user["id"] and status in ("all", s["status"])]
        start, end = self._page(request, len(found))
        return JSONResponse({"results": found[start:end]})

    async def _get_schedule(self, request: Request, _: Any) -> Response:
        return JSONResponse(self._schedule(request.path_params["sid"]))

    async def _embed(self, request: Request, _: Any) -> Response:
        raw = request.path_params.get("sid") or request.query_params.get("lessonScheduleId")
        schedule = self._schedule(raw)
        if schedule["status"] == "completed":
            raise _Problem(400, COMPLETED)
        if schedule["status"] == "cancelled":
            raise _Problem(400, CANCELLED)
        token = self._mint(_Link(schedule["userId"], time.time() + PLAYER_TOKEN_SECONDS,
                                 schedule["id"]))
        return JSONResponse({"embedUrl": f"{self.login_base_url}/player/{schedule['id']}"
                                         f"?embed=true&token={token}"})

    # -- pages the links lead to ------------------------------------------------------------

    def _valid_link(self, token: str | None) -> _Link | None:
        link = self._links.get(token or "")
        if link is None or (link.expires is not None and link.expires <= time.time()):
            return None
        if link.user_id not in self.users:
            return None
        return link

    async def _touch_page(self, request: Request) -> Response:
        link = self._valid_link(request.query_params.get("token"))
        headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        if link is None or link.schedule_id is not None:
            return HTMLResponse("<!doctype html><title>Damstra Learning</title>"
                                "<p>This sign-in link is not valid.</p>", 403, headers=headers)
        # Assumed: a magic link works until its expiresIn ends (the reference documents only
        # when it expires, not a single use), as the connector's link reuse assumes too.
        user = self.users[link.user_id]
        if user["clientStatusId"] != ACTIVE:
            return HTMLResponse("<!doctype html><p>This account is not current.</p>", 403,
                                headers=headers)
        name = html.escape(f"{user['firstName']} {user['lastName']}")
        return HTMLResponse(f"<!doctype html><title>Damstra Learning</title>"
                            f"<h1>Signed in to Damstra Learning as {name}</h1>", headers=headers)

    async def _player_page(self, request: Request) -> Response:
        link = self._valid_link(request.query_params.get("token"))
        sid = request.path_params["sid"]
        # Portals iframe the player: any origin may frame it (no X-Frame-Options).
        headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                   "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                              "frame-ancestors *"}
        if link is None or str(link.schedule_id) != sid or link.schedule_id not in self.schedules:
            return HTMLResponse("<!doctype html><p>This player link is not valid.</p>", 403,
                                headers=headers)
        lesson = html.escape(str(self.schedules[link.schedule_id]["lessonName"]))
        return HTMLResponse(f"<!doctype html><title>{lesson}</title>"
                            f"<h1>lesson player: {lesson}</h1>", headers=headers)
