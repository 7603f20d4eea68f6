"""The one place LMS HTTP traffic and its failures are handled.

Every connector sends its calls through :class:`LmsHttp`, which:

* takes a token from the app's :class:`gateway.budget.Budget` before each call (and each retry)
  under the task's :class:`gateway.call_context.CallContext` (prepaid tokens first),
* keeps every call, retry and back-off inside the sign-in's deadline: each request's timeout is
  the configured one or the time left, whichever is shorter, and past the deadline the sign-in
  ends at once with :class:`gateway.errors.DeadlineExceeded`,
* maps timeouts, connection errors, 401/403, rate-limit answers and other statuses to the
  :mod:`gateway.errors` tree, so connectors only read successful answers. Which statuses mean
  "slow down" is the vendor's word (``rate_limit_statuses``, set by each connector: 429
  everywhere, 503 too for Litmos); any other 5xx is an outage (retried, counted by the
  circuit breaker) and never pauses the app's budget,
* retries only calls the connector marks idempotent, with jittered back-off; an answer that
  says "slow down" is retried, idempotent or not (the LMS did nothing), once the pause is over
  and if that is before the deadline,
* reports LMS-side effects (an account created, reactivated, updated) through the context's
  ``on_effect`` the moment the LMS confirms them, and awaits the context's ``fence`` before a
  call that must not be sent twice,
* records metrics and a log line per call with the path only: query strings and bodies carry
  API keys and sign-in links and are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import ssl
import time
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway import jsonsafe
from gateway.budget import Budget
from gateway.call_context import CallContext, current
from gateway.errors import (
    BudgetExhausted,
    ConnectorError,
    DeadlineExceeded,
    LmsAuthError,
    LmsRateLimited,
    LmsRejected,
    LmsUnavailable,
)
from gateway.http_transport import AiohttpTransport, GatewayClient
from gateway.observability import Metrics, log_event
from gateway.settings import HttpSettings

log = logging.getLogger("gateway.lms")

# Statuses an LMS uses to say "slow down" unless its connector says otherwise (Litmos: 503 too).
RATE_LIMIT_STATUSES = frozenset({429})
# Operations whose successful answer is a change in the LMS, for the audit trail (the same
# operation names in every connector).
EFFECTS = {
    "create_user": "created",
    "activate_user": "reactivated",
    "reactivate_user": "reactivated",
    "update_user": "updated",
}
# A request cut short by the deadline after less than this proved nothing about the LMS.
_MEANINGFUL_TIMEOUT = 1.0


def build_client(
    settings: HttpSettings,
    verify: ssl.SSLContext | bool = True,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A pooled client (IdP or LMS) with explicit timeouts; redirects are not followed (an
    API that redirects is answering something we did not ask for). Pass one shared ``verify``
    context: building a CA store costs ~0.2 s per client. Clients given the same
    ``transport`` share its connection pool; each keeps its own timeouts (httpx sends them
    with every request)."""
    # GatewayClient keeps no cookies (one client serves every employee) and skips httpx's
    # per-call auth, redirect and hook machinery, none of which these clients use.
    return GatewayClient(
        transport=transport
        or AiohttpTransport(verify=verify, max_connections=settings.max_connections),
        # Also what httpx's env-proxy transports (HTTPS_PROXY) verify with.
        verify=verify,
        timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        follow_redirects=False,
        headers={"User-Agent": "gateway/0.1 (+sso)"},
    )


def parse_retry_after(value: str | None, default: float = 60.0) -> float:
    """Seconds from a Retry-After header (delta-seconds form; HTTP-dates fall back)."""
    seconds = retry_after_seconds(value)
    return default if seconds is None else seconds


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds, at most 600), or None when absent
    or not a number (HTTP-dates are not trusted: our clock and theirs may disagree)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, min(seconds, 600.0)) if math.isfinite(seconds) else None


def json_body(response: httpx.Response, operation: str) -> Any:
    """The decoded JSON body, or ConnectorError when it is not JSON."""
    try:
        return jsonsafe.loads(response.content)  # deep nesting too: a ConnectorError
    except ValueError:
        raise ConnectorError(
            f"{operation}: LMS answered {response.status_code} with a body that is not JSON"
        ) from None


