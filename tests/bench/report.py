"""Summaries of samples and the printed tables."""

from __future__ import annotations

import os
import platform
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tests.bench.loadgen import Sample


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 (nearest rank) in milliseconds; zeros for no values."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    return {k: round(rank(p) * 1e3, 3) for k, p in (("p50", 50), ("p95", 95), ("p99", 99))}


def summarize(samples: Sequence[Sample], wall: float, cpu: float) -> dict[str, Any]:
    """Throughput, per-core rate and latency figures of one measured batch."""
    ok = [s for s in samples if s.ok]
    errors = Counter(s.error for s in samples if not s.ok)
    return {
        "signins": len(ok),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(5)),
        "wall_s": round(wall, 3),
        "rate_per_s": round(len(ok) / wall, 1) if wall > 0 else 0.0,
        "gateway_cpu_s": round(cpu, 3),
        "per_core": round(len(ok) / cpu, 1) if cpu > 0 else 0.0,
        "cpu_ms_per_signin": round(cpu * 1e3 / len(ok), 3) if ok else 0.0,
        "own_ms": percentiles([s.own for s in ok]),
        "own_excluding_calls_ms": percentiles([s.own_excluding_calls for s in ok]),
        "retries": sum(s.retries for s in samples),
        "gw_client_ms": percentiles([s.gw_client for s in ok]),
        "wall_ms": percentiles([s.wall for s in ok]),
    }


def calibration_ms() -> float:
    """Best of 3 of a fixed pure-Python loop: scale this run's figures to another machine."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(1_000_000))
        best = min(best, time.perf_counter() - started)
    return round(best * 1e3, 1)


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_start": list(os.getloadavg()),
        "calibration_ms": calibration_ms(),
    }


def _row(cells: Sequence[object], widths: Sequence[int]) -> str:
    return "  ".join(
        str(c).rjust(w) if i else str(c).ljust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def table(report: dict[str, Any]) -> str:
    """The human-readable tables for ``report`` (the JSON the harness writes)."""
    out: list[str] = []
    m = report["meta"]
    out.append(
        f"gateway benchmark  {m['date']}  {m['nproc']} x {m['cpu_model']}  "
        f"workers={m['workers']} store={m['store']} mode={m['mode']}\n"
        f"calibration loop {m['calibration_ms']} ms, load average at start "
        f"{m['loadavg_start'][0]:.2f}, at end {m.get('loadavg_end', [0])[0]:.2f}"
    )
    out.append(
        f"\n(1, 2, 4) complete sign-ins, zero added upstream latency, {m['concurrency']} concurrent"
    )
    w = (24, 8, 6, 7, 9, 7, 8, 8, 8, 9, 5, 8, 8)
    out.append(
        _row(
            [
                "case",
                "sign-ins",
                "errors",
                "per s",
                "per core",
                "cpu ms",
                "own p50",
                "own p99",
                "gw p99",
                "wall p99",
                "LMS",
                "peers ms",
                "gen ms",
            ],
            w,
        )
    )
    for r in report["throughput"]:
        n = max(1, r["signins"])
        out.append(
            _row(
                [
                    f"{r['protocol']} {r['connector']} {r['phase']}",
                    r["signins"],
                    r["errors"],
                    r["rate_per_s"],
                    r["per_core"],
                    r["cpu_ms_per_signin"],
                    r["own_ms"]["p50"],
                    r["own_ms"]["p99"],
                    r["gw_client_ms"]["p99"],
                    r["wall_ms"]["p99"],
                    r["lms_calls_per_signin"],
                    round(r["peers_cpu_s"] * 1e3 / n, 2),
                    round(r["loadgen_cpu_s"] * 1e3 / n, 2),
                ],
                w,
            )
        )
    out.append("\n(2) one sign-in at a time (returning), milliseconds")
    w2 = (24, 8, 8, 8, 8, 8, 8)
    out.append(_row(["case", "own p50", "own p95", "own p99", "gw p50", "gw p99", "wall p50"], w2))
    for r in report["sequential"]:
        out.append(
            _row(
                [
                    f"{r['protocol']} {r['connector']}",
                    r["own_ms"]["p50"],
                    r["own_ms"]["p95"],
                    r["own_ms"]["p99"],
                    r["gw_client_ms"]["p50"],
                    r["gw_client_ms"]["p99"],
                    r["wall_ms"]["p50"],
                ],
                w2,
            )
        )
    out.append(
        "\n(3) returning sign-ins (OIDC+SAML, all connectors) with IdP "
        f"{report['realistic'][0]['idp_ms'] if report['realistic'] else '-'} ms and LMS "
        f"{report['realistic'][0]['lms_ms'] if report['realistic'] else '-'} ms added"
    )
    w3 = (12, 8, 7, 8, 9, 9, 8, 9, 8)
    out.append(
        _row(
            [
                "concurrent",
                "sign-ins",
                "errors",
                "per s",
                "wall p99",
                "own p99",
                "cpu ms",
                "peak RSS",
                "sockets",
            ],
            w3,
        )
    )
    for r in report["realistic"]:
        out.append(
            _row(
                [
                    r["concurrency"],
                    r["signins"],
                    r["errors"],
                    r["rate_per_s"],
                    r["wall_ms"]["p99"],
                    r["own_ms"]["p99"],
                    r["cpu_ms_per_signin"],
                    f"{r['peak_rss_mb']} MB",
                    r["peak_sockets"],
                ],
                w3,
            )
        )
    out.append("\n(4) LMS calls per sign-in at the simulators (their 100/min limits on)")
    w4 = (10, 6, 7, 10, 7, 6)
    out.append(_row(["connector", "idp", "first", "returning", "click", "429s"], w4))
    for r in report["lms_calls"]:
        out.append(
            _row(
                [
                    r["connector"],
                    r["protocol"],
                    r["first"],
                    r["returning"],
                    r["click"],
                    r["rate_limited"],
                ],
                w4,
            )
        )
    c = report["crypto"]
    out.append(
        "\n(5) crypto floor (this process): ID token RS256 verify "
        f"{c['oidc_id_token_rs256_verify_ms']:.3f} ms, SAML signature verify "
        f"{c['saml_signature_verify_ms']:.3f} ms (whole validate_response "
        f"{c['saml_validate_response_ms']:.3f} ms); gateway CPU per returning sign-in / "
        f"floor: OIDC {c['ratio_oidc']}x, SAML {c['ratio_saml']}x"
    )
    if report.get("gateway_failures"):
        out.append(
            "\ngateway 'request failed' log lines: "
            + "; ".join(f"{k} x{v}" for k, v in report["gateway_failures"].items())
        )
    out.append("\ntargets")
    for t in report["targets"]:
        out.append(
            f"  [{'met' if t['met'] else 'MISSED'}] {t['name']}: {t['measured']} "
            f"(target {t['target']})"
        )
    return "\n".join(out)
