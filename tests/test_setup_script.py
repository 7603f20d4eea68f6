"""What an operator relies on outside the package: the container health check follows the port
`gateway serve` really listens on, the pinned lxml/xmlsec pair shares one libxml2, and
scripts/setup.sh says clearly what it was asked to do wrong.

The fresh-machine run of scripts/test.sh itself is scripts/verify-fresh-debian.sh (debootstrap
+ chroot; needs root and minutes), not a test here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import ModuleType

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
HEALTHCHECK = ROOT / "scripts" / "healthcheck.py"

CONFIG = """\
[gateway]
public_url = "https://learn.example.com"
signing_key = { env = "GATEWAY_SIGNING_KEY" }

[idp.okta]
type = "oidc"
# Nothing listens here: the IdP stays unloaded, which must not make the process unhealthy.
issuer = "https://127.0.0.1:9"
client_id = "gateway"
client_secret = { env = "OKTA_CLIENT_SECRET" }

[app.academy]
connector = "skyprep"
idps = ["okta"]

[app.academy.skyprep]
api_key = { env = "SKYPREP_API_KEY" }
acct_key = "acme.skyprepapp.com"
"""
SECRETS = {
    "GATEWAY_SIGNING_KEY": "k" * 40,
    "OKTA_CLIENT_SECRET": "s",
    "SKYPREP_API_KEY": "a",
}


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gateway_healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_healthcheck(pid: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), str(pid)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`gateway serve` on a free port that is not 8000, as `docker run IMAGE serve --port N`."""
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config),
         "--host", "0.0.0.0", "--port", str(port)],
        env={**os.environ, **SECRETS}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "gateway serve exited"
            assert time.monotonic() < deadline, "gateway serve did not answer /healthz"
            time.sleep(0.1)
        yield process, port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_health_check_follows_the_port_serve_was_started_with(
    serving: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = serving
    result = run_healthcheck(process.pid)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == f"healthy: http://127.0.0.1:{port}/healthz answered 200"


def test_health_check_fails_when_the_gateway_hangs_or_stops(
    serving: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = serving
    # Hung: the kernel still accepts connections on the port, nobody answers.
    process.send_signal(signal.SIGSTOP)
    try:
        result = run_healthcheck(process.pid)
    finally:
        process.send_signal(signal.SIGCONT)
    assert result.returncode == 1
    assert result.stdout.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz unreachable")
    process.terminate()
    process.wait(timeout=10)
    gone = run_healthcheck(process.pid)
    assert gone.returncode == 1
    assert gone.stdout.strip() == "unhealthy: no `gateway serve` process found"


@pytest.mark.parametrize(
    ("args", "url"),
    [
        ([], "http://127.0.0.1:8000/healthz"),  # serve's defaults, as in the image's CMD
        (["--config", "/etc/gateway/gateway.toml", "--port=9443"], "http://127.0.0.1:9443/healthz"),
        (["--host", "::", "--port", "8080"], "http://[::1]:8080/healthz"),
        (["--host", "10.1.2.3", "--port", "8080"], "http://10.1.2.3:8080/healthz"),
        (["--tls-cert", "/run/secrets/cert.pem", "--port", "8443"], "https://127.0.0.1:8443/healthz"),
    ],
)
def test_health_check_url_from_serve_arguments(args: list[str], url: str) -> None:
    assert load_healthcheck().health_url(args) == url


def test_pinned_lxml_and_xmlsec_are_installed_and_share_one_libxml2() -> None:
    """scripts/setup.sh and the Dockerfile install with constraints/lxml-xmlsec.txt."""
    import lxml.etree
    import xmlsec

    pins = dict(
        re.findall(r"^([\w-]+)==([\w.]+)$", (ROOT / "constraints" / "lxml-xmlsec.txt").read_text(),
                   re.MULTILINE)
    )  # fmt: skip
    assert set(pins) == {"lxml", "xmlsec"}
    assert {name: metadata.version(name) for name in pins} == pins
    assert xmlsec.get_libxml_version() == lxml.etree.LIBXML_VERSION


def test_setup_script_refuses_an_unknown_argument() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "setup.sh"), "--tests"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "unknown argument '--tests' (usage: scripts/setup.sh [--test])" in result.stderr
    assert result.stdout == ""
