"""SCIM error responses (RFC 7644 §3.12): the one place a failure becomes a SCIM body.

Bodies carry ``urn:ietf:params:scim:api:messages:2.0:Error`` with ``status`` as a string
and, for 400/409, a ``scimType``. ``detail`` never holds a credential or a person's
e-mail address: gateway errors contribute their public text only (their ``reason``, which
may name an LMS user id, goes to the log with the request id).
"""

from __future__ import annotations

import logging
import math

from scim2_models import Error
from starlette.responses import JSONResponse

from gateway.errors import (
    AccessDenied,
    AccountInactive,
    AmbiguousAccount,
    BadRequest,
    BudgetExhausted,
    Conflict,
    ConnectorError,
    Forbidden,
    GatewayError,
    LmsRateLimited,
    LmsUnavailable,
    NotFound,
    PrivilegedAccount,
    StoreUnavailable,
    Unauthorized,
)
from gateway.observability import log_event

log = logging.getLogger("gateway.scim")

SCIM_JSON = "application/scim+json"
HEADERS = {"Cache-Control": "no-store", "Content-Type": SCIM_JSON}


class ScimError(Exception):
    """A SCIM-level refusal: ``status``, optional ``scim_type`` and a ``detail`` that may
    be shown to the SCIM client (never a secret or an e-mail address)."""

    def __init__(
        self, status: int, scim_type: str | None, detail: str, *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.scim_type = scim_type
        self.detail = detail
        self.retry_after = retry_after


def from_gateway(exc: GatewayError) -> ScimError:
    """The SCIM answer for a gateway error raised while serving a SCIM request."""
    if isinstance(exc, BudgetExhausted | LmsRateLimited):
        # Sign-ins first: the IdP's provisioning engine retries after Retry-After.
        retry = getattr(exc, "retry_after", None) or 30.0
        return ScimError(429, None, "LMS call budget reserved for sign-ins; retry later",
                         retry_after=retry)
    if isinstance(exc, Unauthorized):
        return ScimError(401, None, "a valid SCIM bearer credential is required")
    # The specific refusals before Forbidden, so a future subclass of it keeps its answer.
    if isinstance(exc, PrivilegedAccount):
        return ScimError(403, None, "the LMS account has a privileged role; "
                                    "it is not managed over SCIM")
    if isinstance(exc, AccessDenied | AccountInactive):
        return ScimError(403, None, "this IdP may not manage this person in this app")
    if isinstance(exc, Forbidden):
        return ScimError(403, None, "this credential may not provision this app")
    if isinstance(exc, NotFound):
        return ScimError(404, None, "resource not found")
    if isinstance(exc, AmbiguousAccount):
        return ScimError(409, "uniqueness", "several LMS accounts match this person")
    if isinstance(exc, Conflict):
        return ScimError(409, "uniqueness", "the LMS already has an account for this person")
    if isinstance(exc, BadRequest):
        return ScimError(400, "invalidValue", exc.public)
    if isinstance(exc, LmsUnavailable | StoreUnavailable):
        return ScimError(503, None, "the LMS or the gateway's store is unavailable; retry later")
    if isinstance(exc, ConnectorError):
        return ScimError(502, None, "the LMS did not answer as expected")
    return ScimError(500, None, "internal error")


def error_response(error: ScimError, reference: str) -> JSONResponse:
    """The SCIM Error body and headers for ``error``."""
    body = Error(status=error.status, scim_type=error.scim_type, detail=error.detail)
    headers = dict(HEADERS)
    headers["X-Request-Id"] = reference
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="scim"'
    if error.retry_after is not None:
        retry = error.retry_after if math.isfinite(error.retry_after) else 60.0
        headers["Retry-After"] = str(max(1, min(math.ceil(retry), 600)))
    return JSONResponse(body.model_dump(), status_code=error.status, headers=headers,
                        media_type=SCIM_JSON)


def failure_level(status: int) -> int:
    """The log level of a SCIM answer's ``status``: 429 is the designed back-pressure
    (sign-ins first, every morning rush) and only INFO; other refusals and a 503 (the LMS or
    store is down, which their own logs and the circuit report) are WARNING; only a 500/502,
    a bug or an LMS answering nonsense, is an ERROR that may page someone."""
    if status == 429:
        return logging.INFO
    if status < 500 or status == 503:
        return logging.WARNING
    return logging.ERROR


def log_failure(exc: Exception, status: int, reference: str, app: str, op: str) -> None:
    """Log a failed SCIM request answered with ``status`` (the SCIM answer's, not the gateway
    exception's: BudgetExhausted is a 503 page but a SCIM 429): the gateway reason for
    operators, never request bodies."""
    # A SCIM refusal's detail may quote the client's values (an e-mail address): not logged.
    reason = exc.reason if isinstance(exc, GatewayError) else (
        getattr(exc, "scim_type", None) or type(exc).__name__)
    log_event(log, failure_level(status), "scim request failed", app=app, op=op, status=status,
              reason=reason, reference=reference)
