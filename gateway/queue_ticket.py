"""Queue tickets: an employee's place in an app's LMS queue, kept across the queue page's
reloads and across replicas (issue 11, item 7).

Without them the queue was a lottery: a queued browser came back after ``Retry-After`` and
found its slot taken by a newcomer whose reservation happened to fit in ``max_wait_seconds``.
Now a sign-in whose calls are further away reserves them anyway (in the shared bucket, first
come, first served) and leaves a ticket in the store under the app and the employee's hashed
identity: how many calls it holds, and (through the key's TTL, on the store's clock, the same
for every replica) when the last of them matures. The employee's next sign-in claims it.

A ticket lives ``GRACE`` seconds past its last call's maturity. An employee who gave up never
claims it: its calls mature unused (the budget errs on the LMS's side) and it disappears. The
waste is bounded by the employee's share (``per_employee_calls_per_minute``), since a ticket's
calls are charged to that share once, when reserved.

``epoch`` ties a ticket to the bucket as it was when the calls were reserved: a pause (the LMS
said slow down) empties the bucket and forgives every reservation, so tickets from before it
hold nothing and are dropped when claimed (see ``Budget.pause``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.store.base import Store

# A claimed ticket may be a little late (a slow page load); spending calls that matured up to
# this long ago is within the slack the bucket already has (calls run after their maturity).
GRACE = 10.0


@dataclass(frozen=True)
class Ticket:
    """Calls reserved for one employee's sign-in to one app."""

    calls: int  # tokens reserved in the app's bucket
    share: int  # of those, charged to the employee's share (given back if unused)
    epoch: str  # the bucket's pause epoch when they were reserved
    last_in: float  # seconds from the claim until the last of them matures (may be < 0)

    def maturities(self, now: float, rate: float) -> list[float]:
        """When each call matures on a clock reading ``now``: the calls were reserved
        together, so they follow each other at the bucket's refill ``rate`` (per second)."""
        return [
            now + max(0.0, self.last_in - (self.calls - 1 - i) / rate) for i in range(self.calls)
        ]


def ticket_key(app: str, employee: str) -> str:
    return f"budget-ticket:{app}:{employee}"


def epoch_key(app: str) -> str:
    return f"budget-epoch:{app}"


async def claim(store: Store, key: str) -> Ticket | None:
    """Take the ticket at ``key`` (atomic: of two simultaneous claims one gets it)."""
    found = await store.pop_with_ttl(key)
    if found is None:
        return None
    raw, ttl_left = found
    try:
        data = json.loads(raw)
        calls, share, epoch = int(data["n"]), int(data["s"]), str(data["e"])
        grace = float(data["g"])
    except (ValueError, KeyError, TypeError):
        return None  # not one we wrote: no place to keep
    if not 0 < calls <= 10_000 or not 0 <= share <= calls:
        return None
    return Ticket(calls, share, epoch, ttl_left - grace)


async def put(store: Store, key: str, calls: int, share: int, epoch: str, last_in: float) -> None:
    """Leave a ticket for ``calls`` reserved calls, the last maturing in ``last_in`` seconds."""
    value = json.dumps({"n": calls, "s": share, "e": epoch, "g": GRACE}).encode()
    await store.set(key, value, max(0.001, last_in) + GRACE)