def same_origin(url: str, expected_host: str, *, allow_http: bool) -> bool:
    """True when ``url`` is an absolute https (or, in dev mode, http) URL on exactly
    ``expected_host`` (host[:port]); no userinfo, no other host, no prefix games."""
    if not isinstance(url, str) or any(c in url for c in "\r\n\t\\ ") or len(url) > 4096:
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    schemes = {"https", "http"} if allow_http else {"https"}
    if parts.scheme not in schemes or parts.username or parts.password or not parts.hostname:
        return False
    netloc = parts.hostname + (f":{port}" if port else "")
    return netloc.lower() == expected_host.lower()


class LmsHttp:
    """An app's LMS HTTP client with budget, deadline, retries, error mapping and metrics."""

    def __init__(
        self,
        app: str,
        client: httpx.AsyncClient,
        budget: Budget,
        metrics: Metrics | None = None,
        *,
        backoff_base: float = 0.2,
        rate_limit_statuses: Collection[int] = RATE_LIMIT_STATUSES,
    ) -> None:
        self.app = app
        self.client = client
        self.budget = budget
        self.metrics = metrics
        self._backoff_base = backoff_base
        # The connector sets its vendor's statuses (see the module docstring).
        self.rate_limit_statuses = frozenset(rate_limit_statuses)

    async def call(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        idempotent: bool,
        ok: Collection[int] = (200,),
        passthrough: Collection[int] = (),
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        json_data: Any = None,
        form: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one LMS call; return the response when its status is in ``ok`` or
        ``passthrough``, raise the mapped ConnectorError otherwise."""
        ctx = current()
        request = {"params": params, "headers": headers, "json": json_data, "data": form}
        try:
            response = await self._attempts(ctx, operation, method, url, idempotent, ok,
                                            passthrough, request)
        except DeadlineExceeded:
            if self.metrics is not None:
                self.metrics.deadline_hits.labels(self.app).inc()
            raise
        effect = EFFECTS.get(operation)
        if effect is not None and ctx.on_effect is not None and response.status_code in ok:
            ctx.on_effect(operation, effect)
        return response

    async def _attempts(
        self, ctx: CallContext, operation: str, method: str, url: str, idempotent: bool,
        ok: Collection[int], passthrough: Collection[int], request: dict[str, Any],
    ) -> httpx.Response:
        attempts = 1 + self.budget.settings.retries
        last_error: ConnectorError | None = None
        for attempt in range(attempts):
            if attempt and not isinstance(last_error, LmsRateLimited):
                # Jitter spreads retries of many sign-ins; not security-relevant randomness.
                jitter = random.uniform(0.5, 1.5)  # noqa: S311
                await self._sleep_within(ctx, self._backoff_base * (2 ** (attempt - 1)) * jitter,
                                         last_error)
            await self._acquire(ctx)
            if not idempotent and ctx.fence is not None:
                await ctx.fence()
            ctx.calls_spent += 1
            try:
                return await self._send_once(ctx, operation, method, url, ok, passthrough,
                                             request)
            except LmsRateLimited as exc:
                # Nothing happened at the LMS: worth another try once the pause is over, if
                # that is within the sign-in's deadline (the next acquire waits it out).
                left = ctx.remaining(self.budget.clock())
                if left is None or (exc.retry_after or 0.0) >= left:
                    raise
                last_error = exc
            except DeadlineExceeded:
                raise
            except LmsUnavailable as exc:
                if not idempotent:
                    raise
                last_error = exc
            finally:
                if self.metrics is not None:
                    self.metrics.circuit_open.labels(self.app).set(int(self.budget.circuit_open))
        assert last_error is not None
        raise last_error

    async def _acquire(self, ctx: CallContext) -> None:
        try:
            waited = await self.budget.acquire(ctx)
        except DeadlineExceeded:
            raise
        except BudgetExhausted:
            if self.metrics is not None:
                self.metrics.budget_exhausted.labels(self.app).inc()
            raise
        if self.metrics is not None:
            self.metrics.queue_wait.labels(self.app).observe(waited)
            self.metrics.budget_tokens.labels(self.app).set(self.budget.tokens_left)

    async def _sleep_within(
        self, ctx: CallContext, seconds: float, last_error: ConnectorError | None
    ) -> None:
        """Back off ``seconds``, unless that would end past the deadline."""
        left = ctx.remaining(self.budget.clock())
        if left is not None and seconds >= left:
            raise DeadlineExceeded(
                f"LMS failed and the sign-in's deadline leaves no time to retry ({last_error})"
            )
        await self.budget.sleep(seconds)

    def _count(self, operation: str, outcome: str, started: float) -> float:
        """Record one call (HTTP status, ``timeout`` or ``connection_error``); its seconds."""
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.lms_latency.labels(self.app, operation).observe(elapsed)
            self.metrics.lms_calls.labels(self.app, operation, outcome).inc()
        return elapsed

    def _timeout(self, ctx: CallContext) -> tuple[httpx.Timeout, float | None]:
        """This request's timeouts: the client's, cut to the time the deadline leaves."""
        configured = self.client.timeout
        left = ctx.remaining(self.budget.clock())
        if left is None:
            return configured, None
        if left <= 0.0:
            raise DeadlineExceeded("the sign-in's deadline passed before the LMS call")

        def cut(value: float | None) -> float:
            return left if value is None else min(value, left)

        return httpx.Timeout(connect=cut(configured.connect), read=cut(configured.read),
                             write=cut(configured.write), pool=cut(configured.pool)), left

    async def _send_once(
        self,
        ctx: CallContext,
        operation: str,
        method: str,
        url: str,
        ok: Collection[int],
        passthrough: Collection[int],
        request: dict[str, Any],
    ) -> httpx.Response:
        path = urlsplit(url).path
        timeout, left = self._timeout(ctx)
        if left is not None and left <= 0.05:
            raise DeadlineExceeded(f"{operation}: the sign-in's deadline passed before the call")
        started = time.perf_counter()
        try:
            # The per-request timeouts bound each read; the deadline bounds the whole call
            # (an LMS that trickles a byte at a time never trips a read timeout).
            async with asyncio.timeout(left):
                response = await self.client.request(method, url, timeout=timeout, **request)
        except (httpx.TimeoutException, TimeoutError):
            elapsed = self._count(operation, "timeout", started)
            # Only a request that had a fair chance counts against the LMS's circuit.
            if elapsed >= _MEANINGFUL_TIMEOUT or left is None:
                self.budget.record_failure()
            if self._past(ctx):
                # The deadline, not the configured timeout, ended it: the page comes now.
                raise DeadlineExceeded(
                    f"{operation}: LMS did not answer before the sign-in's deadline "
                    f"({method} {path})"
                ) from None
            raise LmsUnavailable(f"{operation}: LMS timed out ({method} {path})") from None
        except httpx.HTTPError as exc:
            self._count(operation, "connection_error", started)
            self.budget.record_failure()
            raise LmsUnavailable(
                f"{operation}: cannot reach LMS ({method} {path}): {type(exc).__name__}"
            ) from None

        status = response.status_code
        elapsed = self._count(operation, str(status), started)
        log_event(
            log,
            logging.DEBUG,
            "lms call",
            app=self.app,
            operation=operation,
            method=method,
            path=path,
            status=status,
            ms=round(elapsed * 1000, 1),
        )
        if status in ok or status in passthrough:
            self.budget.record_success()
            return response
        detail = _error_detail(response)
        if status in self.rate_limit_statuses:
            pause = self.budget.pause_for(retry_after_seconds(response.headers.get("Retry-After")))
            await self.budget.pause(pause)
            if self.metrics is not None:
                self.metrics.rate_limited.labels(self.app).inc()
            raise LmsRateLimited(
                f"{operation}: LMS rate limited us ({status}); pausing {pause:.0f}s{detail}",
                retry_after=max(1.0, pause),
            )
        if status >= 500:
            self.budget.record_failure()
            raise LmsUnavailable(f"{operation}: LMS server error {status}{detail}")
        self.budget.record_success()
        if status in (401, 403):
            raise LmsAuthError(f"{operation}: LMS refused our credentials ({status}){detail}")
        raise LmsRejected(f"{operation}: LMS answered {status}{detail}")

    def _past(self, ctx: CallContext) -> bool:
        # A timer set to the time left fires a hair before or after it; 50 ms is "over".
        left = ctx.remaining(self.budget.clock())
        return left is not None and left <= 0.05


def _error_detail(response: httpx.Response) -> str:
    """A short, secret-free description of an LMS error body for the operator's log."""
    try:
        body = jsonsafe.loads(response.content)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = []
    for key in ("internalCode", "code", "error", "errors", "message", "Message", "description"):
        value = body.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            parts.append(f"{key}={str(value)[:160]}")
    return (" (" + ", ".join(parts) + ")") if parts else ""
