"""CI smoke check of the morning-rush benchmark: ``python -m tests.bench.rush --quick`` starts
the peers, a real redis-server and two gateway replicas, runs a small first and returning
burst per connector against simulators enforcing their limit, prints the table and writes a
JSON report. No timing is asserted (CI machines vary); asserted is what an operator relies
on: every employee landed, the simulators never had to say "slow down", the figures are
all there and well-typed, and every process the benchmark started is gone afterwards."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.test_bench_quick import MARK, _is_number, _marked_processes

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.bench
@pytest.mark.timeout(240)
def test_quick_rush_lands_everyone_and_reports_every_figure(tmp_path: Path) -> None:
    token = secrets.token_hex(8)
    out = tmp_path / "rush.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.rush", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
        env={**os.environ, MARK: token},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Morning rush" in done.stdout and "targets:" in done.stdout
    report = json.loads(out.read_text())
    assert report["meta"]["mode"] == "quick" and report["meta"]["gateways"] == 2
    n = report["meta"]["n"]

    rows = report["rows"]
    assert [(r["connector"], r["burst"]) for r in rows] == [
        (c, b) for c in ("skyprep", "damstra", "litmos") for b in ("first", "returning")
    ]
    for row in rows:
        # Every employee landed on the right LMS; the LMS never answered 429/503.
        assert row["n"] == n and row["landed"] == n and row["failures"] == 0, row
        assert row["lms_429_503"] == 0, row
        for key in ("last_landed_s", "floor_s", "lms_calls", "calls_per_landed"):
            assert _is_number(row[key]), (key, row)
        assert _is_number(row["unloaded_calls"]) and row["unloaded_calls"] >= 0
        wait = row["wait_s"]
        assert set(wait) == {"p50", "p95", "max"}
        assert 0 <= wait["p50"] <= wait["p95"] <= wait["max"] <= row["last_landed_s"] + 1
        assert 0 <= row["saw_queue"] <= n and 0 <= row["saw_busy"] <= n
        assert row["queue_pages"] >= row["saw_queue"]
        assert row["ratio"] is None or _is_number(row["ratio"])
        assert row["within_target"] in (True, False, None)
    # A first sign-in costs the LMS at least one call; every landed one was paid for.
    assert all(r["unloaded_calls"] >= 1 for r in rows if r["burst"] == "first")
    assert {t["name"].split(" (")[0] for t in report["targets"]} >= {
        "LMS 429/503 answers",
        "employees who did not land",
    }
    assert all(t["met"] in (True, False, None) for t in report["targets"])
    # nothing it started is left running (peers, gateways, redis-server)
    assert _marked_processes(token) == []
