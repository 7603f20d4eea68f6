"""What the LMS calls made by the current task are for.

The budget serves three classes of calls (DESIGN.md, trust model): calls of a sign-in that
has already spent LMS calls (so progress is never thrown away), then new sign-ins, then
background work such as SCIM provisioning, which only spends above a reserve kept for
sign-ins. The class, the sign-in's deadline and the (hashed) employee travel with the task in
a context variable, so connectors need not pass them through every call.

Set by ``provisioning.py`` (sign-ins) and the SCIM service (background); read by
``budget.py`` and ``connectors/_http.py``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import IntEnum


class CallClass(IntEnum):
    """Budget priority, most urgent first."""

    CONTINUING = 0  # later calls of a sign-in that has already spent LMS calls
    SIGN_IN = 1  # the first call of a sign-in
    BACKGROUND = 2  # SCIM and other work no employee is waiting for


@dataclass
class CallContext:
    """Mutable on purpose: one object is shared by all calls of one sign-in."""

    call_class: CallClass = CallClass.SIGN_IN
    # time.monotonic() by which every LMS call, retry and budget wait must be over; None: none.
    # (Budget's clock, which is time.monotonic() except in virtual-time tests.)
    deadline: float | None = None
    # The employee these calls serve (a hash, never an e-mail), for per-employee shares.
    employee: str | None = None
    calls_spent: int = 0
    # Tokens this sign-in reserved up front (Budget.reserve): when each matures, on the
    # budget's clock. Spent first, without another store round trip; unused ones go back.
    prepaid: list[float] = field(default_factory=list)
    # When they were reserved (a pause after that voids them: it emptied the bucket).
    prepaid_at: float = 0.0
    # Of those, how many were charged to the employee's share (given back with them).
    prepaid_share: int = 0
    # Called with (operation, action) when an LMS call changed the LMS (an account created,
    # reactivated, updated), right when the LMS confirmed it: the audit trail.
    on_effect: Callable[[str, str], None] | None = None
    # Awaited before a call that is not safe to repeat (a create): raises unless this sign-in
    # still holds its single-flight lock (and renews it), so a create is never sent twice.
    fence: Callable[[], Awaitable[None]] | None = None

    @property
    def continuing(self) -> bool:
        """Whether the next call is a later call of a sign-in that already spent calls."""
        return self.call_class is CallClass.CONTINUING or (
            self.call_class is CallClass.SIGN_IN and self.calls_spent > 0
        )

    def remaining(self, now: float | None = None) -> float | None:
        """Seconds left before the deadline (never negative), or None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - (time.monotonic() if now is None else now))


_current: ContextVar[CallContext | None] = ContextVar("gateway_lms_calls", default=None)


def current() -> CallContext:
    """The calls' context of this task (a fresh default one when none was set)."""
    context = _current.get()
    return context if context is not None else CallContext()


@contextmanager
def lms_calls(context: CallContext) -> Iterator[CallContext]:
    """Run the ``with`` block's LMS calls under ``context``."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
