"""The demo in a real browser: headless Chromium (Debian's ``chromium`` + ``chromedriver``)
clicks through the demo as a newcomer would and lands on the LMS simulator's page."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from gateway.sandbox.demo import DemoStack, start_demo

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def chrome() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="gateway-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1100,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def demo() -> AsyncIterator[DemoStack]:
    stack = await start_demo(0)
    try:
        yield stack
    finally:
        await stack.stop()


async def in_thread(func, *args):  # type: ignore[no-untyped-def]
    """Selenium blocks; the demo servers run on this event loop, so drive it from a thread."""
    return await asyncio.to_thread(func, *args)


def click_through(
    driver: webdriver.Chrome, start: str, idp_label: str, employee_email: str, shot: Path
) -> str:
    driver.get(start)
    driver.find_element(By.PARTIAL_LINK_TEXT, idp_label).click()
    driver.find_element(By.CSS_SELECTOR, f"button[data-email='{employee_email}']").click()
    # SAML: the IdP's page posts the response by script; wait for the LMS page either way
    for _ in range(100):
        if "Signed in" in driver.find_element(By.TAG_NAME, "body").text:
            break
        driver.implicitly_wait(0.1)
        import time

        time.sleep(0.1)
    driver.save_screenshot(str(shot))
    return driver.find_element(By.TAG_NAME, "body").text


async def test_demo_in_a_real_browser_oidc(
    demo: DemoStack, chrome: webdriver.Chrome, tmp_path: Path
) -> None:
    text = await in_thread(
        click_through,
        chrome,
        f"{demo.gateway_url}/login/skyprep",
        "OpenID Connect",
        "alice.anderson@example.com",
        tmp_path / "oidc.png",
    )
    assert "Signed in" in text and "Alice Anderson" in text
    assert chrome.current_url.startswith(demo.skyprep.login_base_url)


async def test_demo_in_a_real_browser_saml(
    demo: DemoStack, chrome: webdriver.Chrome, tmp_path: Path
) -> None:
    text = await in_thread(
        click_through,
        chrome,
        f"{demo.gateway_url}/login/litmos",
        "SAML",
        "bob.brown@example.com",
        tmp_path / "saml.png",
    )
    assert "Signed in" in text and "Bob Brown" in text
