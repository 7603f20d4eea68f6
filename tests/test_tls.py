"""Outgoing TLS trust (ca_file, ca_mode, SSL_CERT_FILE), per-IdP timeouts, and
``gateway serve --tls-cert/--tls-key``; against real HTTPS servers on 127.0.0.1 whose
certificates come from a private test CA."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import tomli_w
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.app import build_services
from gateway.config import parse_settings
from gateway.connectors._http import build_client
from gateway.errors import ConfigError
from gateway.sandbox._common import Served, bind_port, serve_in_thread, serve_task
from gateway.sandbox.skyprep import SkyPrepSimulator
from gateway.settings import HttpSettings
from gateway.tls import ClientContexts
from tests.flows.stack import gateway_with_skyprep
from tests.support.test_ca import CaFiles

ENV = {"SIGNING_KEY": "k" * 40, "SKYPREP_KEY": "skyprep-key"}


def config(skyprep_api: str = "https://api.skyprep.io/admin/api") -> dict[str, Any]:
    return {
        "gateway": {
            "public_url": "https://learn.example.com",
            "signing_key": {"env": "SIGNING_KEY"},
        },
        "idp": {"corp": {"type": "oidc", "issuer": "https://idp.example.com", "client_id": "c"}},
        "app": {
            "training": {
                "connector": "skyprep",
                "idps": ["corp"],
                "skyprep": {
                    "api_key": {"env": "SKYPREP_KEY"},
                    "acct_key": "acme.skyprepapp.com",
                    "api_url": skyprep_api,
                },
            }
        },
    }


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, ENV)
    return info.value.problems


@pytest.fixture(scope="module")
def tls_skyprep(private_ca: CaFiles) -> Iterator[Served]:
    """A SkyPrep simulator serving HTTPS with a certificate from the private CA."""
    sim = SkyPrepSimulator(ENV["SKYPREP_KEY"], "acme.skyprepapp.com")
    served = serve_in_thread(sim.app, tls=private_ca.server)
    yield served
    served.stop()


# ---------------------------------------------------------------------------------------
# check-config: the files named are checked, with every other problem


def test_ca_files_are_checked_with_every_other_problem(tmp_path: Path, private_ca: CaFiles) -> None:
    not_pem = tmp_path / "ca.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a binary DER")
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    data = config()
    data["gateway"]["ca_file"] = str(tmp_path / "missing.pem")
    # An unrelated problem, reported together with them.
    data["portal"] = {"intranet": {"token_sha256": "0" * 64, "apps": ["nope"]}}
    data["idp"]["corp"]["ca_file"] = str(not_pem)
    data["app"]["training"]["skyprep"]["http"] = {"ca_file": str(broken)}
    data["store"] = {"tls_ca_file": private_ca.key_file}  # a key, not a certificate
    problems = problems_of(data)
    text = "\n".join(problems)
    assert f"gateway.ca_file: no such file {str(tmp_path / 'missing.pem')!r}" in problems
    assert "idp.corp.ca_file:" in text and "is not a PEM certificate bundle" in text
    assert "app.training.skyprep.http.ca_file:" in text and "not a valid certificate" in text
    assert "store.tls_ca_file:" in text
    assert "portal.intranet.apps: unknown app 'nope'" in problems


def test_a_valid_bundle_passes_and_replace_needs_a_file(private_ca: CaFiles) -> None:
    data = config()
    data["gateway"].update(ca_file=private_ca.ca_file, ca_mode="replace")
    data["idp"]["corp"].update(ca_mode="add", connect_timeout=2, read_timeout=30)
    settings = parse_settings(data, ENV)
    assert settings.idp["corp"].read_timeout == 30
    bare = config()
    bare["gateway"]["ca_mode"] = "replace"
    problems = problems_of(bare)
    assert any(p.startswith("gateway.ca_mode: 'replace' needs a ca_file") for p in problems)


@pytest.mark.parametrize(
    ("key", "value"),
    [("connect_timeout", 0), ("connect_timeout", 31), ("read_timeout", -1), ("read_timeout", 61)],
)
def test_idp_timeouts_have_sane_ranges(key: str, value: float) -> None:
    data = config()
    data["idp"]["corp"][key] = value
    assert any(p.startswith(f"idp.corp.{key}:") for p in problems_of(data))


def test_idp_timeouts_default_to_5_and_10_seconds() -> None:
    idp = parse_settings(config(), ENV).idp["corp"]
    assert (idp.connect_timeout, idp.read_timeout) == (5.0, 10.0)


# ---------------------------------------------------------------------------------------
# Trust: public bundle, add, replace; contexts shared


async def _get(context: ssl.SSLContext, url: str) -> httpx.Response:
    async with build_client(HttpSettings(), verify=context) as client:
        return await client.get(url)


async def test_private_ca_trusted_only_through_ca_file(
    private_ca: CaFiles, tls_skyprep: Served
) -> None:
    contexts = ClientContexts(environ={})
    url = f"{tls_skyprep.url}/"
    with pytest.raises(httpx.ConnectError, match="TLS certificate not trusted"):
        await _get(contexts.get(), url)  # the public bundle alone
    for mode in ("add", "replace"):
        answer = await _get(contexts.get(private_ca.ca_file, mode), url)  # type: ignore[arg-type]
        assert answer.status_code < 500
    # "replace" trusts the one CA only; "add" keeps the public bundle next to it.
    assert contexts.get(private_ca.ca_file, "replace").cert_store_stats()["x509_ca"] == 1
    assert contexts.get(private_ca.ca_file, "add").cert_store_stats()["x509_ca"] > 50


def test_each_distinct_context_is_built_once(private_ca: CaFiles, tmp_path: Path) -> None:
    contexts = ClientContexts(environ={})
    link = tmp_path / "same-ca.pem"
    link.symlink_to(private_ca.ca_file)
    first = contexts.get(private_ca.ca_file)
    assert contexts.get(str(link)) is first  # the same file by another name
    assert contexts.get(private_ca.ca_file, "replace") is not first
    assert contexts.get() is contexts.get(None, "replace")  # nothing to replace with
    assert len(contexts) == 3


def test_idps_and_apps_share_contexts_and_pools_but_keep_their_timeouts(
    private_ca: CaFiles,
) -> None:
    data = config()
    data["gateway"]["ca_file"] = private_ca.ca_file
    data["idp"]["corp"].update(read_timeout=3)
    data["idp"]["partner"] = {
        "type": "oidc", "issuer": "https://partner.example.net", "client_id": "c",
        "read_timeout": 25, "connect_timeout": 1,
    }  # fmt: skip
    data["app"]["training"]["idps"] = ["corp", "partner"]
    data["idp"]["corp"]["email_domains"] = ["corp.example.com"]
    data["idp"]["partner"]["email_domains"] = ["partner.example.net"]
    services = build_services(parse_settings(data, ENV))
    corp, partner, lms = services.clients
    assert corp._transport is partner._transport  # one pool for IdPs trusting the same CAs
    assert (corp.timeout.read, partner.timeout.read, partner.timeout.connect) == (3, 25, 1)
    assert lms._transport._ssl is corp._transport._ssl  # type: ignore[attr-defined]


def test_ssl_cert_file_and_dir_are_honoured_by_check_connectors(
    private_ca: CaFiles, tls_skyprep: Served, tmp_path: Path
) -> None:
    """What an admin does: point SSL_CERT_FILE (or SSL_CERT_DIR) at a bundle with the
    company CA, then run ``gateway check-connectors``; no ca_file in the config."""
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(config(f"{tls_skyprep.url}/admin/api")))
    hashed = tmp_path / "certs"
    hashed.mkdir()
    shutil.copy(private_ca.ca_file, hashed / "company-ca.pem")
    subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT_")} | ENV

    def check(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "check-connectors", "--config", str(path)],
            env=base | extra, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    untrusted = check()
    assert untrusted.returncode == 1 and "FAILED" in untrusted.stdout
    for trusted in (check(SSL_CERT_FILE=private_ca.ca_file), check(SSL_CERT_DIR=str(hashed))):
        assert trusted.returncode == 0, trusted.stdout + trusted.stderr
        assert "app training (skyprep): OK" in trusted.stdout


# ---------------------------------------------------------------------------------------
# Per-IdP timeouts: a hanging IdP is given up on after its own read_timeout


@pytest.fixture
async def slow_idp() -> AsyncIterator[str]:
    """An OpenID Provider (fake: this is about timing) whose discovery and JWKS answer at
    once and whose token endpoint never answers: an IdP that hangs mid sign-in."""
    release = asyncio.Event()
    sock = bind_port()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def discovery(request: Request) -> JSONResponse:
        issuer = f"{base}/{request.path_params['idp']}"
        return JSONResponse({
            "issuer": issuer, "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token", "jwks_uri": f"{issuer}/jwks",
        })  # fmt: skip

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse({"keys": []})

    async def token(request: Request) -> JSONResponse:
        await release.wait()
        return JSONResponse({"error": "too late"}, status_code=500)

    served = await serve_task(Starlette(routes=[
        Route("/{idp}/.well-known/openid-configuration", discovery),
        Route("/{idp}/jwks", jwks),
        Route("/{idp}/token", token, methods=["POST"]),
    ]), sock)  # fmt: skip
    try:
        yield base
    finally:
        release.set()
        await served.astop()


async def test_hanging_idp_answered_within_its_own_read_timeout(slow_idp: str) -> None:
    """Two IdPs, one pool, different read timeouts: each sign-in's wait for the hanging
    token endpoint ends with the IdP-unavailable page after that IdP's own read_timeout."""

    def idps(gateway_url: str) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "type": "oidc", "issuer": f"{slow_idp}/{name}", "client_id": "c",
                "email_domains": [f"{name}.example.com"], "read_timeout": timeout,
            }
            for name, timeout in (("quick", 0.5), ("patient", 2.0))
        }  # fmt: skip

    async with (
        gateway_with_skyprep(idps, app_overrides={"group_idps": ["quick", "patient"]}) as gateway,
        httpx.AsyncClient(timeout=30) as browser,
    ):
        for name, low, high in (("quick", 0.45, 1.5), ("patient", 1.95, 3.5)):
            to_idp = await browser.get(f"{gateway.url}/login/skyprep?idp={name}")
            assert to_idp.status_code in (302, 303), to_idp.text[:300]
            query = parse_qs(urlsplit(to_idp.headers["location"]).query)
            callback = f"{gateway.url}/auth/{name}/callback"
            started = time.monotonic()
            page = await browser.get(callback, params={"code": "c", "state": query["state"][0]})
            elapsed = time.monotonic() - started
            assert page.status_code == 503, page.text[:300]
            assert "reference" in page.text
            assert low <= elapsed <= high, (name, elapsed)


