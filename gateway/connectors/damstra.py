"""Damstra Learning (formerly Velpic) API v2 connector: just-in-time accounts, magic-link
sign-in and embedded lesson players.

Contract: the vendor's "Damstra Learning Public API" reference (API v2). Assumptions where it is
silent (the simulator in ``gateway/sandbox/damstra.py`` makes the same ones):

* HTTP statuses of errors are not documented, only bodies with ``internalCode``; answers are
  read by ``internalCode`` first (806/831/836/837/840), then by status.
* Create/update user paths are missing from the page; like the group endpoints they are
  ``POST /user`` and ``POST /user/{id}``. Update takes the whole user (the document lists
  phone, mobile, roles and time zone as required), so it sends back what Damstra returned
  with only names and managed groups changed; roles are never changed on update.
* User search defaults to ``activeValue=active``; we always send ``all`` so a Not Current
  employee is found (and reactivated) instead of being created a second time.
* ``generate_login_url`` is documented only as ``touch_token_url``: a JSON string, a JSON
  object holding the link, or plain text are all accepted; the link must be https on
  ``login_host``.
* Damstra groups are numeric ids: ``group_map`` values must be group ids; others are ignored.
* No deep-link form is documented, so any ``target`` is refused.
* Ids (users, lesson schedules, groups) are numbers in every documented path and answer;
  an id goes into a URL only as ASCII digits (:func:`_accounts.numeric_id`), whether it came
  from a browser (``/embed``, ``/api/v1``) or from a Damstra answer.
* Privileged accounts: the "Roles" table of the User section lists ADMIN(3), EDITOR(4),
  SUPERVISOR(5), TRAINEE(6), OWNER(7), INSTRUCTOR(8). Only TRAINEE "only has access to consume
  learning content"; every other role, a role id the table does not list (the document's own
  example shows ``[1]``) and a non-empty ``groupsSupervised`` (supervisors "manage the users in
  the group") is above a learner. An existing account holding any of those beyond the role the
  app maps for the employee is not adopted (unless ``adopt_privileged_accounts``).
* Revalidation (``verify``): ``GET /user/{id}`` shows ``clientStatusId``; Not Current (57) is
  reactivated with ``POST /user/{id}/activate`` or refused, exactly as on a first sign-in.
* Link reuse (``gateway/links.py``): a magic link is assumed usable until its ``expiresIn``
  ends (see :data:`LINK_LIFETIME_SECONDS`); the SignIn says so, minus a margin.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from gateway import jsonsafe
from gateway.connectors._accounts import numeric_id, refuse_privileged
from gateway.connectors._http import LmsHttp, json_body, same_origin
from gateway.connectors.base import (
    REUSE_MARGIN_SECONDS,
    LessonSchedule,
    LmsAccount,
    ProvisionAction,
    SignIn,
)
from gateway.connectors.damstra_users import NOT_CURRENT as NOT_CURRENT
from gateway.connectors.damstra_users import DamstraLifecycle, excess_roles, role_id
from gateway.errors import (
    AccountGone,
    AccountInactive,
    AmbiguousAccount,
    BadRequest,
    ConfigError,
    Conflict,
    ConnectorError,
    GatewayError,
    Gone,
    LmsAuthError,
    LmsRejected,
    NotFound,
    UnsafeTarget,
)
from gateway.identity import Profile
from gateway.observability import log_event
from gateway.settings import AppSettings

log = logging.getLogger("gateway.lms.damstra")

SCHEDULE_STATUSES = frozenset({"all", "scheduled", "due", "overdue", "completed", "cancelled"})
# Keys a JSON-object answer of generate_login_url may carry the link under (undocumented).
LINK_KEYS = ("touch_token_url", "touchTokenUrl", "url", "loginUrl", "login_url", "link",
             "magicLink", "magic_link", "touchTokenURL", "loginURL")
PASSTHROUGH = (400, 401, 403, 404, 409, 410, 422)
PAGE = 100
MAX_PAGES = 10
_NO_SCHEDULE = "lesson schedule not found for this employee"


# The magic link's lifetime per ``expiresIn`` as assumed here: the reference only says "The
# time the magic link expires" and lists the values. Read as a duration from minting (a
# "month" as 28 days, the shortest), and the link as usable for its whole lifetime (nothing
# in the reference says one use). Both are the simulator's behaviour too.
LINK_LIFETIME_SECONDS = {"day": 86400.0, "week": 7 * 86400.0, "month": 28 * 86400.0}


def link_reusable_until(expires_in: str, minted_at: float) -> float | None:
    """Until when a magic link asked for at ``minted_at`` may be handed out again: its
    lifetime minus 10 % of it (at least REUSE_MARGIN_SECONDS), in case Damstra counts its
    lifetime differently than assumed above. None for an unknown ``expiresIn``."""
    lifetime = LINK_LIFETIME_SECONDS.get(expires_in)
    if lifetime is None:
        return None
    return minted_at + lifetime - max(REUSE_MARGIN_SECONDS, lifetime / 10)


def _id(value: Any) -> str | None:
    """A Damstra numeric id as an ASCII-digit string, or None when it is not one."""
    return numeric_id(value)


def _internal_code(response: httpx.Response) -> int | None:
    try:
        body = jsonsafe.loads(response.content)
    except ValueError:
        return None
    code = _id(body.get("internalCode")) if isinstance(body, dict) else None
    return int(code) if code is not None else None


class DamstraConnector(DamstraLifecycle):
    """One Damstra Learning tenant (implements Connector and EmbedCapable; LifecycleCapable
    through ``damstra_users.py``)."""

    # The reference documents no rate limit nor its answer; 429 is assumed (the simulator
    # does the same). A 503 is an outage, not "slow down".
    rate_limit_statuses = frozenset({429})

    def first_sign_in_calls(self, profile: Profile) -> int:
        """LMS calls a first sign-in needs (reserved at once by the budget): search, create,
        generate_login_url (2 when the account exists; the unused one is given back)."""
        return 3

    def __init__(self, app_name: str, app: AppSettings, http: LmsHttp, *,
                 dev_mode: bool = False) -> None:
        if app.damstra is None:
            raise ConfigError([f"app.{app_name}: connector damstra needs a [damstra] table"])
        settings = app.damstra
        if not (settings.api_url.startswith("https://")
                or (dev_mode and settings.api_url.startswith("http://"))):
            raise ConfigError([f"app.{app_name}.damstra.api_url must be an https URL"])
        self.app_name = app_name
        self.app = app
        self.settings = settings
        self.http = http
        http.rate_limit_statuses = self.rate_limit_statuses
        self.dev_mode = dev_mode
        self._base = settings.api_url.rstrip("/")
        self._headers = {"AccessKey": settings.access_key.reveal(),
                         "Content-Type": "application/json", "Accept": "application/json"}
        self._managed_groups = {int(g) for g in app.group_map.values() if _id(g) is not None}

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(self, operation: str, method: str, path: str, *, idempotent: bool,
                    params: dict[str, str] | None = None, json_data: Any = None,
                    missing: GatewayError | None = None) -> httpx.Response:
        response = await self.http.call(
            operation, method, self._base + path, idempotent=idempotent, ok=(200, 201, 204),
            passthrough=PASSTHROUGH, params=params, headers=self._headers, json_data=json_data,
        )
        code = _internal_code(response)
        if response.status_code in PASSTHROUGH or code in (806, 831, 836, 837, 840):
            self._fail(operation, response, code, missing)
        return response

    def _fail(self, operation: str, response: httpx.Response, code: int | None,
              missing: GatewayError | None) -> None:
        status = response.status_code
        if code in (806, 831):
            what = "refused the AccessKey" if code == 806 else "says the AccessKey may not do this"
            reason = f"damstra {operation}: Damstra {what} (internalCode {code}, HTTP {status})"
            log_event(log, logging.ERROR, "damstra credentials refused", app=self.app_name,
                      operation=operation, internal_code=code, status=status)
            raise LmsAuthError(reason)
        if code == 840:
            raise NotFound(_NO_SCHEDULE)
        if status == 404 and missing is not None:
            raise missing
        if code == 837:
            raise Conflict("lesson schedule already completed",
                           public="This lesson is already completed.")
        if code == 836:
            raise Gone("lesson schedule cancelled", public="This lesson was cancelled.")
        if status in (401, 403):
            raise LmsAuthError(f"damstra {operation}: Damstra refused our credentials ({status})")
        raise LmsRejected(f"damstra {operation}: Damstra answered {status}"
                          + (f" (internalCode {code})" if code is not None else ""))

    async def _json(self, operation: str, method: str, path: str, **kwargs: Any) -> Any:
        return json_body(await self._call(operation, method, path, **kwargs), operation)

    # -- Connector --------------------------------------------------------------------------

    async def test_connection(self) -> None:
        """One search call; raises LmsAuthError on a refused AccessKey."""
        await self._call("test_connection", "GET", "/user",
                         params={"maxResults": "1", "activeValue": "all"}, idempotent=True)

    async def aclose(self) -> None:
        await self.http.client.aclose()

    async def sign_in(self, profile: Profile, known: LmsAccount | None,
                      target: str | None, *, verify: bool = False) -> SignIn:
        """Find/create/reactivate/update as needed, then mint a magic link. With ``verify``
        a cached account is read again (Not Current?) before the link is minted."""
        if target is not None:
            raise UnsafeTarget("damstra: no documented deep-link form; target refused")
        if known is not None and _id(known.user_id) is None:
            known = None  # not a Damstra id: never put it in a URL; provision afresh
        if known is not None and not verify and (known.profile_digest == profile.digest()
                                                 or not self.app.update_on_login):
            minted_at = time.time()
            url = await self._login_url(known.user_id, missing=AccountGone(
                f"damstra: cached user {known.user_id} no longer exists"))
            return SignIn(url, known, ProvisionAction.NONE,
                          link_reusable_until(self.settings.expires_in, minted_at))
        if known is not None:
            user = await self._json("get_user", "GET", f"/user/{known.user_id}",
                                    idempotent=True, missing=AccountGone(
                                        f"damstra: cached user {known.user_id} no longer exists"))
            if not isinstance(user, dict) or _id(user.get("id")) != known.user_id:
                raise ConnectorError("damstra get_user: answer is not the user asked for")
            action = ProvisionAction.NONE
        else:
            user, action = await self._find_or_create(profile)
        user_id = str(user["id"])
        if user.get("clientStatusId") == NOT_CURRENT:
            if not self.app.reactivate:
                raise AccountInactive(f"damstra: user {user_id} is Not Current; app forbids "
                                      "reactivation")
            await self._call("activate_user", "POST", f"/user/{user_id}/activate",
                             idempotent=True)
            action = ProvisionAction.REACTIVATED
        in_line = True
        if action is not ProvisionAction.CREATED:
            update = self._update_body(user, profile)
            if update is not None and self.app.update_on_login:
                await self._call("update_user", "POST", f"/user/{user_id}", json_data=update,
                                 idempotent=True)
                action = action if action is ProvisionAction.REACTIVATED else (
                    ProvisionAction.UPDATED)
            in_line = update is None or self.app.update_on_login
        minted_at = time.time()
        url = await self._login_url(user_id, missing=AccountGone(
            f"damstra: user {user_id} disappeared during sign-in"))
        # The digest says "the account is in line with this profile"; a stale marker makes
        # the next sign-in look again once update_on_login is switched on.
        return SignIn(url, LmsAccount(user_id, profile.digest() if in_line else "stale"), action,
                      link_reusable_until(self.settings.expires_in, minted_at))

    async def _find_or_create(self, profile: Profile) -> tuple[dict[str, Any], ProvisionAction]:
        user = await self._search_match(profile)
        if user is not None:
            excess = excess_roles(user, {role_id(profile.role)})
            if excess:
                refuse_privileged(self.app_name, self.app, lms_user_id=str(_id(user["id"])),
                                  why=", ".join(excess))
            return user, ProvisionAction.NONE
        created = await self._json("create_user", "POST", "/user", idempotent=False,
                                   json_data=self._create_body(profile))
        if not isinstance(created, dict) or _id(created.get("id")) is None:
            raise ConnectorError("damstra create_user: answer has no user id")
        return {"id": _id(created["id"])}, ProvisionAction.CREATED

    def _groups(self, profile: Profile) -> list[int]:
        return sorted({int(g) for g in profile.groups if _id(g) is not None})

    def _create_body(self, profile: Profile) -> dict[str, Any]:
        body: dict[str, Any] = {
            "userName": profile.username, "firstName": profile.first_name,
            "lastName": profile.last_name, "emailAddress": profile.email,
            "sendWelcomeEmail": False, "roles": [role_id(profile.role)],
            "groups": [{"id": g} for g in self._groups(profile)],
        }
        if profile.employee_number:
            body["employeeNumber"] = profile.employee_number
        return body

    def _update_body(self, user: dict[str, Any], profile: Profile) -> dict[str, Any] | None:
        """The whole user with names and managed groups from the profile, or None when
        nothing differs."""
        current = {_id(g.get("id")) for g in user.get("groups") or [] if isinstance(g, dict)}
        current_ids = {int(g) for g in current if g is not None}
        groups = (current_ids - self._managed_groups) | set(self._groups(profile))
        if (user.get("firstName") == profile.first_name
                and user.get("lastName") == profile.last_name and groups == current_ids):
            return None
        body = {k: user.get(k) for k in ("id", "userName", "emailAddress", "employeeNumber",
                                         "groupsSupervised", "roles", "timeZone")}
        body.update(firstName=profile.first_name, lastName=profile.last_name,
                    phoneNumber=user.get("phoneNumber") or "",
                    mobileNumber=user.get("mobileNumber") or "",
                    groups=[{"id": g} for g in sorted(groups)])
        return {k: v for k, v in body.items() if v is not None or k == "employeeNumber"}

    async def _login_url(self, user_id: str, *, missing: GatewayError) -> str:
        response = await self._call(
            "generate_login_url", "POST", f"/user/{user_id}/generate_login_url",
            params={"expiresIn": self.settings.expires_in}, idempotent=True, missing=missing)
        url = _link_from(response)
        if url is None or not same_origin(url, self.settings.login_host,
                                          allow_http=self.dev_mode):
            raise ConnectorError("damstra generate_login_url: the answer is not an https link "
                                 "on the configured login_host; refused")
        return url

    # -- EmbedCapable ---------------------------------------------------------------------

    async def lesson_schedules(self, user_id: str, status: str | None) -> list[LessonSchedule]:
        """The employee's lesson schedules (``status`` one of the documented choices)."""
        status = status or "all"
        if status not in SCHEDULE_STATUSES:
            raise BadRequest(f"damstra: unknown lesson schedule status {status[:20]!r}")
        if _id(user_id) is None:
            raise AccountGone("damstra: cached user id is not a Damstra id")
        found: list[LessonSchedule] = []
        for page in range(MAX_PAGES):
            body = await self._json(
                "user_lesson_schedules", "GET", f"/user/{user_id}/lesson_schedule",
                params={"status": status, "startIndex": str(page * PAGE),
                        "maxResults": str(PAGE)},
                idempotent=True, missing=AccountGone(f"damstra: user {user_id} no longer exists"))
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list):
                raise ConnectorError("damstra user_lesson_schedules: answer has no results list")
            for item in results:
                parsed = self._schedule(item, user_id)
                if parsed is not None:
                    found.append(parsed)
            if len(results) < PAGE:
                break
        return found

    def _schedule(self, item: Any, user_id: str) -> LessonSchedule | None:
        if not isinstance(item, dict) or _id(item.get("id")) is None:
            return None
        owner = _id(item.get("userId"))
        if owner is not None and owner != user_id:
            return None  # never show a portal someone else's lesson, whatever the LMS says
        thumb = item.get("lessonThumbnail")
        if not (isinstance(thumb, str)
                and same_origin(thumb, self.settings.login_host, allow_http=self.dev_mode)):
            thumb = None

        def text(key: str) -> str | None:
            value = item.get(key)
            return value[:200] if isinstance(value, str) else None

        return LessonSchedule(
            id=str(item["id"]), name=text("lessonName") or "", status=text("status") or "",
            start_date=text("startDate"), due_date=text("endDate") or text("dueDate"),
            thumbnail_url=thumb)

    async def embed_url(self, user_id: str, lesson_schedule_id: str) -> str:
        """A player URL for the employee's own lesson schedule; anyone else's is NotFound."""
        if _id(lesson_schedule_id) is None or _id(user_id) is None:
            raise NotFound(_NO_SCHEDULE)
        schedule = await self._json("get_lesson_schedule", "GET",
                                    f"/lesson_schedule/{lesson_schedule_id}", idempotent=True,
                                    missing=NotFound(_NO_SCHEDULE))
        if not isinstance(schedule, dict) or _id(schedule.get("userId")) != user_id:
            raise NotFound(_NO_SCHEDULE)  # same answer as a missing one, nothing minted
        if schedule.get("status") == "completed":
            raise Conflict("lesson schedule already completed",
                           public="This lesson is already completed.")
        if schedule.get("status") == "cancelled":
            raise Gone("lesson schedule cancelled", public="This lesson was cancelled.")
        if self.settings.embed_all_lesson_types:
            path, params = f"/embed_player/version/{lesson_schedule_id}", None
        else:
            path, params = "/embed_player", {"lessonScheduleId": lesson_schedule_id}
        body = await self._json("embed_player", "GET", path, params=params, idempotent=True,
                                missing=NotFound(_NO_SCHEDULE))
        url = body.get("embedUrl") if isinstance(body, dict) else None
        if not isinstance(url, str) or not same_origin(url, self.settings.login_host,
                                                       allow_http=self.dev_mode):
            raise ConnectorError("damstra embed_player: embedUrl is not an https link on the "
                                 "configured login_host; refused")
        return url

    # -- portal support ---------------------------------------------------------------------

    async def find_user_id(self, email: str) -> str:
        """The id of the one active user with this e-mail address (portal API lookups)."""
        body = await self._json("search_users", "GET", "/user", idempotent=True, params={
            "emailAddress": email, "activeValue": "all", "startIndex": "0", "maxResults": "10"})
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise ConnectorError("damstra search_users: answer has no results list")
        matches = [u for u in results if isinstance(u, dict) and _id(u.get("id")) is not None
                   and isinstance(u.get("emailAddress"), str)
                   and u["emailAddress"].lower() == email.lower()]
        if not matches:
            raise NotFound("damstra: no user with this e-mail address")
        if len(matches) > 1:
            raise AmbiguousAccount(f"damstra: {len(matches)} users share one e-mail address")
        if matches[0].get("clientStatusId") == NOT_CURRENT:
            raise AccountInactive("damstra: the employee's account is Not Current")
        return str(_id(matches[0]["id"]))


def _link_from(response: httpx.Response) -> str | None:
    """The sign-in link from a JSON string, a JSON object or a plain-text body."""
    try:
        body: Any = jsonsafe.loads(response.content)
    except ValueError:
        text = response.text.strip()
        return text if text.startswith(("https://", "http://")) else None
    if isinstance(body, str):
        return body.strip()
    if isinstance(body, dict):
        lowered = {k.lower(): v for k, v in body.items() if isinstance(k, str)}
        for key in LINK_KEYS:
            value = lowered.get(key.lower())
            if isinstance(value, str):
                return value.strip()
        for nested in ("data", "result"):
            inner = lowered.get(nested)
            if isinstance(inner, dict | str):
                return _link_from(httpx.Response(200, json=inner))
    return None
