"""CI smoke check of the anchors benchmark: ``python -m tests.bench.anchors --quick`` starts
the peers, the gateway, Apache httpd with mod_auth_openidc and with mod_auth_mellon (each in
front of the minimal backend), drives a few returning sign-ins through each, prints the
side-by-side table and writes the JSON report. No timing is asserted; what is asserted is
that every sign-in of both stacks landed at SkyPrep with one LMS call, that the report has
its figures, and that every process it started is gone afterwards. Needs the Debian packages
that ``scripts/setup.sh --test`` installs (apache2, libapache2-mod-auth-openidc,
libapache2-mod-auth-mellon)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACKS = {
    ("oidc", "gateway"),
    ("oidc", "apache-openidc"),
    ("saml", "gateway"),
    ("saml", "apache-mellon"),
}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _running() -> set[str]:
    """Command lines of processes the anchors benchmark starts, if any are running."""
    found = set()
    markers = ("tests.bench.peers", "tests.bench.gateway_proc", "tests.bench.anchor_backend")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in markers) or ("apache2" in cmd and "gw-anchors-" in cmd):
            found.add(f"{proc.name} {cmd}")
    return found


@pytest.mark.bench
def test_quick_anchors_run_signs_everyone_in_through_both_stacks(tmp_path: Path) -> None:
    before = _running()
    out = tmp_path / "anchors.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.anchors", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "CPU ms/sign-in" in done.stdout and "gateway/anchor" in done.stdout
    report = json.loads(out.read_text())
    meta = report["meta"]
    assert meta["mode"] == "quick" and meta["rounds"] == 1 and meta["nproc"] >= 1
    assert meta["cpu_model"] is not None and meta["date"]

    # Every batch, warm-up (first sign-ins) included: all sign-ins completed at SkyPrep.
    for row in report["warmup"] + report["batches"]:
        assert row["errors"] == 0, row
        assert row["signins"] == row["landed_at_skyprep"] > 0, row
        assert row["lms_calls_per_signin"] >= 1.0, row
        assert _is_number(row["cpu_s"]) and _is_number(row["cpu_ms_per_signin"]), row
    # Measured batches are returning employees: exactly one LMS call each, on both stacks.
    assert all(b["lms_calls_per_signin"] == 1.0 for b in report["batches"]), report["batches"]
    assert {(b["protocol"], b["stack"]) for b in report["batches"]} == STACKS
    assert all(b["signins"] == meta["batch"] for b in report["batches"])

    # The summary: spread over rounds for each stack, the ratio for each anchor.
    assert {(r["protocol"], r["stack"]) for r in report["summary"]} == STACKS
    for row in report["summary"]:
        spread = row["cpu_ms_per_signin"]
        assert set(spread) == {"median", "min", "max"}
        assert all(_is_number(v) for v in spread.values())
        assert spread["min"] <= spread["median"] <= spread["max"]
        assert ("ratio_gateway_to_anchor" in row) == (row["stack"] != "gateway")
    # Nothing left running: peers, gateway, backends, Apache instances.
    assert _running() <= before
