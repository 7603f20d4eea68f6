"""The demo in a real browser: headless Chromium (Debian's ``chromium`` + ``chromedriver``)
clicks through the demo as a newcomer would and lands on the LMS simulator's page."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from gateway.sandbox.demo import DemoStack

# Debian: /usr/bin/chromium. Ubuntu's snap: /snap/bin/chromium, which sudo and some CI
# environments leave off PATH.
CHROMIUM = (shutil.which("chromium") or shutil.which("chromium-browser")
            or next((p for p in ("/usr/bin/chromium", "/snap/bin/chromium")
                     if os.path.exists(p)), "/usr/bin/chromium"))
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


async def in_thread(func, *args):  # type: ignore[no-untyped-def]
    """Selenium blocks; the demo servers run on this event loop, so drive it from a thread."""
    return await asyncio.to_thread(func, *args)


def click_through(
    driver: webdriver.Chrome, start: str, idp_label: str, employee_email: str, shot: Path
) -> str:
    """What a newcomer does: open the app link, pick how to sign in, pick an employee."""
    wait = WebDriverWait(driver, 30)
    driver.get(start)
    wait.until(ec.element_to_be_clickable((By.PARTIAL_LINK_TEXT, idp_label))).click()
    person = (By.CSS_SELECTOR, f"button[data-email='{employee_email}']")
    wait.until(ec.element_to_be_clickable(person)).click()
    # SAML: the IdP's page posts the response by script; either way wait for the LMS page.
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Signed in"))
    driver.save_screenshot(str(shot))
    return str(driver.find_element(By.TAG_NAME, "body").text)


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
        "bob.brown@example.org",  # the demo SAML IdP vouches for the subsidiary's domain
        tmp_path / "saml.png",
    )
    assert "Signed in" in text and "Bob Brown" in text