# ---------------------------------------------------------------------------------------
# gateway serve --tls-cert/--tls-key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(args: list[str], config_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_path),
         "--host", "127.0.0.1", *args],
        env=os.environ | ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_serve_refuses_bad_tls_files_in_one_line(private_ca: CaFiles, tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(config()))
    stranger = tmp_path / "other"
    from tests.support.test_ca import make_ca

    other = make_ca(stranger)
    cases = [
        (["--tls-cert", private_ca.cert_file], "--tls-key"),
        (["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", private_ca.key_file], "nope.pem"),
        (["--tls-cert", private_ca.cert_file, "--tls-key", other.key_file], "not the private key"),
    ]
    for args, expected in cases:
        process = _serve([*args, "--port", str(_free_port())], path)
        _, err = process.communicate(timeout=60)
        assert process.returncode != 0
        assert expected in err, err
        assert "Traceback" not in err


def test_serve_speaks_tls_1_2_or_later_only(private_ca: CaFiles, tmp_path: Path) -> None:
    port, operator_port = _free_port(), _free_port()
    data = config()
    data["idp"]["corp"]["issuer"] = "https://127.0.0.1:9"  # nothing there: refused at once
    data["operator"] = {"port": operator_port}
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(data))
    process = _serve(
        ["--port", str(port), "--tls-cert", private_ca.cert_file, "--tls-key", private_ca.key_file],
        path,
    )
    try:
        trust = ssl.create_default_context(cafile=private_ca.ca_file)
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trust)
                break
            except httpx.ConnectError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert answer.status_code == 200 and answer.text == "ok"
        assert answer.headers["strict-transport-security"].startswith("max-age=")
        # A client that speaks TLS 1.1 at most (this OpenSSL can, at security level 0):
        # the gateway must refuse the handshake.
        old = ssl.create_default_context(cafile=private_ca.ca_file)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=old)
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets nothing
            httpx.get(f"http://127.0.0.1:{port}/healthz")
        # The operator listener stays plain HTTP on its own port (never published).
        ready = httpx.get(f"http://127.0.0.1:{operator_port}/readyz")
        assert ready.status_code == 503 and "corp" in ready.text
    finally:
        process.terminate()
        process.communicate(timeout=30)
