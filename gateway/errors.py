"""The gateway's one exception tree.

Every failure the gateway can explain is one of these; ``gateway/web/responses.py`` is the
one place that turns them into an employee page or a JSON body, with a support reference id
that also appears in the log line. Anything else is a bug and becomes a generic 500 page.
Each class names its page kind (``page``); ``gateway/web/error_pages.py`` holds what each
kind says (heading, what happened, what to do next) in every shipped language.

::

    GatewayError                      status  page
    ├── ConfigError                     -     (start-up only: every problem at once)
    ├── BadRequest                     400    "the link you followed is not valid"
    │   ├── UnsafeTarget               400    refused return target / deep link
    │   └── SignOutRefused             400    cross-site POST /logout or no CSRF token
    ├── AuthenticationError            401    "sign-in could not be completed"
    │   ├── LoginStateError            400    missing/expired/replayed state, foreign browser
    │   ├── IdpRejected                401    IdP answered error=... (access_denied, ...)
    │   ├── IdpUnavailable             503    IdP discovery/token/userinfo unreachable
    │   └── TokenValidationError       401    ID token / SAML response failed a check
    │       └── ReplayDetected         401    nonce, state, assertion id used twice
    ├── AccessDenied                   403    "your account may not use this app"
    │   └── IdpNotAuthoritative        403    IdP asserted an e-mail outside its domains
    ├── NotFound                       404    unknown app, IdP, lesson schedule
    ├── Unauthorized                   401    portal API: missing/bad bearer credential
    ├── Forbidden                      403    portal API: credential not scoped to the app
    ├── Conflict                       409    e.g. lesson already completed
    ├── Gone                           410    e.g. lesson cancelled
    ├── ConnectorError                 502    the LMS answered something we cannot use
    │   ├── LmsAuthError               502    our API credentials were refused (operator fix)
    │   ├── LmsRejected                502    4xx from the LMS for a request we built
    │   ├── LmsUnavailable             503    timeout, connection error, 5xx, circuit open
    │   │   └── DeadlineExceeded       503    the sign-in's deadline passed (LMS slow or hung)
    │   ├── LmsRateLimited             503    429/503 "slow down" from the LMS
    │   ├── AccountInactive            403    LMS account disabled and app may not reactivate
    │   ├── PrivilegedAccount          403    JIT matched an existing admin/manager LMS account
    │   ├── AmbiguousAccount           409    several LMS accounts match one employee
    │   └── AccountGone                 -     cached LMS user no longer exists (handled inside)
    ├── BudgetExhausted                503    queue page: the LMS call budget is spent for now
    │   └── EmployeeBusy               429    "just a moment": this employee's share is spent
    ├── TooManyPendingLogins           429    too many sign-ins started and not finished
    └── StoreUnavailable               503    the shared store cannot be reached
        └── StoreFull                  503    memory store at its size limit (never evicts)
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway can explain.

    ``reason`` is for operators (the log line); ``public`` is what an employee may read.
    Neither may contain secrets, tokens, assertions or sign-in links.
    """

    status = 500
    code = "internal_error"
    public = "Something went wrong on our side."
    # The employee page's kind (``gateway/web/error_pages.py``: heading, what happened, what
    # to do next, log level). Subclasses name their own where the employee should read
    # something different.
    page = "internal"
    # The app the failed request was for, when only the failing code knew it (an IdP's
    # answer names its app only inside the pending sign-in); pages link "Start again" to it.
    app: str | None = None

    def __init__(self, reason: str = "", *, public: str | None = None) -> None:
        super().__init__(reason or self.code)
        self.reason = reason or self.code
        if public is not None:
            self.public = public


class ConfigError(GatewayError):
    """The configuration is invalid. ``problems`` holds every problem found, not just the first."""

    code = "config_error"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"
    page = "bad_link"
    public = "The link you followed is not valid."


class UnsafeTarget(BadRequest):
    code = "unsafe_target"
    page = "unsafe_target"
    public = "The page you asked to go to is not allowed."


class SignOutRefused(BadRequest):
    """``POST /logout`` not from our own sign-out page (cross-site, or without the session's
    CSRF token): nothing is ended, and the page says so (it is not a failed sign-in)."""

    code = "sign_out_refused"
    page = "sign_out_failed"


class AuthenticationError(GatewayError):
    status = 401
    code = "authentication_failed"
    page = "sign_in_failed"
    public = "Your sign-in could not be completed. Please try again from the start."


class LoginStateError(AuthenticationError):
    status = 400
    code = "login_state_invalid"
    page = "sign_in_expired"
    public = "This sign-in link has expired or was already used. Please start again."


class IdpRejected(AuthenticationError):
    code = "idp_rejected"
    page = "idp_rejected"
    public = "Your identity provider did not complete the sign-in."


class IdpUnavailable(AuthenticationError):
    """The IdP's discovery, token or userinfo endpoint could not be reached or answered 5xx."""

    status = 503
    code = "idp_unavailable"
    page = "idp_unavailable"
    public = "Your sign-in service cannot be reached right now. Please try again in a few minutes."


class TokenValidationError(AuthenticationError):
    """A token or response failed a check. ``check`` names which one ("bad_signature",
    "untrusted_audience", ...) so operators can count and search refusals by cause; the
    employee page stays the generic one whatever it is."""

    code = "token_invalid"

    def __init__(
        self, reason: str = "", *, check: str = "invalid", public: str | None = None
    ) -> None:
        super().__init__(reason, public=public)
        self.check = check


