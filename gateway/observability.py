"""Logging, request ids, metrics and audit events.

Metrics live on a :class:`Metrics` object built by ``app.py`` with its own registry (no
module-level globals, so tests and several apps in one process don't collide).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

AUDIT_LOGGER = "gateway.audit"


class Metrics:
    """Every Prometheus series the gateway exposes on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sign_ins = Counter(
            "gateway_sign_ins_total",
            "Sign-ins by IdP, app and outcome",
            ["idp", "app", "outcome"],
            registry=r,
        )
        self.lms_calls = Counter(
            "gateway_lms_calls_total",
            "LMS API calls by app, operation and status",
            ["app", "operation", "status"],
            registry=r,
        )
        self.lms_latency = Histogram(
            "gateway_lms_call_seconds",
            "LMS API call latency",
            ["app", "operation"],
            registry=r,
            buckets=(0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8),
        )
        self.budget_tokens = Gauge(
            "gateway_budget_tokens_left",
            "LMS call tokens left in the app's shared bucket, as this replica last saw it",
            ["app"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "gateway_budget_queue_wait_seconds",
            "Time sign-ins waited for an LMS call token",
            ["app"],
            registry=r,
            buckets=(0.0, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.budget_exhausted = Counter(
            "gateway_budget_exhausted_total",
            "Sign-ins sent to the queue page",
            ["app"],
            registry=r,
        )
        self.employee_busy = Counter(
            "gateway_budget_employee_busy_total",
            "Sign-ins refused because the employee spent their share of the app's LMS calls",
            ["app"],
            registry=r,
        )
        self.budget_refunds = Counter(
            "gateway_budget_refunded_calls_total",
            "LMS calls reserved by sign-ins and given back unspent",
            ["app"],
            registry=r,
        )
        self.deadline_hits = Counter(
            "gateway_sign_in_deadline_exceeded_total",
            "Sign-ins ended by their deadline (LMS slow or hung, or queue too long)",
            ["app"],
            registry=r,
        )
        self.rate_limited = Counter(
            "gateway_lms_rate_limited_total",
            "Rate-limit answers from the LMS (each pauses the app's budget)",
            ["app"],
            registry=r,
        )
        self.links_reused = Counter(
            "gateway_sign_in_links_reused_total",
            "Sign-ins sent to a link minted earlier that the LMS makes reusable (no LMS call)",
            ["app"],
            registry=r,
        )
        self.provisioning = Counter(
            "gateway_provisioning_actions_total",
            "LMS accounts created, updated, reactivated",
            ["app", "action"],
            registry=r,
        )
        self.replay_rejections = Counter(
            "gateway_replay_rejections_total",
            "Replayed states, nonces and assertions refused",
            ["idp", "kind"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "gateway_lms_circuit_open",
            "1 while an app's LMS circuit is open",
            ["app"],
            registry=r,
        )
        self.scim_requests = Counter(
            "gateway_scim_requests_total",
            "SCIM requests by app, operation and HTTP status",
            ["app", "op", "status"],
            registry=r,
        )
        self.scim_throttled = Counter(
            "gateway_scim_throttled_total",
            "SCIM requests answered 429 to keep the LMS budget's reserve for sign-ins",
            ["app"],
            registry=r,
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being served."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": request_id_var.get(),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        extra = " ".join(f"{k}={v}" for k, v in fields.items()) if isinstance(fields, dict) else ""
        base = f"{record.levelname} {record.name} [{request_id_var.get()}] {record.getMessage()}"
        return f"{base} {extra}".rstrip()


def configure_logging(level: str, fmt: str) -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_gateway", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._gateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request's full URL at INFO; URLs we call are secret-free by design,
    # but a library's log line is not the place to rely on that.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields`` (never pass secrets here)."""
    logger.log(level, msg, extra={"fields": fields})


def audit(event: str = "sign_in", **fields: Any) -> None:
    """One audit event (who, IdP, app, provisioning action, outcome, reference id).
    ``event``: ``sign_in`` (one per sign-in) or ``lms_effect`` (one per change made in the
    LMS, logged when the LMS confirmed it, even if the sign-in failed later)."""
    log_event(logging.getLogger(AUDIT_LOGGER), logging.INFO, event, **fields)
