"""Rows, targets and the printed table of the morning-rush benchmark (``rush.py``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tests.bench.rush_client import Outcome

TARGET_RATIO = 1.10
# Below this floor the time is set by how fast this machine runs sign-ins (IdP round trip,
# CPU shared with the peers), not by the budget: the ratio is printed but not judged.
JUDGED_FLOOR_S = 30.0


def _seconds(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    return {"p50": round(rank(50), 2), "p95": round(rank(95), 2), "max": round(ordered[-1], 2)}


def burst_row(
    connector: str,
    burst: str,
    outcomes: Sequence[Outcome],
    started: float,
    calls: int,
    limited: int,
    unloaded: float,
    floor: float,
) -> dict[str, Any]:
    """The figures of one burst: ``started`` is its start (``time.monotonic()``), ``calls``
    and ``limited`` the LMS calls and 429/503 answers the simulator counted meanwhile,
    ``unloaded`` the calls one sign-in took alone, ``floor`` the budget's least time."""
    landed = [o for o in outcomes if o.ok]
    last = max((o.ended for o in landed), default=started) - started
    ratio = round(last / floor, 3) if floor > 0 else None
    judged = floor >= JUDGED_FLOOR_S
    return {
        "connector": connector,
        "burst": burst,
        "n": len(outcomes),
        "landed": len(landed),
        "failures": len(outcomes) - len(landed),
        "failure_kinds": dict(Counter(o.error for o in outcomes if not o.ok).most_common(5)),
        "last_landed_s": round(last, 2),
        "floor_s": round(floor, 2),
        "ratio": ratio,
        # None: not judged (floor under JUDGED_FLOOR_S).
        "within_target": (
            bool(ratio is not None and ratio <= TARGET_RATIO and len(landed) == len(outcomes))
            if judged
            else None
        ),
        "lms_calls": calls,
        "calls_per_landed": round(calls / len(landed), 3) if landed else None,
        "unloaded_calls": unloaded,
        "lms_429_503": limited,
        "wait_s": _seconds([o.wait for o in landed]),
        "saw_queue": sum(1 for o in outcomes if o.queue_pages),
        "queue_pages": sum(o.queue_pages for o in outcomes),
        "saw_busy": sum(1 for o in outcomes if o.busy_pages),
        "gateway_requests": sum(o.requests for o in outcomes),
    }


def targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with ``met``: True, False, or None when nothing was judged
    (every floor under :data:`JUDGED_FLOOR_S`, as in ``--quick``)."""
    judged = [r for r in rows if r["within_target"] is not None]
    worst = max((r["ratio"] for r in judged), default=None)
    extra = [
        f"{r['connector']}/{r['burst']} {r['calls_per_landed']} vs {r['unloaded_calls']}"
        for r in rows
        if r["calls_per_landed"] is None or r["calls_per_landed"] > r["unloaded_calls"]
    ]
    return [
        {
            "name": "last employee landed within 10 % of the floor (worst judged burst; "
            f"{len(judged)} of {len(rows)} have a floor >= {JUDGED_FLOOR_S:.0f} s)",
            "target": f"ratio <= {TARGET_RATIO}",
            "measured": worst,
            "met": all(r["within_target"] for r in judged) if judged else None,
        },
        {
            "name": "LMS 429/503 answers",
            "target": "0",
            "measured": sum(r["lms_429_503"] for r in rows),
            "met": all(r["lms_429_503"] == 0 for r in rows),
        },
        {
            "name": "LMS calls per landed sign-in = unloaded figure",
            "target": "no extra calls",
            "measured": "; ".join(extra) or "equal everywhere",
            "met": not extra,
        },
        {
            "name": "employees who did not land",
            "target": "0",
            "measured": sum(r["failures"] for r in rows),
            "met": all(r["failures"] == 0 for r in rows),
        },
    ]


def table(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"Morning rush: {meta['gateways']} gateway replicas on Redis, simulators and budget at "
        f"{meta['calls_per_minute']} calls/min, N={meta['n']}, {meta['concurrency']} browsers "
        f"per connector{' (connectors one at a time)' if meta['sequential'] else ''}",
        "",
    ]
    head = (
        "connector", "burst", "N", "landed", "last s", "floor s", "ratio", "calls",
        "calls/landed", "unloaded", "429/503", "wait p50/p95/max s", "saw queue (pages)",
        "saw busy",
    )  # fmt: skip
    widths = (9, 9, 5, 6, 8, 8, 7, 6, 12, 8, 7, 20, 17, 8)
    lines.append("  ".join(str(c).rjust(w) for c, w in zip(head, widths, strict=True)))
    for r in report["rows"]:
        wait = r["wait_s"]
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        ratio += "*" if r["within_target"] is None else ""
        cells = (
            r["connector"], r["burst"], r["n"], r["landed"], r["last_landed_s"], r["floor_s"],
            ratio, r["lms_calls"],
            r["calls_per_landed"], r["unloaded_calls"], r["lms_429_503"],
            f"{wait['p50']}/{wait['p95']}/{wait['max']}", f"{r['saw_queue']} ({r['queue_pages']})",
            r["saw_busy"],
        )  # fmt: skip
        lines.append("  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True)))
        if r["failure_kinds"]:
            lines.append(f"    failures: {r['failure_kinds']}")
    if any(r["within_target"] is None for r in report["rows"]):
        lines.append(f"  * floor under {JUDGED_FLOOR_S:.0f} s: this machine's speed, not the "
                     "budget, sets the time; not judged")  # fmt: skip
    lines += ["", "targets:"]
    for t in report["targets"]:
        mark = {True: "met", False: "NOT MET", None: "not judged"}[t["met"]]
        lines.append(f"  [{mark}] {t['name']}: {t['measured']} (target {t['target']})")
    if report.get("gateway_failures"):
        lines += ["", "gateway 'request failed' log lines by code (queue pages included):"]
        lines += [f"  {n:6d}  {k}" for k, n in report["gateway_failures"].items()]
    return "\n".join(lines)
