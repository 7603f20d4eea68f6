"""``gateway demo``: the gateway plus demo IdPs and LMS simulators, all on 127.0.0.1.

:func:`start_demo` is also what the end-to-end tests, the browser test and the benchmarks
use, so the demo a newcomer clicks through is the one CI checks.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import secrets
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from gateway.config import load_settings
from gateway.sandbox._common import Served, ServerTls, bind_port, serve_task
from gateway.sandbox.damstra import DamstraSimulator
from gateway.sandbox.demo_files import DemoFiles, write_demo_files
from gateway.sandbox.employees import (
    DEMO_ALLOWED_GROUPS,
    DEMO_EMAIL_DOMAIN,
    DEMO_SAML_EMAIL_DOMAIN,
)
from gateway.sandbox.litmos import LitmosSimulator
from gateway.sandbox.oidc_idp import DemoClient, DemoOidcProvider
from gateway.sandbox.saml_idp import DemoSamlIdp
from gateway.sandbox.skyprep import SkyPrepSimulator
from gateway.settings import Settings

# Demo-only credentials: the simulators accept exactly these.
SKYPREP_KEY = "demo-skyprep-api-key"
DAMSTRA_KEY = "demo-damstra-access-key"
LITMOS_KEY = "demo-litmos-api-key"
OIDC_CLIENT_ID = "gateway-demo"
PORTAL_TOKEN = "demo-portal-token"
# Demo-only SCIM bearer credentials, one per demo IdP (config holds their hashes).
SCIM_TOKENS = {"demo-oidc": "demo-scim-token-oidc", "demo-saml": "demo-scim-token-saml"}
SCIM_APPS = ("skyprep", "damstra", "litmos")


@dataclass
class DemoStack:
    """Everything :func:`start_demo` started; ``stop()`` ends it all."""

    gateway_url: str
    oidc_url: str
    saml_url: str
    portal_url: str
    skyprep: SkyPrepSimulator
    damstra: DamstraSimulator
    litmos: LitmosSimulator
    settings: Settings
    gateway_app: Starlette
    servers: list[Served] = field(default_factory=list)
    workdir: tempfile.TemporaryDirectory[str] | None = None
    # The operator listener: /metrics and detailed /readyz (not on the public gateway URL).
    operator_url: str = ""
    # The configuration file the gateway was loaded from, and its secrets' .env beside it.
    files: DemoFiles | None = None
    # Bob Brown's "Site safety induction" lesson schedule (the portal examples use it).
    lesson_schedule_id: int = 0

    async def stop(self) -> None:
        # The gateway (started last) first, so its LMS/IdP connections close; then the rest
        # together (each uvicorn shutdown takes a few of its 0.1 s ticks).
        if self.servers:
            await self.servers[-1].astop()
            await asyncio.gather(*(served.astop() for served in self.servers[:-1]))
        if self.workdir is not None:
            self.workdir.cleanup()


class PortInUse(OSError):
    """A port the demo needs is taken (``gateway demo`` turns this into one line)."""

    def __init__(self, port: int, first: int, last: int) -> None:
        super().__init__(errno.EADDRINUSE, f"port {port} is in use")
        self.port, self.first, self.last = port, first, last


def _bind(port: int) -> socket.socket:
    if port == 0:
        return bind_port()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    sock.listen(1024)
    return sock


def _bind_all(port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on ``port`` and the following ports (0: any free ports)."""
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            try:
                socks.append(_bind(port + i if port else 0))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise PortInUse(port + i, port, port + count - 1) from None
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def demo_config(
    *,
    gateway: str,
    oidc: str,
    saml_metadata_file: str,
    skyprep: str,
    damstra: str,
    litmos: str,
    portal: str,
    store: dict[str, Any] | None = None,
    calls_per_minute: int = 100,
) -> dict[str, Any]:
    """The demo's configuration as TOML-shaped data (validated like any file).

    Trust model: each demo IdP vouches only for its own e-mail domain (the OpenID Provider
    for the company's, the SAML IdP for the subsidiary's), both are trusted for groups, and
    only the company's IdP may grant the Litmos role above the default.
    """
    idps = ["demo-oidc", "demo-saml"]
    rules = {
        "allowed_email_domains": [DEMO_EMAIL_DOMAIN, DEMO_SAML_EMAIL_DOMAIN],
        "required_groups": list(DEMO_ALLOWED_GROUPS),
        "group_idps": idps,
        # The IdPs provision these apps over SCIM: a sign-in must not undo a deactivation.
        "reactivate": False,
    }
    budget = {"calls_per_minute": calls_per_minute, "max_wait_seconds": 5.0}
    return {
        "gateway": {
            "public_url": gateway,
            "signing_key": {"env": "GATEWAY_SIGNING_KEY"},
            "cookie_secure": False,
            "dev_mode": True,
            "log_format": "text",
        },
        "store": store or {"backend": "memory"},
        "idp": {
            "demo-oidc": {
                "type": "oidc",
                "issuer": oidc,
                "client_id": OIDC_CLIENT_ID,
                "client_secret": {"env": "DEMO_OIDC_SECRET"},
                "display_name": "Demo company (OpenID Connect)",
                "claims": {"employee_number": "employee_number"},
                "email_domains": [DEMO_EMAIL_DOMAIN],
                "end_session": True,
                "scim": _scim("demo-oidc"),
            },
            "demo-saml": {
                "type": "saml",
                "sp_entity_id": f"{gateway}/auth/demo-saml/metadata",
                "display_name": "Demo company (SAML)",
                "metadata_file": saml_metadata_file,
                "email_domains": [DEMO_SAML_EMAIL_DOMAIN],
                "allow_idp_initiated": True,
                "scim": _scim("demo-saml"),
                "default_app": "skyprep",
            },
        },
        "app": {
            "skyprep": {
                "connector": "skyprep",
                "idps": idps,
                "display_name": "SkyPrep (demo)",
                "group_map": {
                    "Staff": "All staff",
                    "Safety": "Safety team",
                    "Managers": "Managers",
                },
                "budget": budget,
                **rules,
                "skyprep": {
                    "api_key": {"env": "DEMO_SKYPREP_KEY"},
                    "acct_key": "demo.skyprepapp.com",
                    "api_url": f"{skyprep}/admin/api",
                    "login_host": skyprep.split("//")[1],
                },
            },
            "damstra": {
                "connector": "damstra",
                "idps": idps,
                "display_name": "Damstra Learning (demo)",
                "budget": budget,
                "update_on_login": True,
                **rules,
                "damstra": {
                    "access_key": {"env": "DEMO_DAMSTRA_KEY"},
                    "api_url": f"{damstra}/api/v2",
                    "login_host": damstra.split("//")[1],
                },
            },
            "litmos": {
                "connector": "litmos",
                "idps": idps,
                "display_name": "Litmos (demo)",
                "budget": budget,
                "role_map": {"Managers": "Team_Leader"},
                "role_idps": ["demo-oidc"],
                "group_map": {"Safety": "safety"},
                **rules,
                "litmos": {
                    "api_key": {"env": "DEMO_LITMOS_KEY"},
                    "api_url": f"{litmos}/v1.svc",
                    "login_host": litmos.split("//")[1],
                    "source": "gateway-demo",
                },
            },
        },
        "portal": {
            "demo-portal": {
                "token_sha256": hashlib.sha256(PORTAL_TOKEN.encode()).hexdigest(),
                "apps": ["damstra"],
                "origins": [portal],
            }
        },
    }


