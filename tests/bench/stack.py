"""Start and stop the benchmark's processes: five peers (``peers.py``), optionally a real
redis-server, and the gateway (``gateway_proc.py``), all on 127.0.0.1.

Listening sockets are bound here and inherited by the children (no free-port races). Every
child runs in its own session; :meth:`BenchStack.stop` ends each by its process group id.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.sandbox.demo import demo_config
from tests.bench.peers import DAMSTRA_KEY, LITMOS_KEY, SKYPREP_KEY
from tests.bench.procstat import ProcTree
from tests.bench.toml_out import dumps
from tests.support.redis_server import RedisServer

ROLES = ("oidc", "saml", "skyprep", "damstra", "litmos")
CONNECTORS = ("skyprep", "damstra", "litmos")
ROOT = Path(__file__).resolve().parents[2]


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def app_names(connector: str, replicas: int) -> list[str]:
    """The apps of one connector: ``skyprep``, ``skyprep-r1``, ... (see :func:`bench_config`)."""
    return [connector] + [f"{connector}-r{i}" for i in range(1, replicas)]


def bench_config(
    urls: dict[str, str],
    metadata: str,
    *,
    store: dict[str, Any],
    replicas: int,
    calls_per_minute: int,
) -> dict[str, Any]:
    """The demo configuration with each app repeated ``replicas`` times.

    Why replicas: one app's LMS budget is capped at 10,000 calls/minute (settings.py), i.e.
    ~166 calls/s, below what a core can drive; several apps on one LMS tenant is a real
    deployment shape and keeps the real budget code on the path.
    """
    config = demo_config(
        gateway=urls["gateway"],
        oidc=urls["oidc"],
        saml_metadata_file=metadata,
        skyprep=urls["skyprep"],
        damstra=urls["damstra"],
        litmos=urls["litmos"],
        portal="http://127.0.0.1:9",
        store=store,
        calls_per_minute=calls_per_minute,
    )
    del config["gateway"]["log_format"]  # the production default (json), as `gateway serve`
    apps = config["app"]
    for connector in CONNECTORS:
        for name in app_names(connector, replicas)[1:]:
            apps[name] = json.loads(json.dumps(apps[connector]))
    return config


@dataclass
class BenchStack:
    """The running processes; build with :meth:`start`."""

    workers: int
    store: str
    urls: dict[str, str] = field(default_factory=dict)
    replicas: int = 4
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gw-bench-")))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis: RedisServer | None = None
    gateway_tree: ProcTree | None = None
    idp_overrides: dict[str, Any] = field(default_factory=dict)
    # Keys set on every app (e.g. ``{"reuse_links": "never"}``); a table value is merged
    # into the app's table (``{"budget": {"per_employee_calls_per_minute": 10000}}``).
    app_overrides: dict[str, Any] = field(default_factory=dict)
    # Gateway replicas: separate processes with the same config and store (Redis for > 1).
    # The first one's URL is the public URL; the others are ``gateway-2``, ``gateway-3``, ...
    gateways: int = 1

    def start(self, *, calls_per_minute: int = 10_000, plain: bool = False) -> None:
        try:
            self._start(calls_per_minute, plain)
        except BaseException:
            self.stop()
            raise

    def _spawn(
        self, name: str, args: list[str], sock: socket.socket, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, *args, "--fd", str(sock.fileno())],
            pass_fds=(sock.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def _start(self, calls_per_minute: int, plain: bool) -> None:
        others = [f"gateway-{i}" for i in range(2, self.gateways + 1)]
        socks = {name: _listen() for name in ("gateway", *others, *ROLES)}
        self.urls = {n: f"http://127.0.0.1:{s.getsockname()[1]}" for n, s in socks.items()}
        secret = secrets.token_urlsafe(24)
        env = {**os.environ, "DEMO_OIDC_SECRET": secret, "PYTHONPATH": str(ROOT)}
        metadata = self.workdir / "saml-idp.xml"
        for role in ROLES:
            extra = ["--metadata-out", str(metadata)] if role == "saml" else []
            self._spawn(
                role,
                [
                    "-m",
                    "tests.bench.peers",
                    "--role",
                    role,
                    "--url",
                    self.urls[role],
                    "--gateway",
                    self.urls["gateway"],
                    *extra,
                ],
                socks[role],
                env,
            )
        for role in ROLES:
            self._wait(role, f"{self.urls[role]}/_bench/stats")
        store: dict[str, Any] = {"backend": "memory"}
        if self.store == "redis":
            self.redis = RedisServer()
            self.redis.start()
            store = {
                "backend": "redis",
                "url": self.redis.url,
                "key_prefix": f"bench-{secrets.token_hex(4)}:",
            }
        config = bench_config(
            self.urls,
            str(metadata),
            store=store,
            replicas=self.replicas,
            calls_per_minute=calls_per_minute,
        )
        config["idp"]["demo-oidc"].update(self.idp_overrides)
        for app in config["app"].values():
            for key, value in self.app_overrides.items():
                app[key] = {**app.get(key, {}), **value} if isinstance(value, dict) else value
        path = self.workdir / "gateway.toml"
        path.write_text(dumps(config))
        gw_env = {
            **env,
            "GATEWAY_CONFIG": str(path),
            "GATEWAY_SIGNING_KEY": secrets.token_hex(32),
            "DEMO_SKYPREP_KEY": SKYPREP_KEY,
            "DEMO_DAMSTRA_KEY": DAMSTRA_KEY,
            "DEMO_LITMOS_KEY": LITMOS_KEY,
        }
        args = ["-m", "tests.bench.gateway_proc", "--workers", str(self.workers)]
        args += ["--plain"] if plain else []
        proc = self._spawn("gateway", args, socks["gateway"], gw_env)
        for name in others:
            self._spawn(name, args, socks[name], gw_env)
        for sock in socks.values():
            sock.close()
        for name in ("gateway", *others):
            self._wait(name, f"{self.urls[name]}/readyz", timeout=60)
        self.gateway_tree = ProcTree(proc.pid)
        if self.workers > 1:  # every worker must be up, not just the first to answer
            deadline = time.monotonic() + 60
            while len(self.gateway_tree.pids()) < self.workers + 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("gateway workers did not start")
                time.sleep(0.1)
            time.sleep(1.0)

    def _wait(self, name: str, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log_tail(name)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not become ready: {self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def peer_trees(self) -> dict[str, ProcTree]:
        return {role: ProcTree(self.procs[role].pid) for role in ROLES if role in self.procs}

    # -- peers' control API --------------------------------------------------------------

    def control(self, role: str, **params: float) -> None:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        request = urllib.request.Request(f"{self.urls[role]}/_bench/set?{query}", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stats(self, role: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.urls[role]}/_bench/stats", timeout=10) as a:
            result: dict[str, Any] = json.load(a)
            return result

    def set_latency(self, idp_ms: float, lms_ms: float) -> None:
        for role in ROLES:
            self.control(role, latency_ms=idp_ms if role in ("oidc", "saml") else lms_ms)

    def set_rate_limits(self, per_minute: int) -> None:
        for role in CONNECTORS:
            self.control(role, rate_limit=per_minute)

    # -- teardown ------------------------------------------------------------------------

    def gateway_failures(self, *, by_code: bool = False) -> dict[str, int]:
        """The gateway's "request failed" log lines (every replica's), counted by code and
        reason, or by code alone."""
        found: Counter[str] = Counter()
        for path in sorted(self.workdir.glob("gateway*.log")):
            with path.open(errors="replace") as lines:
                for line in lines:
                    if '"request failed"' not in line and "unhandled error" not in line:
                        continue
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    code = str(entry.get("code", "internal"))
                    found[code if by_code else f"{code}: {str(entry.get('reason', ''))[:90]}"] += 1
        return dict(found.most_common(12))

    def stop(self) -> None:
        for name in ["gateway", *[n for n in self.procs if n != "gateway"]]:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        if self.redis is not None:
            self.redis.close()
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)
