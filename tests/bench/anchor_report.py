"""Summary and printed table of the anchors benchmark (:mod:`tests.bench.anchors`)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def _spread(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "min": 0.0, "max": 0.0}
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def summarize(batches: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (protocol, stack): CPU ms per sign-in over rounds and, for anchors, the ratio
    gateway / anchor of the batches of the same round."""
    rows = []
    for proto in ("oidc", "saml"):
        mine = [b for b in batches if b["protocol"] == proto]
        gateway = {b["round"]: b["cpu_ms_per_signin"] for b in mine if b["stack"] == "gateway"}
        for stack in dict.fromkeys(b["stack"] for b in mine):
            own = [b for b in mine if b["stack"] == stack]
            row: dict[str, Any] = {
                "protocol": proto,
                "stack": stack,
                "rounds": len(own),
                "signins": sum(b["signins"] for b in own),
                "errors": sum(b["errors"] for b in own),
                "cpu_ms_per_signin": _spread([b["cpu_ms_per_signin"] for b in own]),
                "lms_calls_per_signin": _spread([b["lms_calls_per_signin"] for b in own]),
                "idp_requests_per_signin": _spread([b["idp_requests_per_signin"] for b in own]),
            }
            if stack != "gateway":
                ratios = [
                    gateway[b["round"]] / b["cpu_ms_per_signin"]
                    for b in own
                    if b["round"] in gateway and b["cpu_ms_per_signin"] > 0
                ]
                row["ratio_gateway_to_anchor"] = _spread(ratios)
            rows.append(row)
    return rows


def table(report: dict[str, Any]) -> str:
    m = report["meta"]
    out = [
        f"anchors benchmark  {m['date']}  {m['nproc']} x {m['cpu_model']}  "
        f"calibration loop {m['calibration_ms']} ms",
        f"{m['rounds']} round(s) x {m['batch']} returning sign-ins per batch, "
        f"{m['concurrency']} concurrent, batches interleaved; CPU ms per sign-in: median "
        "(min-max) over rounds",
        "",
        f"{'protocol':8}  {'stack':24}  {'CPU ms/sign-in':>22}  {'gateway/anchor':>22}  "
        f"{'LMS calls':>9}  {'IdP reqs':>8}  {'sign-ins':>8}  {'errors':>6}",
    ]
    for r in report["summary"]:
        c = r["cpu_ms_per_signin"]
        ratio = r.get("ratio_gateway_to_anchor")
        rt = f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})" if ratio else ""
        out.append(
            f"{r['protocol']:8}  {r['stack']:24}  "
            f"{c['median']:>8.2f} ({c['min']:.2f}-{c['max']:.2f})".ljust(60)
            + f"  {rt:>22}  {r['lms_calls_per_signin']['median']:>9}  "
            f"{r['idp_requests_per_signin']['median']:>8}  {r['signins']:>8}  "
            f"{r['errors']:>6}"
        )
    return "\n".join(out)
