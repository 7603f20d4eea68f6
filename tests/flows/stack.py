"""Serve a gateway built from a config dict on 127.0.0.1, next to an LMS simulator, for flow
tests against real IdPs (oidc-provider, SimpleSAMLphp)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from gateway.app import create_app
from gateway.config import parse_settings
from gateway.sandbox._common import Served, bind_port, serve_task
from gateway.sandbox.skyprep import SkyPrepSimulator

SKYPREP_KEY = "flow-skyprep-key"


@dataclass
class GatewayUnderTest:
    url: str
    skyprep: SkyPrepSimulator


@asynccontextmanager
async def gateway_with_skyprep(
    idp_config: Callable[[str], dict[str, dict[str, Any]]],
    *,
    app_overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[GatewayUnderTest]:
    """A gateway whose ``skyprep`` app lets every IdP in ``idp_config(gateway_url)`` in."""
    gateway_sock, skyprep_sock = bind_port(), bind_port()
    url = f"http://127.0.0.1:{gateway_sock.getsockname()[1]}"
    skyprep_url = f"http://127.0.0.1:{skyprep_sock.getsockname()[1]}"
    skyprep = SkyPrepSimulator(SKYPREP_KEY, "flow.skyprepapp.com", login_base_url=skyprep_url)
    idps = idp_config(url)
    config = {
        "gateway": {
            "public_url": url,
            "signing_key": {"env": "SIGNING_KEY"},
            "cookie_secure": False,
            "dev_mode": True,
        },
        "idp": idps,
        "app": {
            "skyprep": {
                "connector": "skyprep",
                "idps": list(idps),
                "group_map": {"staff": "Staff", "trainers": "Trainers", "Staff": "Staff"},
                "skyprep": {
                    "api_key": {"env": "SKYPREP_KEY"},
                    "acct_key": "flow.skyprepapp.com",
                    "api_url": f"{skyprep_url}/admin/api",
                    "login_host": skyprep_url.split("//")[1],
                },
                **(app_overrides or {}),
            }
        },
    }
    environ = {"SIGNING_KEY": secrets.token_hex(32), "SKYPREP_KEY": SKYPREP_KEY, **(env or {})}
    app = create_app(parse_settings(config, environ))
    servers: list[Served] = [await serve_task(skyprep.app, skyprep_sock)]
    try:
        servers.append(await serve_task(app, gateway_sock))
        yield GatewayUnderTest(url, skyprep)
    finally:
        for served in reversed(servers):
            await served.astop()
