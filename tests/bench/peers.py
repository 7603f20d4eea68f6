"""One benchmark peer per process: a demo IdP or an LMS simulator, with added latency and a
small control API, served by uvicorn on a listening socket inherited from the harness.

    python -m tests.bench.peers --role oidc|saml|skyprep|damstra|litmos --fd N --url URL
        --gateway GATEWAY_URL [--metadata-out PATH] [--extra-client ID=REDIRECT_URI ...]
        [--sp-entity-id ID --sp-acs URL]

Every request except ``/_bench/*`` first sleeps the configured latency (``asyncio.sleep``:
a slow upstream costs the gateway waiting time, not CPU). Control API (benchmark only):

* ``GET /_bench/stats``: ``{"calls": LMS API calls recorded by the simulator, "requests": n,
  "statuses": {"200": n, "429": n, ...}}``
* every answer carries ``x-bench-peer-us``: this peer's service time for it (from the ASGI
  call, added latency included, to the response start), read by ``gateway_proc.py``.
* ``POST /_bench/set?latency_ms=..&rate_limit=..``: change the added latency and the
  simulator's per-minute limit (the limiter's window is emptied).

The demo IdPs know five employees; the benchmark needs thousands of distinct ones (a first
sign-in is an employee the LMS has never seen), so this process extends the IdPs' directory
with synthetic employees ``bench-<n>`` (Staff, ``bench.<n>@example.com``). Only this process
is patched; the sandbox modules are unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import time
from collections import Counter
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.sandbox import oidc_idp, saml_idp
from gateway.sandbox._common import CallLog, RateLimiter
from gateway.sandbox.employees import DEMO_SAML_EMAIL_DOMAIN, DemoEmployee, find_employee

SKYPREP_KEY = "demo-skyprep-api-key"
DAMSTRA_KEY = "demo-damstra-access-key"
LITMOS_KEY = "demo-litmos-api-key"
OIDC_CLIENT_ID = "gateway-demo"
SKYPREP_ACCT = "demo.skyprepapp.com"
_SYNTHETIC = re.compile(r"bench-([0-9]{1,9})")


def bench_employee(sub: str) -> DemoEmployee | None:
    """A demo employee, or a synthetic ``bench-<n>`` one."""
    found = find_employee(sub)
    if found is not None:
        return found
    match = _SYNTHETIC.fullmatch(sub)
    if match is None:
        return None
    n = match.group(1)
    return DemoEmployee(
        sub=sub,
        email=f"bench.{n}@example.com",
        given_name="Bench",
        family_name=f"User{n}",
        employee_number=f"B{n}",
        groups=("Staff",),
    )


class Peer:
    """ASGI wrapper: added latency, status counting and the ``/_bench`` control API."""

    def __init__(self, app: ASGIApp, calls: CallLog | None, limiter: RateLimiter | None) -> None:
        self.app = app
        self.calls = calls
        self.limiter = limiter
        self.latency = 0.0
        self.requests = 0
        self.statuses: Counter[int] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith("/_bench/"):
            await self._control(scope, send)
            return
        self.requests += 1
        started = time.perf_counter()
        if self.latency > 0:
            await asyncio.sleep(self.latency)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.statuses[int(message["status"])] += 1
                # Service time (added latency included) for the gateway's instrumentation.
                spent = int((time.perf_counter() - started) * 1e6)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-bench-peer-us", b"%d" % spent),
                ]
            await send(message)

        await self.app(scope, receive, counting_send)

    async def _control(self, scope: Scope, send: Send) -> None:
        from urllib.parse import parse_qsl

        body: dict[str, Any]
        if scope["path"] == "/_bench/set" and scope["method"] == "POST":
            params = dict(parse_qsl(scope.get("query_string", b"").decode()))
            if "latency_ms" in params:
                self.latency = max(0.0, float(params["latency_ms"]) / 1000)
            if "rate_limit" in params and self.limiter is not None:
                self.limiter.limit = int(params["rate_limit"])
                self.limiter.reset()
            body = {"ok": True}
        else:
            body = {
                "calls": self.calls.count() if self.calls is not None else 0,
                "requests": self.requests,
                "statuses": {str(k): v for k, v in self.statuses.items()},
                "latency_ms": self.latency * 1000,
            }
        raw = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": raw})


def build(
    role: str,
    url: str,
    gateway: str,
    metadata_out: str | None,
    extra_clients: tuple[str, ...] = (),
    sp: tuple[str, str] | None = None,
) -> Peer:
    """The peer for ``role`` reachable at ``url``, trusting the gateway at ``gateway``.

    ``extra_clients`` (OIDC): more relying parties, ``client_id=redirect_uri``, with the same
    secret (the anchors benchmark registers Apache's mod_auth_openidc). ``sp`` (SAML): the
    ``(entity id, ACS URL)`` of the one SP to serve instead of the gateway (mod_auth_mellon).
    """
    if role == "oidc":
        oidc_idp.find_employee = bench_employee  # type: ignore[attr-defined]
        secret = os.environ["DEMO_OIDC_SECRET"]
        client = oidc_idp.DemoClient(
            secret,
            (f"{gateway}/auth/demo-oidc/callback",),
            (f"{gateway}/signed-out",),
        )
        clients = {OIDC_CLIENT_ID: client}
        for extra in extra_clients:
            client_id, _, redirect_uri = extra.partition("=")
            clients[client_id] = oidc_idp.DemoClient(secret, (redirect_uri,))
        provider = oidc_idp.DemoOidcProvider(url, clients, demo_mode=True)
        return Peer(provider.app, None, None)
    if role == "saml":
        saml_idp.find_employee = bench_employee  # type: ignore[attr-defined]
        sp_entity, sp_acs = sp or (
            f"{gateway}/auth/demo-saml/metadata",
            f"{gateway}/auth/demo-saml/acs",
        )
        idp = saml_idp.DemoSamlIdp(
            f"{url}/metadata",
            url,
            sp_entity,
            sp_acs,
            demo_mode=True,
            idp_initiated_relay_state="skyprep",
            email_domain=DEMO_SAML_EMAIL_DOMAIN,
        )
        if metadata_out:
            with open(metadata_out, "wb") as out:
                out.write(idp.metadata)
        return Peer(idp.app, None, None)
    if role == "skyprep":
        from gateway.sandbox.skyprep import SkyPrepSimulator

        sky = SkyPrepSimulator(SKYPREP_KEY, SKYPREP_ACCT, login_base_url=url)
        return Peer(sky.app, sky.calls, sky.limiter)
    if role == "damstra":
        from gateway.sandbox.damstra import DamstraSimulator

        dam = DamstraSimulator(DAMSTRA_KEY, login_base_url=url)
        return Peer(dam.app, dam.calls, dam.limiter)
    if role == "litmos":
        from gateway.sandbox.litmos import LitmosSimulator

        lit = LitmosSimulator(LITMOS_KEY, login_base_url=url)
        lit.add_course("Code of conduct")
        lit.add_team("Safety team", "safety")
        return Peer(lit.app, lit.calls, lit.limiter)
    raise SystemExit(f"unknown role {role!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--metadata-out")
    parser.add_argument("--extra-client", action="append", default=[])
    parser.add_argument("--sp-entity-id")
    parser.add_argument("--sp-acs")
    args = parser.parse_args()
    sock = socket.socket(fileno=args.fd)
    sp = (args.sp_entity_id, args.sp_acs) if args.sp_entity_id and args.sp_acs else None
    peer = build(
        args.role, args.url, args.gateway, args.metadata_out, tuple(args.extra_client), sp
    )
    config = uvicorn.Config(
        peer, log_level="warning", access_log=False, lifespan="off", backlog=4096
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
