"""Per-process circuit breaker of one app's LMS (part of the app's :class:`Budget`).

After ``failures`` failures in a row the circuit opens: calls are refused at once for
``open_seconds``. Then it is half-open: one probe at a time goes to the LMS; a success closes
it, a failure opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import LmsUnavailable


@dataclass
class Circuit:
    """State of one app's circuit; times are on the owning budget's clock."""

    app: str
    failures_to_open: int
    open_seconds: float
    failures: int = 0
    open_until: float = 0.0
    # When the half-open probe was let through (None: no probe in flight).
    probe_started: float | None = None

    def is_open(self, now: float) -> bool:
        return self.open_until > now

    def check(self, now: float) -> float | None:
        """Refuse at once while open; while half-open let one probe through and return the
        time it started (None when the circuit is closed)."""
        if self.open_until == 0.0:
            return None
        if self.open_until > now:
            raise LmsUnavailable(f"circuit open for app {self.app}")
        # One probe at a time while half-open; the others are refused at once. A probe that
        # never reports back (e.g. its call ended in a 429, which is neither success nor
        # failure) is given up after another open period, so the circuit cannot stick.
        if self.probe_started is not None and now - self.probe_started < self.open_seconds:
            raise LmsUnavailable(f"circuit half-open for app {self.app}, probe in flight")
        self.probe_started = now
        return now

    def abandon(self, probe: float | None) -> None:
        """A probe that never reached the LMS (queue page, store down, client gone) proved
        nothing: free the slot so the next sign-in can probe."""
        if probe is not None and self.probe_started == probe:
            self.probe_started = None

    def success(self) -> None:
        self.failures, self.open_until, self.probe_started = 0, 0.0, None

    def failure(self, now: float) -> None:
        self.failures += 1
        self.probe_started = None
        if self.failures >= self.failures_to_open:
            self.open_until = now + self.open_seconds