def _scim(idp: str) -> dict[str, Any]:
    token_hash = hashlib.sha256(SCIM_TOKENS[idp].encode()).hexdigest()
    return {"token_hashes": [f"sha256:{token_hash}"], "apps": list(SCIM_APPS)}


def _portal_app(gateway: str, lesson_schedule_id: int) -> Starlette:
    """A stand-in company intranet page that embeds a lesson player in an iframe."""
    frame = f"{gateway}/embed/damstra/lesson-schedules/{lesson_schedule_id}"

    async def page(_: object) -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>Intranet</title></head>"
            "<body style='font-family:system-ui;margin:2rem'><h1>Acme intranet</h1>"
            "<p>Your safety induction (demo employee Bob Brown):</p>"
            f"<iframe src='{frame}' width=800 height=450 title='Lesson player'"
            " style='border:1px solid #ccc'></iframe></body></html>"
        )

    return Starlette(routes=[Route("/", page)])


async def start_demo(
    port: int = 0,
    *,
    store: dict[str, Any] | None = None,
    calls_per_minute: int = 100,
    environ: dict[str, str] | None = None,
    saml_email_domain: str = DEMO_SAML_EMAIL_DOMAIN,
    config_path: str | None = None,
    tls: ServerTls | None = None,
    ca_file: str | None = None,
) -> DemoStack:
    """Start the whole demo on 127.0.0.1: the gateway on ``port`` (0 = any free port), the
    other servers on the following ports (or free ports).

    With ``tls`` (tests): production settings. Every server but the operator listener
    serves HTTPS with that certificate, the gateway trusts ``ca_file`` (its issuer) through
    ``[gateway] ca_file`` only, ``dev_mode`` is off and cookies are ``Secure``/``__Host-``.

    The configuration is written as TOML (``config_path``, default ``gateway-demo.toml`` in
    the demo's temporary directory; secrets in a ``.env`` beside it) and the gateway loads
    that file, so what an admin reads there is what runs.

    ``saml_email_domain`` is the domain the demo SAML IdP issues addresses in; the config
    always makes it authoritative for :data:`DEMO_SAML_EMAIL_DOMAIN` only, so tests can turn
    it into an IdP asserting another IdP's people."""
    # The sandbox imports the gateway, never the reverse.
    from gateway.app import create_app, create_operator_app

    socks = _bind_all(port, 8)
    # The operator listener (last) stays plain HTTP: it is never published.
    schemes = ["https" if tls else "http"] * 7 + ["http"]
    urls = [
        f"{scheme}://127.0.0.1:{s.getsockname()[1]}"
        for scheme, s in zip(schemes, socks, strict=True)
    ]
    gateway, oidc, saml, skyprep_url, damstra_url, litmos_url, portal, operator = urls
    # The portal page is on another site than the gateway (localhost vs 127.0.0.1), as an
    # intranet is: its lesson frame then shows the real cross-site sign-in (popup + frame
    # credential), which a same-site demo would skip.
    portal = portal.replace("://127.0.0.1:", "://localhost:", 1)
    workdir = tempfile.TemporaryDirectory(prefix="gateway-demo-")
    client_secret = secrets.token_urlsafe(24)

    oidc_idp = DemoOidcProvider(
        oidc,
        {
            OIDC_CLIENT_ID: DemoClient(
                client_secret, (f"{gateway}/auth/demo-oidc/callback",), (f"{gateway}/signed-out",)
            )
        },
        demo_mode=True,
    )
    saml_idp = DemoSamlIdp(
        f"{saml}/metadata",
        saml,
        f"{gateway}/auth/demo-saml/metadata",
        f"{gateway}/auth/demo-saml/acs",
        demo_mode=True,
        idp_initiated_relay_state="skyprep",
        email_domain=saml_email_domain,
    )
    files = DemoFiles.at(config_path or Path(workdir.name) / "gateway-demo.toml")
    skyprep = SkyPrepSimulator(SKYPREP_KEY, "demo.skyprepapp.com", login_base_url=skyprep_url)
    damstra = DamstraSimulator(DAMSTRA_KEY, login_base_url=damstra_url)
    litmos = LitmosSimulator(LITMOS_KEY, login_base_url=litmos_url)
    bob = damstra.add_user("Bob", "Brown", "bob.brown@example.com", employee_number="1002")
    induction = damstra.assign_lesson(bob, "Site safety induction")
    damstra.assign_lesson(bob, "Working at heights")
    litmos.add_course("Code of conduct")
    litmos.add_team("Safety team", "safety")

    # Every secret the configuration references; also written to the .env file.
    demo_secrets = {
        "GATEWAY_SIGNING_KEY": secrets.token_hex(32),
        "DEMO_OIDC_SECRET": client_secret,
        "DEMO_SKYPREP_KEY": SKYPREP_KEY,
        "DEMO_DAMSTRA_KEY": DAMSTRA_KEY,
        "DEMO_LITMOS_KEY": LITMOS_KEY,
    }
    env = {**(environ or os.environ), **demo_secrets}
    config = demo_config(
        gateway=gateway,
        oidc=oidc,
        saml_metadata_file=str(files.saml_metadata),
        skyprep=skyprep_url,
        damstra=damstra_url,
        litmos=litmos_url,
        portal=portal,
        store=store,
        calls_per_minute=calls_per_minute,
    )
    if tls is not None:
        config["gateway"].update(dev_mode=False, cookie_secure=True, ca_file=ca_file)
    write_demo_files(files, config, demo_secrets, saml_idp.metadata)
    settings = load_settings(str(files.config), env)
    gateway_app = create_app(settings)
    stack = DemoStack(
        gateway,
        oidc,
        saml,
        portal,
        skyprep,
        damstra,
        litmos,
        settings,
        gateway_app,
        workdir=workdir,
        operator_url=operator,
        files=files,
        lesson_schedule_id=induction,
    )
    try:
        # IdPs and LMSs first: the gateway fetches discovery when it starts.
        for app, sock in (
            (oidc_idp.app, socks[1]),
            (saml_idp.app, socks[2]),
            (skyprep.app, socks[3]),
            (damstra.app, socks[4]),
            (litmos.app, socks[5]),
            (_portal_app(gateway, induction), socks[6]),
            (create_operator_app(gateway_app), socks[7]),
            (gateway_app, socks[0]),
        ):
            https = tls if sock is not socks[7] else None
            stack.servers.append(await serve_task(app, sock, tls=https))
    except BaseException:
        await stack.stop()
        raise
    return stack
