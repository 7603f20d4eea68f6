"""The main flows with production settings: HTTPS everywhere with a private CA.

The demo IdPs (OIDC and SAML), the three LMS simulators and the gateway itself serve TLS with
certificates from a test CA (``tests/support/test_ca.py``); the gateway trusts that CA only
through ``[gateway] ca_file`` (SSL_CERT_FILE/SSL_CERT_DIR removed from its environment, and a
gateway given another CA's file fails), ``dev_mode`` is off and cookies are ``Secure`` with the
``__Host-`` prefix. The operator listener stays plain HTTP on its own port.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from gateway.sandbox.demo import DemoStack, start_demo
from tests.flows.agent import forms_of, sign_in
from tests.flows.test_browser import CHROMEDRIVER, CHROMIUM, click_through, in_thread
from tests.flows.test_sign_out import _sign_out_in_chromium
from tests.support.test_ca import CaFiles

ALICE = "emp-1001"  # Staff, Managers
BOB = "emp-1002"  # Staff, Safety
SESSION_COOKIE = "__Host-gw_session"


@pytest.fixture
def no_env_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CA must be trusted through ca_file, never through the environment."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
async def secure_demo(private_ca: CaFiles, no_env_trust: None) -> AsyncIterator[DemoStack]:
    stack = await start_demo(0, tls=private_ca.server, ca_file=private_ca.ca_file)
    try:
        yield stack
    finally:
        await stack.stop()


@pytest.fixture
async def tls_browser(private_ca: CaFiles) -> AsyncIterator[httpx.AsyncClient]:
    """A scripted browser that trusts the test CA (as a company's managed browsers would)."""
    trust = ssl.create_default_context(cafile=private_ca.ca_file)
    async with httpx.AsyncClient(verify=trust, timeout=20) as client:
        yield client


def _lms_url(demo: DemoStack, app: str) -> str:
    sim = getattr(demo, app)
    return str(sim.login_base_url)


def _session_cookie_header(response: httpx.Response) -> str:
    for hop in (*response.history, response):
        for name, value in hop.headers.multi_items():
            if name == "set-cookie" and value.startswith(f"{SESSION_COOKIE}="):
                return value
    raise AssertionError("no session cookie was set")


async def test_production_settings_are_what_the_gateway_runs_with(
    secure_demo: DemoStack, private_ca: CaFiles
) -> None:
    gw = secure_demo.settings.gateway
    assert gw.dev_mode is False and gw.cookie_secure is True
    assert gw.ca_file == private_ca.ca_file
    for url in (secure_demo.gateway_url, secure_demo.oidc_url, secure_demo.saml_url,
                secure_demo.skyprep.login_base_url, secure_demo.damstra.login_base_url,
                secure_demo.litmos.login_base_url):  # fmt: skip
        assert url.startswith("https://"), url
    # A client without the CA refuses every one of them, so only ca_file can be trusting it.
    async with httpx.AsyncClient() as stranger:
        with pytest.raises(httpx.ConnectError):
            await stranger.get(f"{secure_demo.gateway_url}/healthz")


@pytest.mark.parametrize(("idp", "person", "name"), [
    ("demo-oidc", ALICE, "Alice Anderson"),
    ("demo-saml", BOB, "Bob Brown"),
])  # fmt: skip
async def test_sign_in_to_every_lms_and_sign_out_over_https(
    secure_demo: DemoStack, tls_browser: httpx.AsyncClient, idp: str, person: str, name: str
) -> None:
    demo = secure_demo
    first = await sign_in(tls_browser, f"{demo.gateway_url}/login/skyprep?idp={idp}", person)
    assert first.status_code == 200, first.text[:400]
    assert "Signed in" in first.text and name in first.text
    assert str(first.url).startswith(_lms_url(demo, "skyprep"))
    cookie = _session_cookie_header(first)
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "secure" in attributes and "httponly" in attributes and "path=/" in attributes
    assert not any(a.startswith("domain=") for a in attributes)  # __Host- forbids Domain
    # The session carries on to the other two LMSs without another trip to the IdP.
    for app in ("damstra", "litmos"):
        page = await tls_browser.get(f"{demo.gateway_url}/login/{app}", follow_redirects=True)
        assert page.status_code == 200, (app, page.text[:400])
        assert name in page.text
        assert str(page.url).startswith(_lms_url(demo, app))
        idp_host = urlsplit(demo.oidc_url if idp == "demo-oidc" else demo.saml_url).netloc
        assert all(hop.url.netloc.decode() != idp_host for hop in page.history)

    logout = await tls_browser.get(f"{demo.gateway_url}/logout")
    (form,) = forms_of(logout)
    assert form.action.startswith("https://")
    done = await tls_browser.post(
        form.action, data=form.fields,
        headers={"Origin": demo.gateway_url, "Sec-Fetch-Site": "same-origin"},
    )  # fmt: skip
    assert done.status_code == 303
    assert tls_browser.cookies.get(SESSION_COOKIE) is None
    again = await tls_browser.get(f"{demo.gateway_url}/login/skyprep?idp={idp}")
    assert again.status_code in (200, 303)
    assert not again.headers.get("location", "").startswith(_lms_url(demo, "skyprep"))


async def test_private_ca_not_trusted_gives_the_idp_unavailable_page_and_readiness_says_why(
    private_ca: CaFiles, stranger_ca: CaFiles, no_env_trust: None
) -> None:
    # The gateway is told to trust another company's CA: every IdP/LMS certificate fails.
    demo = await start_demo(0, tls=private_ca.server, ca_file=stranger_ca.ca_file)
    trust = ssl.create_default_context(cafile=private_ca.ca_file)
    try:
        # Closed before the servers stop: an idle TLS connection would hold their shutdown.
        async with httpx.AsyncClient(verify=trust, timeout=20) as browser:
            page = await browser.get(
                f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", follow_redirects=True
            )
        assert page.status_code == 503
        assert "reference" in page.text and "Traceback" not in page.text
        assert urlsplit(str(page.url)).netloc == urlsplit(demo.gateway_url).netloc
        async with httpx.AsyncClient() as operator:  # plain HTTP, never published
            ready = await operator.get(f"{demo.operator_url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert "demo-oidc" in ready.text and "TLS certificate not trusted" in ready.text
        # SAML needs no outgoing call (metadata file); the LMS call then fails the same way.
        async with httpx.AsyncClient(verify=trust, timeout=20) as browser:
            lms = await sign_in(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-saml", BOB)
        assert lms.status_code == 503, lms.text[:300]
        assert "reference" in lms.text
        assert urlsplit(str(lms.url)).netloc == urlsplit(demo.gateway_url).netloc
        assert demo.skyprep.calls.count() == 0  # no call got through the failed handshake
    finally:
        await demo.stop()


# ---------------------------------------------------------------------------------------
# Real Chromium, trusting the test server certificate by its public key hash only


@pytest.fixture
def tls_chrome(private_ca: CaFiles) -> Iterator[webdriver.Chrome]:
    """Headless Chromium that accepts exactly our test certificate: the SPKI list names its
    public key (certificate errors for any other key still stop the page). Chromium honours
    the list only with a --user-data-dir."""
    profile = tempfile.mkdtemp(prefix="gateway-chromium-tls-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1100,900",
        f"--ignore-certificate-errors-spki-list={private_ca.leaf_spki_sha256}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _gateway_cookies(driver: webdriver.Chrome, gateway_url: str) -> dict[str, dict[str, object]]:
    driver.get(f"{gateway_url}/healthz")
    return {str(c["name"]): dict(c) for c in driver.get_cookies()}


@pytest.mark.parametrize(("idp_label", "email", "name"), [
    ("OpenID Connect", "alice.anderson@example.com", "Alice Anderson"),
    ("SAML", "bob.brown@example.org", "Bob Brown"),
])  # fmt: skip
async def test_real_browser_over_https_with_secure_host_cookies(
    secure_demo: DemoStack, tls_chrome: webdriver.Chrome, tmp_path: Path,
    idp_label: str, email: str, name: str,
) -> None:  # fmt: skip
    demo = secure_demo
    text = await in_thread(
        click_through, tls_chrome, f"{demo.gateway_url}/login/skyprep", idp_label, email,
        tmp_path / "signed-in.png",
    )  # fmt: skip
    assert "Signed in" in text and name in text
    assert tls_chrome.current_url.startswith(demo.skyprep.login_base_url)
    cookies = await in_thread(_gateway_cookies, tls_chrome, demo.gateway_url)
    session = cookies[SESSION_COOKIE]
    assert session["secure"] is True and session["httpOnly"] is True
    assert session["path"] == "/" and not str(session.get("domain", "")).startswith(".")
    assert all(n.startswith("__Host-") for n in cookies if n.startswith(("__Host-", "gw_"))), (
        cookies.keys()
    )
    if idp_label == "OpenID Connect":  # the demo OIDC IdP has an end-session page to click
        out = await in_thread(
            _sign_out_in_chromium, tls_chrome, demo.gateway_url, tmp_path / "out.png"
        )
        assert "signed out" in out.lower()
        after = await in_thread(_gateway_cookies, tls_chrome, demo.gateway_url)
        assert SESSION_COOKIE not in after
