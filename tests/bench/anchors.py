"""Anchors benchmark: the gateway beside Apache httpd + mod_auth_openidc / mod_auth_mellon +
a minimal backend, same demo IdPs, same SkyPrep simulator, same client flow.

    python -m tests.bench.anchors [--quick] [--rounds 5] [--batch 600] [--concurrency 16]
        [--userinfo-variant] [--untuned-mellon] [--json PATH]

Stacks (see tests/bench/apache.py for every Apache setting and why): ``gateway`` (as
``gateway serve`` runs it, one process); ``apache-openidc`` (mod_auth_openidc, no userinfo
call, like the gateway when the ID token carries the claims); ``apache-mellon`` (tuned
mod_auth_mellon); with the flags also ``apache-openidc-userinfo`` and
``apache-mellon-untuned`` (its batches are a tenth of the size: ~0.2 s CPU per sign-in).
Each Apache instance has its own minimal backend (tests/bench/anchor_backend.py).

Per protocol, each round runs one batch per stack, interleaved (gateway, Apache, ...; the
order alternates between rounds so drift hits both sides alike). A batch is ``--batch``
returning employees (account already at SkyPrep, full IdP round trip, fresh browser each),
``--concurrency`` at a time. CPU: utime + stime from ``/proc`` of each stack's own
processes, read before and after its batch: the gateway's process; Apache's parent and child
plus the backend. IdPs, SkyPrep and the load generator are not counted for either side.
Printed: CPU ms per sign-in per stack (median, min, max over rounds) and the ratio
gateway / anchor (median, min, max of the same-round ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.sandbox._saml_build import SigningKey
from tests.bench import apache
from tests.bench.anchor_flow import ApacheDriver
from tests.bench.anchor_report import summarize, table
from tests.bench.loadgen import Driver, Job, Sample
from tests.bench.peers import SKYPREP_ACCT, SKYPREP_KEY
from tests.bench.procstat import ProcTree
from tests.bench.report import machine
from tests.bench.stack import ROOT, BenchStack, _listen, app_names


@dataclass
class AnchorStack(BenchStack):
    """The benchmark's peers and gateway, with the demo OpenID provider also knowing
    mod_auth_openidc as a client (the OIDC anchor's port is chosen before the peers start)."""

    openidc_ports: tuple[int, ...] = ()
    oidc_secret: str = ""

    def _spawn(
        self, name: str, args: list[str], sock: socket.socket, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        if name == "oidc":
            self.oidc_secret = env["DEMO_OIDC_SECRET"]
            for i, port in enumerate(self.openidc_ports):
                uri = f"http://127.0.0.1:{port}/oidc/callback"
                args = [*args, "--extra-client", f"{apache.OIDC_CLIENT_ID}{i or ''}={uri}"]
        return super()._spawn(name, args, sock, env)


@dataclass
class Side:
    """One stack under test for one protocol."""

    name: str
    protocol: str
    urls: dict[str, str]
    driver: type[Driver]
    trees: list[ProcTree]
    apps: list[str] = field(default_factory=lambda: ["skyprep"])

    def cpu(self) -> float:
        return sum(t.cpu_seconds() for t in self.trees)


class Anchors:
    """Starts everything, runs the rounds, stops everything."""

    def __init__(self, *, userinfo_variant: bool = False, untuned_mellon: bool = False) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="gw-anchors-"))
        self.work.chmod(0o755)  # Apache's child (www-data when run as root) reads below it
        self.variants = (False, True) if userinfo_variant else (False,)
        self.mellon_variants = (True, False) if untuned_mellon else (True,)
        self.ports: dict[str, int] = {}
        for tuned in self.mellon_variants:
            self.ports[f"mellon{'' if tuned else '-untuned'}"] = apache.free_port()
        for userinfo in self.variants:
            self.ports[f"openidc{'-userinfo' if userinfo else ''}"] = apache.free_port()
        openidc = tuple(p for k, p in self.ports.items() if k.startswith("openidc"))
        self.stack = AnchorStack(workers=1, store="memory", openidc_ports=openidc)
        self.apaches: list[apache.Apache] = []
        self.sides: list[Side] = []

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        s = self.stack
        s.start(calls_per_minute=10_000, plain=True)  # `gateway serve` as is, no bench timing
        s.set_rate_limits(1_000_000_000)
        gw_apps = app_names("skyprep", s.replicas)
        gw_tree = s.gateway_tree
        assert gw_tree is not None
        for proto in ("oidc", "saml"):
            self.sides.append(Side("gateway", proto, dict(s.urls), Driver, [gw_tree], gw_apps))
        with urllib.request.urlopen(f"{s.urls['oidc']}/.well-known/openid-configuration") as a:
            discovery = json.load(a)
        for i, userinfo in enumerate(self.variants):
            name = f"openidc{'-userinfo' if userinfo else ''}"
            port = self.ports[name]
            files = {}
            if userinfo:
                metadata = f"{s.urls['oidc']}/.well-known/openid-configuration"
            else:
                metadata = f"http://127.0.0.1:{port}/discovery.json"
                trimmed = {k: v for k, v in discovery.items() if k != "userinfo_endpoint"}
                files["htdocs/discovery.json"] = json.dumps(trimmed).encode()
            client = f"{apache.OIDC_CLIENT_ID}{i or ''}"
            conf = apache.openidc_conf(
                self.work / name, port, self._backend(name), metadata, client, s.oidc_secret
            )
            self._apache(name, "oidc", conf, files, s.urls["oidc"])
        for tuned in self.mellon_variants:
            self._mellon(f"mellon{'' if tuned else '-untuned'}", tuned)

    def _mellon(self, name: str, tuned: bool) -> None:
        # mellon's IdP: the same demo SAML IdP code in its own process, told about this SP.
        port = self.ports[name]
        sp_base = f"http://127.0.0.1:{port}/mellon"
        idp_xml = self.work / f"{name}-idp.xml"
        saml_url = self._mellon_idp(name, sp_base, idp_xml)
        key = SigningKey.generate("mellon anchor SP", datetime.now(UTC))
        files = {
            "saml/sp.key": key.key_pem,
            "saml/sp.crt": key.cert_pem,
            "saml/sp.xml": apache.mellon_sp_metadata(port, key.cert_base64).encode(),
            "saml/idp.xml": idp_xml.read_bytes(),
        }
        conf = apache.mellon_conf(self.work / name, port, self._backend(name))
        env = apache.mellon_env(self.work / name) if tuned else {}
        self._apache(name, "saml", conf, files, saml_url, env)

    def _mellon_idp(self, name: str, sp_base: str, metadata: Path) -> str:
        sock = _listen()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        args = ["-m", "tests.bench.peers", "--role", "saml", "--url", url]
        args += ["--gateway", self.stack.urls["gateway"], "--metadata-out", str(metadata)]
        args += ["--sp-entity-id", f"{sp_base}/metadata", "--sp-acs", f"{sp_base}/postResponse"]
        self.stack._spawn(f"saml-{name}", args, sock, {**os.environ, "PYTHONPATH": str(ROOT)})
        sock.close()
        self.stack._wait(f"saml-{name}", f"{url}/_bench/stats")
        return url

    def _backend(self, name: str) -> int:
        sock = _listen()
        port = int(sock.getsockname()[1])
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SKYPREP_API_KEY": SKYPREP_KEY}
        args = ["-m", "tests.bench.anchor_backend", "--skyprep", self.stack.urls["skyprep"]]
        self.stack._spawn(f"backend-{name}", [*args, "--acct", SKYPREP_ACCT], sock, env)
        sock.close()
        self.stack._wait(f"backend-{name}", f"http://127.0.0.1:{port}/healthz")
        return port

    def _apache(
        self,
        name: str,
        proto: str,
        conf: str,
        files: dict[str, bytes],
        idp: str,
        env: dict[str, str] | None = None,
    ) -> None:
        server = apache.Apache(name, self.work / name, self.ports[name])
        server.write(conf, files)
        self.apaches.append(server)
        server.start(env=env)
        backend = ProcTree(self.stack.procs[f"backend-{name}"].pid)
        urls = {"gateway": server.url, proto: idp, "skyprep": self.stack.urls["skyprep"]}
        trees = [server.tree(), backend]
        self.sides.append(Side(f"apache-{name}", proto, urls, ApacheDriver, trees))

    def stop(self) -> None:
        for server in self.apaches:
            server.stop()
        self.stack.stop()
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)

    # -- measuring -------------------------------------------------------------------------

    def batch(self, side: Side, subs: Sequence[str], n: int, concurrency: int) -> dict[str, Any]:
        jobs = [
            # An employee always goes to the same app (the gateway's account cache is per app).
            Job(
                side.protocol,
                side.apps[i % len(subs) % len(side.apps)],
                "skyprep",
                subs[i % len(subs)],
            )
            for i in range(n)
        ]
        idp = f"{side.urls[side.protocol]}/_bench/stats"
        calls, idp_requests = self.stack.stats("skyprep")["calls"], _requests(idp)
        cpu = side.cpu()
        samples = asyncio.run(_drive(side, jobs, concurrency))
        cpu = side.cpu() - cpu
        calls = self.stack.stats("skyprep")["calls"] - calls
        idp_requests = _requests(idp) - idp_requests
        ok = [s for s in samples if s.ok]
        errors = sorted({s.error for s in samples if not s.ok})
        return {
            "stack": side.name,
            "protocol": side.protocol,
            "signins": len(ok),
            "errors": len(samples) - len(ok),
            "error_kinds": errors[:5],
            "cpu_s": round(cpu, 3),
            "cpu_ms_per_signin": round(cpu * 1e3 / len(ok), 3) if ok else 0.0,
            "lms_calls_per_signin": round(calls / len(ok), 3) if ok else 0.0,
            # Browser hops to the IdP plus the stack's back-channel calls (token, userinfo).
            "idp_requests_per_signin": round(idp_requests / len(ok), 3) if ok else 0.0,
            "landed_at_skyprep": len(ok),
        }