class ReplayDetected(TokenValidationError):
    code = "replay_detected"
    # For the person at the browser it is a spent sign-in (often Back or Reload).
    page = "sign_in_expired"


class AccessDenied(GatewayError):
    status = 403
    code = "access_denied"
    page = "access_denied"
    public = "Your account is not allowed to use this application. Contact your IT support."


class IdpNotAuthoritative(AccessDenied):
    """The IdP asserted an e-mail address outside the domains it vouches for
    (``email_domains``), or none at all: another IdP speaks for that person."""

    code = "idp_not_authoritative"
    page = "idp_not_authoritative"


class NotFound(GatewayError):
    status = 404
    code = "not_found"
    page = "not_found"
    public = "We could not find what you asked for."


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"
    page = "credential"
    public = "A valid credential is required."


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"
    page = "credential"
    public = "This credential may not use this application."


class Conflict(GatewayError):
    status = 409
    code = "conflict"
    page = "conflict"
    public = "This request conflicts with the current state."


class Gone(GatewayError):
    status = 410
    code = "gone"
    page = "gone"
    public = "This item is no longer available."


class ConnectorError(GatewayError):
    status = 502
    code = "lms_error"
    page = "lms_error"
    public = "The training system did not answer as expected. Please try again later."


class LmsAuthError(ConnectorError):
    code = "lms_auth_failed"


class LmsRejected(ConnectorError):
    code = "lms_rejected"


class LmsUnavailable(ConnectorError):
    status = 503
    code = "lms_unavailable"
    page = "lms_unavailable"
    public = "The training system is unavailable right now. Please try again in a few minutes."


class DeadlineExceeded(LmsUnavailable):
    """A sign-in's LMS calls, retries and budget waits did not finish within the app's
    ``sign_in_deadline_seconds``: the employee gets the unavailable page at once, not a hang."""

    code = "lms_deadline"


class LmsRateLimited(LmsUnavailable):
    code = "lms_rate_limited"
    page = "lms_busy"
    public = "The training system is busy. Please try again in a minute."

    def __init__(self, reason: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class AccountInactive(ConnectorError):
    status = 403
    code = "lms_account_inactive"
    page = "account_inactive"
    public = (
        "Your training account is deactivated. Please contact your training administrator "
        "to have it reactivated."
    )


class PrivilegedAccount(ConnectorError):
    """Just-in-time provisioning matched an EXISTING LMS account whose role is above what the
    app's mapping grants (admin, owner, manager, ...) and the app does not adopt such accounts.
    ``reason`` carries the app and LMS user id for operators, never an e-mail address."""

    status = 403
    code = "lms_account_privileged"
    page = "privileged_account"
    public = (
        "This account has administrator rights in the training system and cannot be signed "
        "in through single sign-on. Please ask your training administrator."
    )


class AmbiguousAccount(ConnectorError):
    status = 409
    code = "lms_account_ambiguous"
    page = "ambiguous_account"
    public = (
        "More than one training account matches you. Your training administrator has to "
        "resolve this before you can sign in."
    )


class AccountGone(ConnectorError):
    """A cached LMS user id no longer exists; provisioning drops the cache and starts over."""

    code = "lms_account_gone"


class BudgetExhausted(GatewayError):
    """The app's shared LMS call budget cannot serve this sign-in within its bound: the queue
    page, which comes back by itself.

    ``retry_after`` (seconds, >= 1): when coming back can be served, i.e. when the calls this
    sign-in needs would mature in the shared bucket, less the wait a sign-in may spend in the
    gateway (``max_wait_seconds``); earlier arrivals get earlier times. ``position``: how many
    LMS calls already reserved by other sign-ins (on every replica) are ahead in the shared
    bucket, 0 when unknown; divide by the app's calls per sign-in for "people ahead".
    """

    status = 503
    code = "budget_exhausted"
    page = "queue"
    public = "Many people are signing in right now. You are in the queue."

    def __init__(
        self, reason: str = "", *, retry_after: float = 5.0, position: int = 0
    ) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.position = position


class EmployeeBusy(BudgetExhausted):
    """This employee spent their share of the app's LMS calls for this minute (e.g. one
    session looping on ``/login/{app}``): a short "just a moment" page, not the queue, and
    nobody else's sign-in is held back. ``retry_after`` is when the share allows the next
    sign-in; ``position`` is 0."""

    status = 429
    code = "employee_busy"
    page = "busy"
    public = "You have just signed in. Please wait a moment before trying again."


class StoreUnavailable(GatewayError):
    status = 503
    code = "store_unavailable"
    page = "store_unavailable"
    public = "Sign-in is temporarily unavailable. Please try again in a few minutes."


class StoreFull(StoreUnavailable):
    """The memory store reached ``[store] memory_max_entries``. It refuses new entries
    rather than evict any: evicting a replay-cache entry or a revocation would silently
    turn a security check off."""

    code = "store_full"


class TooManyPendingLogins(GatewayError):
    """Abuse limit: too many sign-ins started and not finished, from one client address
    (``max_pending_logins_per_client``) or in total (``max_pending_logins``). Nothing of the
    refused sign-in is stored."""

    status = 429
    code = "too_many_pending_logins"
    page = "too_many_logins"
    public = (
        "Too many sign-ins are being started from your network right now; "
        "please try again in a minute."
    )

    def __init__(
        self, reason: str = "", *, public: str | None = None, retry_after: float = 60.0
    ) -> None:
        super().__init__(reason, public=public)
        self.retry_after = retry_after
