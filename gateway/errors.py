"""The gateway's one exception tree.

Every failure the gateway can explain is one of these; ``web/errors`` (in ``app.py``) is the
one place that turns them into an employee page or a JSON body, with a support reference id
that also appears in the log line. Anything else is a bug and becomes a generic 500 page.

::

    GatewayError                      status  page
    ├── ConfigError                     -     (start-up only: every problem at once)
    ├── BadRequest                     400    "the link you followed is not valid"
    │   └── UnsafeTarget               400    refused return target / deep link
    ├── AuthenticationError            401    "sign-in could not be completed"
    │   ├── LoginStateError            400    missing/expired/replayed state, foreign browser
    │   ├── IdpRejected                401    IdP answered error=... (access_denied, ...)
    │   ├── IdpUnavailable             503    IdP discovery/token/userinfo unreachable
    │   └── TokenValidationError       401    ID token / SAML response failed a check
    │       └── ReplayDetected         401    nonce, state, assertion id used twice
    ├── AccessDenied                   403    "your account may not use this app"
    ├── NotFound                       404    unknown app, IdP, lesson schedule
    ├── Unauthorized                   401    portal API: missing/bad bearer credential
    ├── Forbidden                      403    portal API: credential not scoped to the app
    ├── Conflict                       409    e.g. lesson already completed
    ├── Gone                           410    e.g. lesson cancelled
    ├── ConnectorError                 502    the LMS answered something we cannot use
    │   ├── LmsAuthError               502    our API credentials were refused (operator fix)
    │   ├── LmsRejected                502    4xx from the LMS for a request we built
    │   ├── LmsUnavailable             503    timeout, connection error, 5xx, circuit open
    │   ├── LmsRateLimited             503    429/503 "slow down" from the LMS
    │   ├── AccountInactive            403    LMS account disabled and app may not reactivate
    │   ├── PrivilegedAccount          403    JIT matched an existing admin/manager LMS account
    │   ├── AmbiguousAccount           409    several LMS accounts match one employee
    │   └── AccountGone                 -     cached LMS user no longer exists (handled inside)
    ├── BudgetExhausted                503    queue page: the LMS call budget is spent for now
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
    public = "The link you followed is not valid."


class UnsafeTarget(BadRequest):
    code = "unsafe_target"
    public = "The page you asked to go to is not allowed."


class AuthenticationError(GatewayError):
    status = 401
    code = "authentication_failed"
    public = "Your sign-in could not be completed. Please try again from the start."


class LoginStateError(AuthenticationError):
    status = 400
    code = "login_state_invalid"
    public = "This sign-in link has expired or was already used. Please start again."


class IdpRejected(AuthenticationError):
    code = "idp_rejected"
    public = "Your identity provider did not complete the sign-in."


class IdpUnavailable(AuthenticationError):
    """The IdP's discovery, token or userinfo endpoint could not be reached or answered 5xx."""

    status = 503
    code = "idp_unavailable"
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


class AccessDenied(GatewayError):
    status = 403
    code = "access_denied"
    public = "Your account is not allowed to use this application. Contact your IT support."


class NotFound(GatewayError):
    status = 404
    code = "not_found"
    public = "We could not find what you asked for."


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"
    public = "A valid credential is required."


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"
    public = "This credential may not use this application."


class Conflict(GatewayError):
    status = 409
    code = "conflict"
    public = "This request conflicts with the current state."


class Gone(GatewayError):
    status = 410
    code = "gone"
    public = "This item is no longer available."


class ConnectorError(GatewayError):
    status = 502
    code = "lms_error"
    public = "The training system did not answer as expected. Please try again later."


class LmsAuthError(ConnectorError):
    code = "lms_auth_failed"


class LmsRejected(ConnectorError):
    code = "lms_rejected"


class LmsUnavailable(ConnectorError):
    status = 503
    code = "lms_unavailable"
    public = "The training system is unavailable right now. Please try again in a few minutes."


class LmsRateLimited(LmsUnavailable):
    code = "lms_rate_limited"
    public = "The training system is busy. Please try again in a minute."

    def __init__(self, reason: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class AccountInactive(ConnectorError):
    status = 403
    code = "lms_account_inactive"
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
    public = (
        "This account has administrator rights in the training system and cannot be signed "
        "in through single sign-on. Please ask your training administrator."
    )


class AmbiguousAccount(ConnectorError):
    status = 409
    code = "lms_account_ambiguous"
    public = (
        "More than one training account matches you. Your training administrator has to "
        "resolve this before you can sign in."
    )


class AccountGone(ConnectorError):
    """A cached LMS user id no longer exists; provisioning drops the cache and starts over."""

    code = "lms_account_gone"


class BudgetExhausted(GatewayError):
    status = 503
    code = "budget_exhausted"
    public = "Many people are signing in right now. You are in the queue."

    def __init__(self, reason: str = "", *, retry_after: float = 5.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class StoreUnavailable(GatewayError):
    status = 503
    code = "store_unavailable"
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
    public = (
        "Too many sign-ins are being started from your network right now; "
        "please try again in a minute."
    )

    def __init__(
        self, reason: str = "", *, public: str | None = None, retry_after: float = 60.0
    ) -> None:
        super().__init__(reason, public=public)
        self.retry_after = retry_after