def _requests(stats_url: str) -> int:
    with urllib.request.urlopen(stats_url, timeout=10) as answer:
        return int(json.load(answer)["requests"])


async def _drive(side: Side, jobs: Sequence[Job], concurrency: int) -> list[Sample]:
    driver = side.driver(side.urls, concurrency)
    try:
        return await driver.run(jobs, concurrency)
    finally:
        await driver.aclose()


# -- rounds and report ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    rounds: int
    batch: int
    concurrency: int
    employees: int


QUICK = Sizes(rounds=1, batch=12, concurrency=4, employees=12)
FULL = Sizes(rounds=5, batch=600, concurrency=16, employees=600)


def run(anchors: Anchors, sizes: Sizes) -> dict[str, Any]:
    """Warm-up, then ``sizes.rounds`` rounds of interleaved batches; the JSON report."""
    # As many employees as sign-ins per batch: each signs in once per batch, well inside the
    # gateway's per-employee share of LMS calls (6 a minute), as real returning employees do.
    subs = [f"bench-{i}" for i in range(1, sizes.employees + 1)]
    # Every employee signs in once through every stack first: the SkyPrep accounts exist
    # (returning employees), and keys, JWKS, metadata, pools and caches are warm on both sides.
    warmup = []
    for side in anchors.sides:
        warmup.append(anchors.batch(side, subs, _size(side, len(subs)), sizes.concurrency))
    batches: list[dict[str, Any]] = []
    for r in range(sizes.rounds):
        for proto in ("oidc", "saml"):
            sides = [s for s in anchors.sides if s.protocol == proto]
            for side in sides[::-1] if r % 2 else sides:
                row = anchors.batch(side, subs, _size(side, sizes.batch), sizes.concurrency)
                batches.append({"round": r, **row})
                print(
                    f"  round {r} {proto} {side.name}: {row['cpu_ms_per_signin']} ms CPU per "
                    f"sign-in, {row['signins']} ok, {row['errors']} errors",
                    flush=True,
                )
    return {"warmup": warmup, "batches": batches, "summary": summarize(batches)}


