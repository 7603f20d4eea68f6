"""CI smoke check of the benchmark harness: ``python -m tests.bench.run --quick`` starts the
peers and the gateway in their own processes, drives complete sign-ins, prints the tables and
writes a JSON report with every section. No timing is asserted (CI machines vary); what is
asserted is that the harness works: sign-ins complete, figures are present and well-typed,
and every process it started is gone afterwards."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PERCENTILES = {"p50", "p95", "p99"}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _check_batch(row: dict[str, object]) -> None:
    for key in (
        "signins",
        "errors",
        "wall_s",
        "rate_per_s",
        "gateway_cpu_s",
        "per_core",
        "cpu_ms_per_signin",
        "lms_calls_per_signin",
    ):
        assert _is_number(row[key]), (key, row[key])
    for key in ("own_ms", "gw_client_ms", "wall_ms"):
        figures = row[key]
        assert isinstance(figures, dict) and set(figures) == PERCENTILES
        assert all(_is_number(v) for v in figures.values())
        assert figures["p50"] <= figures["p95"] <= figures["p99"]


MARK = "GATEWAY_BENCH_TEST_RUN"


def _marked_processes(token: str) -> list[str]:
    """Command lines of processes carrying ``MARK=token`` in their environment: the
    benchmark's children (peers, gateways, redis-server) inherit it, while benchmarks that
    others run on the machine at the same time do not."""
    needle = f"{MARK}={token}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                found.append(cmd.decode(errors="replace"))
        except OSError:
            continue
    return found


@pytest.mark.bench
def test_quick_run_writes_a_complete_report(tmp_path: Path) -> None:
    token = secrets.token_hex(8)
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, MARK: token},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for heading in ("(1, 2, 4)", "(2)", "(3)", "(4)", "(5)", "targets"):
        assert heading in done.stdout
    report = json.loads(out.read_text())
    assert set(report) >= {
        "meta",
        "throughput",
        "sequential",
        "realistic",
        "lms_calls",
        "crypto",
        "targets",
    }
    assert report["meta"]["nproc"] >= 1 and report["meta"]["mode"] == "quick"

    # (1) every protocol x connector x phase, all sign-ins completed
    cases = {(r["protocol"], r["connector"], r["phase"]) for r in report["throughput"]}
    assert cases == {
        (p, c, ph)
        for p in ("oidc", "saml")
        for c in ("skyprep", "damstra", "litmos")
        for ph in ("first", "returning", "click")
    }
    for row in report["throughput"] + report["sequential"]:
        _check_batch(row)
        assert row["signins"] > 0 and row["errors"] == 0, row
    # (3) realistic upstream latency: memory and connection figures present
    assert [r["concurrency"] for r in report["realistic"]] == [20, 50]
    for row in report["realistic"]:
        _check_batch(row)
        assert row["signins"] > 0
        assert row["peak_rss_mb"] > 0 and row["peak_sockets"] > 0
    # (4) counted at the simulators, for every connector and both IdPs
    assert {(r["connector"], r["protocol"]) for r in report["lms_calls"]} == {
        (c, p) for c in ("skyprep", "damstra", "litmos") for p in ("oidc", "saml")
    }
    for row in report["lms_calls"]:
        assert all(_is_number(row[k]) and row[k] > 0 for k in ("first", "returning", "click"))
        assert row["errors"] == 0
    # (5) crypto floor and ratios
    crypto = report["crypto"]
    for key in (
        "oidc_id_token_rs256_verify_ms",
        "saml_signature_verify_ms",
        "saml_validate_response_ms",
        "ratio_oidc",
        "ratio_saml",
    ):
        assert _is_number(crypto[key]) and crypto[key] > 0
    assert all(isinstance(t["met"], bool) for t in report["targets"])
    # nothing left running
    assert _marked_processes(token) == []
