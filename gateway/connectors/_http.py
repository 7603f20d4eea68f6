"""The one place LMS HTTP traffic and its failures are handled.

Every connector sends its calls through :class:`LmsHttp`, which:

* takes a token from the app's :class:`gateway.budget.Budget` before each call (and each retry),
* maps timeouts, connection errors, 401/403, 429/503 and other statuses to the
  :mod:`gateway.errors` tree, so connectors only read successful answers,
* retries only calls the connector marks idempotent, with jittered back-off,
* records metrics and a log line per call with the path only: query strings and bodies carry
  API keys and sign-in links and are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections.abc import Collection, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.budget import Budget
from gateway.errors import (
    BudgetExhausted,
    ConnectorError,
    LmsAuthError,
    LmsRateLimited,
    LmsRejected,
    LmsUnavailable,
)
from gateway.http_transport import AiohttpTransport
from gateway.observability import Metrics, log_event
from gateway.settings import HttpSettings

log = logging.getLogger("gateway.lms")

# Statuses an LMS uses to say "slow down" (SkyPrep/Damstra: 429; Litmos: 503).
RATE_LIMIT_STATUSES = frozenset({429, 503})


def build_client(settings: HttpSettings, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """A pooled client (IdP or LMS) with explicit timeouts; redirects are not followed (an
    API that redirects is answering something we did not ask for). Pass one shared ``verify``
    context: building a CA store costs ~0.2 s per client."""
    return httpx.AsyncClient(
        transport=AiohttpTransport(verify=verify, max_connections=settings.max_connections),
        timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        follow_redirects=False,
        headers={"User-Agent": "gateway/0.1 (+sso)"},
        cookies=no_cookies(),
    )


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing: one client serves every employee, so a cookie an
    LMS or IdP sets for one call must never ride along on another employee's call."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def parse_retry_after(value: str | None, default: float = 60.0) -> float:
    """Seconds from a Retry-After header (delta-seconds form; HTTP-dates fall back)."""
    if not value:
        return default
    try:
        return max(0.0, min(float(value.strip()), 600.0))
    except ValueError:
        return default


def json_body(response: httpx.Response, operation: str) -> Any:
    """The decoded JSON body, or ConnectorError when it is not JSON."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
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
    """An app's LMS HTTP client with budget, retries, error mapping and metrics."""

    def __init__(
        self,
        app: str,
        client: httpx.AsyncClient,
        budget: Budget,
        metrics: Metrics | None = None,
        *,
        backoff_base: float = 0.2,
    ) -> None:
        self.app = app
        self.client = client
        self.budget = budget
        self.metrics = metrics
        self._backoff_base = backoff_base

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
        attempts = 1 + (self.budget.settings.retries if idempotent else 0)
        last_error: ConnectorError | None = None
        for attempt in range(attempts):
            if attempt:
                # Jitter spreads retries of many sign-ins; not security-relevant randomness.
                jitter = random.uniform(0.5, 1.5)  # noqa: S311
                await asyncio.sleep(self._backoff_base * (2 ** (attempt - 1)) * jitter)
            try:
                waited = await self.budget.acquire()
            except BudgetExhausted:
                if self.metrics is not None:
                    self.metrics.budget_exhausted.labels(self.app).inc()
                raise
            if self.metrics is not None:
                self.metrics.queue_wait.labels(self.app).observe(waited)
                self.metrics.budget_tokens.labels(self.app).set(self.budget.tokens_left)
            request = {"params": params, "headers": headers, "json": json_data, "data": form}
            try:
                return await self._send_once(operation, method, url, ok, passthrough, request)
            except LmsRateLimited:
                raise
            except LmsUnavailable as exc:
                last_error = exc
                continue
            finally:
                if self.metrics is not None:
                    self.metrics.circuit_open.labels(self.app).set(int(self.budget.circuit_open))
        assert last_error is not None
        raise last_error

    def _count(self, operation: str, outcome: str, started: float) -> float:
        """Record one call (HTTP status, ``timeout`` or ``connection_error``); its seconds."""
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.lms_latency.labels(self.app, operation).observe(elapsed)
            self.metrics.lms_calls.labels(self.app, operation, outcome).inc()
        return elapsed

    async def _send_once(
        self,
        operation: str,
        method: str,
        url: str,
        ok: Collection[int],
        passthrough: Collection[int],
        request: dict[str, Any],
    ) -> httpx.Response:
        path = urlsplit(url).path
        started = time.perf_counter()
        try:
            response = await self.client.request(method, url, **request)
        except httpx.TimeoutException:
            self._count(operation, "timeout", started)
            self.budget.record_failure()
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
        if status in RATE_LIMIT_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            await self.budget.pause(retry_after)
            raise LmsRateLimited(
                f"{operation}: LMS rate limited us ({status}); pausing {retry_after:.0f}s{detail}",
                retry_after=retry_after,
            )
        if status >= 500:
            self.budget.record_failure()
            raise LmsUnavailable(f"{operation}: LMS server error {status}{detail}")
        self.budget.record_success()
        if status in (401, 403):
            raise LmsAuthError(f"{operation}: LMS refused our credentials ({status}){detail}")
        raise LmsRejected(f"{operation}: LMS answered {status}{detail}")


def _error_detail(response: httpx.Response) -> str:
    """A short, secret-free description of an LMS error body for the operator's log."""
    try:
        body = response.json()
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
