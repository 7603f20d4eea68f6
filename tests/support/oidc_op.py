"""A real OpenID provider for tests: the npm ``oidc-provider`` package on 127.0.0.1.

Use the session-scoped ``oidc_op`` fixture (import it into a test module or list this module
in ``pytest_plugins``). It installs the pinned npm dependencies when ``node_modules`` is
missing (``npm ci``, from the committed package-lock.json), starts ``node server.js`` on a free
port, waits for discovery, yields an :class:`OidcOp`, and kills the process at teardown.

The registered client is a "native" client, so any port on a loopback redirect URI matches
(RFC 8252 section 7.3): a gateway under test may listen on any free port as long as its
callback is one of :data:`REDIRECT_PATHS` on http://127.0.0.1.

:func:`drive_login` signs an employee in with plain HTTP and returns the callback URL
(with ``code``, ``state`` and ``iss``) instead of following it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

OP_DIR = Path(__file__).parent / "oidc_provider"
EMPLOYEES: dict[str, dict[str, Any]] = json.loads((OP_DIR / "employees.json").read_text())
# Callback paths the client accepts (gateway IdP names used by tests: corp, oidc, op).
REDIRECT_PATHS = ("/auth/corp/callback", "/auth/oidc/callback", "/auth/op/callback", "/callback")
POST_LOGOUT_PATHS = ("/", "/logged-out")
SCOPES = ("openid", "email", "profile", "groups", "employee")


@dataclass(frozen=True)
class OidcOp:
    """A running provider: what a gateway's ``[idp.<name>]`` needs to use it."""

    issuer: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = SCOPES
    employees: dict[str, dict[str, Any]] = field(default_factory=lambda: EMPLOYEES)

    @staticmethod
    def redirect_uri(port: int, idp: str = "corp") -> str:
        return f"http://127.0.0.1:{port}/auth/{idp}/callback"

    async def drive_login(self, http: httpx.AsyncClient, authorize_url: str, username: str) -> str:
        return await drive_login(http, authorize_url, username)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _npm_install() -> None:
    if (OP_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: .ci/run must install Node.js 18+ and npm")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=OP_DIR, check=True,
                   stdout=subprocess.DEVNULL, timeout=300)


async def drive_login(http: httpx.AsyncClient, authorize_url: str, username: str) -> str:
    """Sign ``username`` in at the provider; return the callback URL it redirects to.

    Follows the provider's redirects by hand (so ``http`` may be any client; cookies of the
    provider stay in its jar), submits the login form, and stops at the first redirect that
    leaves the provider's origin.
    """
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorize_url))
    url, method, data = authorize_url, "GET", None
    for _ in range(12):
        response = await http.request(method, url, data=data, follow_redirects=False)
        if response.is_redirect:
            url = urljoin(url, response.headers["location"])
            method, data = "GET", None
            if not url.startswith(origin + "/"):
                return url
            continue
        form = re.search(r'<form method="post" action="([^"]+)"', response.text)
        if response.status_code != 200 or form is None:
            raise AssertionError(
                f"unexpected provider answer {response.status_code} at {url}: {response.text[:200]}"
            )
        url, method, data = urljoin(url, form.group(1)), "POST", {"username": username}
    raise AssertionError("too many redirects at the provider")


@pytest.fixture(scope="session")
def oidc_op() -> Iterator[OidcOp]:
    """Start the real provider for the test session; stop it afterwards."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: .ci/run must install Node.js 18+")
    _npm_install()
    port = free_port()
    op = OidcOp(issuer=f"http://127.0.0.1:{port}", client_id="gateway-test",
                client_secret=secrets.token_urlsafe(24))
    env = {
        **os.environ,
        "OP_PORT": str(port),
        "OP_CLIENT_ID": op.client_id,
        "OP_CLIENT_SECRET": op.client_secret,
        "OP_REDIRECT_URIS": ",".join(f"http://127.0.0.1{p}" for p in REDIRECT_PATHS),
        "OP_POST_LOGOUT_REDIRECT_URIS": ",".join(f"http://127.0.0.1{p}"
                                                 for p in POST_LOGOUT_PATHS),
    }
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen([node, "server.js"], cwd=OP_DIR, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_ready(op.issuer, process, output)
            yield op
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _wait_ready(issuer: str, process: subprocess.Popen[bytes], output: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output.seek(0)
            pytest.fail(f"oidc-provider exited: {output.read().decode(errors='replace')}")
        try:
            if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail("oidc-provider did not answer discovery within 30 s")