def _size(side: Side, batch: int) -> int:
    # The untuned mellon costs ~0.2 s of CPU per sign-in: a tenth of the batch is plenty.
    return max(4, batch // 10) if side.name == "apache-mellon-untuned" else batch


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny batches")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument(
        "--userinfo-variant",
        action="store_true",
        help="also run mod_auth_openidc with its userinfo call",
    )
    parser.add_argument(
        "--untuned-mellon",
        action="store_true",
        help="also run mod_auth_mellon without the tuning (slow: ~0.2 s CPU per sign-in)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    missing = apache.available()
    if missing:
        print(f"anchors: cannot run: {missing} (scripts/setup.sh --test installs it)")
        return 2
    base = QUICK if args.quick else FULL
    sizes = Sizes(
        rounds=args.rounds or base.rounds,
        batch=args.batch or base.batch,
        concurrency=args.concurrency or base.concurrency,
        employees=args.batch or base.employees,
    )
    meta = {**machine(), "mode": "quick" if args.quick else "full", **sizes.__dict__}
    anchors = Anchors(userinfo_variant=args.userinfo_variant, untuned_mellon=args.untuned_mellon)
    anchors.start()
    try:
        report = {"meta": meta, **run(anchors, sizes)}
        report["gateway_failures"] = anchors.stack.gateway_failures()
        report["meta"]["loadavg_end"] = list(os.getloadavg())
    finally:
        anchors.stop()
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    failed = sum(b["errors"] for b in report["batches"] + report["warmup"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
