"""Two or more ``gateway serve`` processes sharing one real Redis, behind one public origin.

What :func:`replica_stack` starts, everything on 127.0.0.1:

* the demo OIDC and SAML IdPs and the three LMS simulators (SkyPrep, Damstra, Litmos) plus a
  fourth, separately rate-limited Damstra tenant (app ``burst``), each in a uvicorn thread of
  the test process, every simulator wrapped in a ``ResponseLog`` (``balancer.py``) that
  records when each call arrived and what it was answered;
* N replicas as real OS processes (``python -m gateway serve --config <toml>``), all with the
  same config: Redis store, one signing key, one ``public_url``;
* ``ReplicaProxy`` (``balancer.py``), a tiny load balancer in the test process at
  ``public_url``: it forwards each request to the replica named by the ``X-Replica`` header
  (``a``, ``b``...) or round-robin, so cookies, redirect URIs and the SAML Destination are
  those of one origin.

Teardown (also on failure): the replica processes are terminated (killed after 5 s), the
threads stopped and the temporary directory removed. The Redis server is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import html
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.sandbox._common import RateLimiter, Served, bind_port, serve_in_thread
from gateway.sandbox.damstra import DamstraSimulator
from gateway.sandbox.demo import (
    DAMSTRA_KEY,
    LITMOS_KEY,
    OIDC_CLIENT_ID,
    SKYPREP_KEY,
    demo_config,
)
from gateway.sandbox.employees import DEMO_SAML_EMAIL_DOMAIN
from gateway.sandbox.litmos import LitmosSimulator
from gateway.sandbox.oidc_idp import DemoClient, DemoOidcProvider
from gateway.sandbox.saml_idp import DemoSamlIdp
from gateway.sandbox.skyprep import SkyPrepSimulator
from tests.flows.agent import forms_of
from tests.flows.balancer import ReplicaProxy, ResponseLog
from tests.support.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]
BURST_KEY = "burst-damstra-access-key"


# -- TOML --------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of ASCII/BMP text is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"no TOML form for {type(value).__name__}")


def to_toml(data: Mapping[str, Any], path: tuple[str, ...] = ()) -> str:
    """TOML for the config dicts the tests build (tables, scalars, lists, inline secrets)."""
    scalars = {k: v for k, v in data.items() if not _is_table(v)}
    tables = {k: v for k, v in data.items() if _is_table(v)}
    lines = []
    if path and (scalars or not tables):
        lines.append("[" + ".".join(json.dumps(p) for p in path) + "]")
    lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in scalars.items()]
    out = "\n".join(lines) + ("\n\n" if lines else "")
    for key, table in tables.items():
        out += to_toml(table, (*path, key))
    return out


def _is_table(value: Any) -> bool:
    # {"env": NAME} / {"file": PATH} secrets stay inline; every other dict is a table.
    return isinstance(value, Mapping) and not set(value) <= {"env", "file"}


# -- the replicas ------------------------------------------------------------------------------


@dataclass
class Replica:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            # Its own session (start_new_session): signal its process group, by id.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


# ``[operator] token`` of every replica (Authorization: Bearer for /metrics, /readyz details).
OPERATOR_TOKEN = secrets.token_urlsafe(24)
OPERATOR_AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


@dataclass
class ReplicaStack:
    """Everything :func:`replica_stack` started (the test hooks)."""

    public_url: str
    oidc_url: str
    saml_url: str
    redis: RedisServer
    replicas: dict[str, Replica]
    proxy: ReplicaProxy
    skyprep: SkyPrepSimulator
    damstra: DamstraSimulator
    litmos: LitmosSimulator
    burst: DamstraSimulator
    answers: dict[str, ResponseLog]
    burst_limit: tuple[int, float]
    servers: list[Served] = field(default_factory=list)

    def sim(self, app: str) -> Any:
        """The simulator behind ``app`` (skyprep, damstra, litmos, burst)."""
        return getattr(self, app)

    def logs(self, *, full: bool = False) -> str:
        """Every replica's log (the tail only, for assertion messages, unless ``full``)."""
        size = 1 << 30 if full else 3000
        return "\n".join(
            f"--- replica {r.name}\n{r.log_tail(size)}" for r in self.replicas.values()
        )


def _wait_ready(replica: Replica, deadline: float) -> None:
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise RuntimeError(f"replica {replica.name} exited:\n{replica.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{replica.url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"replica {replica.name} not ready in time:\n{replica.log_tail()}")


@contextlib.contextmanager
def replica_stack(
    redis: RedisServer,
    names: tuple[str, ...] = ("a", "b"),
    *,
    burst_limit: tuple[int, float] = (100, 6.0),
    burst_budget: Mapping[str, Any] | None = None,
) -> Iterator[ReplicaStack]:
    """Start peers, ``names`` replicas and the proxy; stop and remove everything on exit.

    ``burst_limit`` is the ``burst`` Damstra tenant's (calls, window seconds) rate limit and
    ``burst_budget`` the ``[app.burst.budget]`` table of the gateway.
    """
    workdir = tempfile.TemporaryDirectory(prefix="gw-replicas-")
    servers: list[Served] = []
    replicas: dict[str, Replica] = {}
    socks: dict[str, socket.socket] = {}
    try:
        for n in ("public", "oidc", "saml", "sky", "dam", "lit", "burst"):
            socks[n] = bind_port()
        url = {n: f"http://127.0.0.1:{s.getsockname()[1]}" for n, s in socks.items()}
        public = url["public"]
        client_secret = secrets.token_urlsafe(24)
        oidc = DemoOidcProvider(
            url["oidc"],
            {
                OIDC_CLIENT_ID: DemoClient(
                    client_secret, (f"{public}/auth/demo-oidc/callback",), (f"{public}/signed-out",)
                )
            },
            demo_mode=True,
        )
        saml = DemoSamlIdp(
            f"{url['saml']}/metadata",
            url["saml"],
            f"{public}/auth/demo-saml/metadata",
            f"{public}/auth/demo-saml/acs",
            demo_mode=True,
            idp_initiated_relay_state="skyprep",
            email_domain=DEMO_SAML_EMAIL_DOMAIN,
        )
        metadata = Path(workdir.name) / "saml-idp.xml"
        metadata.write_bytes(saml.metadata)
        skyprep = SkyPrepSimulator(SKYPREP_KEY, "demo.skyprepapp.com", login_base_url=url["sky"])
        damstra = DamstraSimulator(DAMSTRA_KEY, login_base_url=url["dam"])
        litmos = LitmosSimulator(LITMOS_KEY, login_base_url=url["lit"])
        burst = DamstraSimulator(BURST_KEY, login_base_url=url["burst"])
        # Scaled time: the simulators' limiter takes any window; see the burst test.
        burst.limiter = RateLimiter(burst_limit[0], burst_limit[1])
        litmos.add_team("Safety team", "safety")
        answers = {n: ResponseLog(s.app) for n, s in
                   (("skyprep", skyprep), ("damstra", damstra), ("litmos", litmos),
                    ("burst", burst))}  # fmt: skip

        config = demo_config(
            gateway=public,
            oidc=url["oidc"],
            saml_metadata_file=str(metadata),
            skyprep=url["sky"],
            damstra=url["dam"],
            litmos=url["lit"],
            portal=public,
            store={"backend": "redis", "url": redis.url, "key_prefix": "gw-replicas:"},
            # Roomy for the functional tests (the simulators' own 100/min is never reached);
            # the budget under test is the burst app's.
            calls_per_minute=1000,
        )
        config["gateway"]["log_format"] = "json"
        # /metrics and detailed /readyz are for operators only: the tests present the token.
        config["operator"] = {"token": {"env": "GATEWAY_OPERATOR_TOKEN"}}
        # Every test browser reaches the replicas from 127.0.0.1 (one "office" address), and
        # the burst test has ~100 sign-ins in flight at once: lift the per-address limit.
        config["gateway"]["max_pending_logins_per_client"] = 10_000
        app = copy.deepcopy(config["app"]["damstra"])
        app["display_name"] = "Damstra Learning (burst tenant)"
        app["damstra"].update(
            access_key={"env": "BURST_DAMSTRA_KEY"},
            api_url=f"{url['burst']}/api/v2",
            login_host=url["burst"].split("//")[1],
        )
        app["budget"] = dict(burst_budget or {})
        # The burst is the four demo employees many times over: every sign-in must spend its
        # LMS call (no repeat-click link reuse) for the burst to test the shared bucket.
        app["reuse_links"] = "never"
        config["app"]["burst"] = app
        config_path = Path(workdir.name) / "gateway.toml"
        config_path.write_text(to_toml(config))
        env = {
            **os.environ,
            "GATEWAY_SIGNING_KEY": secrets.token_hex(32),
            "DEMO_OIDC_SECRET": client_secret,
            "DEMO_SKYPREP_KEY": SKYPREP_KEY,
            "DEMO_DAMSTRA_KEY": DAMSTRA_KEY,
            "DEMO_LITMOS_KEY": LITMOS_KEY,
            "BURST_DAMSTRA_KEY": BURST_KEY,
            "GATEWAY_OPERATOR_TOKEN": OPERATOR_TOKEN,
        }

        # Peers first: each replica fetches the IdP discovery when it starts.
        for app_, name in ((oidc.app, "oidc"), (saml.app, "saml"), (answers["skyprep"], "sky"),
                           (answers["damstra"], "dam"), (answers["litmos"], "lit"),
                           (answers["burst"], "burst")):  # fmt: skip
            servers.append(serve_in_thread(app_, socks[name]))
        for name in names:
            port = free_port()
            log_path = Path(workdir.name) / f"replica-{name}.log"
            with log_path.open("wb") as log_file:
                process = subprocess.Popen(
                    [sys.executable, "-m", "gateway", "serve", "--config", str(config_path),
                     "--host", "127.0.0.1", "--port", str(port)],
                    cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            replicas[name] = Replica(name, f"http://127.0.0.1:{port}", process, log_path)
        deadline = time.monotonic() + 30
        for replica in replicas.values():
            _wait_ready(replica, deadline)
        proxy = ReplicaProxy({n: r.url for n, r in replicas.items()})
        servers.append(serve_in_thread(proxy, socks["public"]))
        yield ReplicaStack(
            public, url["oidc"], url["saml"], redis, replicas, proxy,
            skyprep, damstra, litmos, burst, answers, burst_limit, servers,
        )  # fmt: skip
    finally:
        for replica in replicas.values():
            replica.stop()
        for served in reversed(servers):
            served.stop()
        for sock in socks.values():  # those no server took over (closing twice is harmless)
            sock.close()
        workdir.cleanup()


# -- browsers ----------------------------------------------------------------------------------


def browser(replica: str | None = None) -> httpx.AsyncClient:
    """A fresh browser (cookie jar); pinned to one replica through the proxy, or round-robin."""
    headers = {"X-Replica": replica} if replica else {}
    # One TLS context for all (everything here is plain http): building one per client
    # costs tens of milliseconds, which a burst of a hundred browsers would feel.
    return httpx.AsyncClient(timeout=60, headers=headers, verify=_tls_context())


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def pin(client: httpx.AsyncClient, replica: str | None) -> None:
    """Send ``client``'s next requests to ``replica`` (None: round-robin)."""
    if replica is None:
        client.headers.pop("X-Replica", None)
    else:
        client.headers["X-Replica"] = replica


_REFRESH = re.compile(
    r'<meta http-equiv="refresh" content="(\d+)(?:;\s*url=([^"]*))?"', re.IGNORECASE
)


def queue_refresh(page: httpx.Response) -> tuple[int, str] | None:
    """(seconds, URL) of the queue page's self-reload, or None when ``page`` is no queue page."""
    if "in the queue" not in page.text:
        return None
    match = _REFRESH.search(page.text)
    assert match, f"queue page without a refresh: {page.text[:400]}"
    target = html.unescape(match.group(2)) if match.group(2) else str(page.url)
    return int(match.group(1)), str(page.url.join(target))


async def up_to_callback(client: httpx.AsyncClient, start_url: str, sub: str) -> str:
    """Start an OIDC sign-in at ``start_url`` and pick ``sub`` at the demo IdP; return the
    gateway callback URL the IdP redirects to (not yet followed)."""
    page = await client.get(start_url, follow_redirects=True)
    (form,) = forms_of(page)
    answer = await client.post(form.action, data={**form.fields, "sub": sub})
    assert answer.status_code in (302, 303), answer.text[:400]
    return answer.headers["location"]


async def through_queue(
    client: httpx.AsyncClient, page: httpx.Response, *, patience: float = 40.0
) -> tuple[httpx.Response, int]:
    """While ``page`` is the queue page, wait as long as it says and load what it reloads,
    as a browser does. Returns the final page and how many times it queued."""
    queued = 0
    deadline = time.monotonic() + patience
    while (refresh := queue_refresh(page)) is not None:
        assert time.monotonic() < deadline, "still queued after the test's patience ran out"
        queued += 1
        seconds, url = refresh
        await asyncio.sleep(seconds)
        page = await client.get(url, follow_redirects=True)
    return page, queued
