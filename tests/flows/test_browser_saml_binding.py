"""SAML login binding in a real browser (headless Chromium, as in ``test_browser.py``).

The ACS refuses a response unless the browser sends the login-binding cookie it got when
the login started. Over plain http (``cookie_secure = false``, the demo) that cookie is
``SameSite=Lax``, which browsers do not send on a cross-*site* POST. The demo IdP runs on
another port of 127.0.0.1: ports do not make another site, so the IdP's auto-posted form is
a same-site POST and the cookie arrives. This checks that Chromium agrees, and that the
IdP-initiated confirmation step (303 after the cross-site POST, a Lax cookie, a form that
ends in a redirect to the LMS under the gateway's CSP) works in a real browser.
"""

from __future__ import annotations

from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from gateway.sandbox.demo import DemoStack
from tests.flows import test_browser
from tests.flows.test_browser import in_thread

chrome = test_browser.chrome  # the same headless Chromium fixture

BOB = "emp-1002"


def _pick(driver: webdriver.Chrome, wait: WebDriverWait, sub: str) -> None:
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"button[value='{sub}']"))).click()


def sp_initiated(driver: webdriver.Chrome, start: str, shot: Path) -> tuple[str, list[str]]:
    wait = WebDriverWait(driver, 30)
    driver.get(start)
    _pick(driver, wait, BOB)
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Signed in"))
    driver.save_screenshot(str(shot))
    return driver.find_element(By.TAG_NAME, "body").text, [c["name"] for c in driver.get_cookies()]


def idp_initiated(driver: webdriver.Chrome, start: str, shot: Path) -> tuple[str, str]:
    wait = WebDriverWait(driver, 30)
    driver.get(start)
    _pick(driver, wait, BOB)
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Continue to"))
    question = driver.find_element(By.TAG_NAME, "body").text
    driver.save_screenshot(str(shot))
    driver.find_element(By.CSS_SELECTOR, "button[value='continue']").click()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Signed in"))
    return question, driver.find_element(By.TAG_NAME, "body").text


async def test_sp_initiated_saml_lands_in_the_lms_in_chromium(
    demo: DemoStack, chrome: webdriver.Chrome, tmp_path: Path
) -> None:
    text, cookies = await in_thread(
        sp_initiated,
        chrome,
        f"{demo.gateway_url}/login/skyprep?idp=demo-saml",
        tmp_path / "sp.png",
    )
    assert "Signed in to SkyPrep as Bob Brown" in text
    assert chrome.current_url.startswith(demo.skyprep.login_base_url)
    # The binding cookie reached the ACS (else: "start again" page) and was then cleared.
    assert "gw_login" not in cookies


async def test_idp_initiated_saml_asks_then_lands_in_chromium(
    demo: DemoStack, chrome: webdriver.Chrome, tmp_path: Path
) -> None:
    question, text = await in_thread(
        idp_initiated, chrome, f"{demo.saml_url}/idp-initiated", tmp_path / "confirm.png"
    )
    assert "Continue to SkyPrep (demo) as bob.brown@" in question
    assert "Signed in to SkyPrep as Bob Brown" in text
    assert chrome.current_url.startswith(demo.skyprep.login_base_url)


def idp_initiated_cancelled(driver: webdriver.Chrome, start: str, gateway: str) -> tuple[str, str]:
    wait = WebDriverWait(driver, 30)
    driver.get(start)
    _pick(driver, wait, BOB)
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Continue to"))
    driver.find_element(By.CSS_SELECTOR, "button[value='cancel']").click()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Sign-in cancelled"))
    cancelled = driver.find_element(By.TAG_NAME, "body").text
    # What the person notices next: the app link asks them to sign in (no session was made).
    driver.get(f"{gateway}/login/skyprep?idp=demo-saml")
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"button[value='{BOB}']")))
    return cancelled, driver.current_url


async def test_idp_initiated_saml_cancel_in_chromium_signs_nobody_in(
    demo: DemoStack, chrome: webdriver.Chrome
) -> None:
    before = demo.skyprep.calls.count()
    cancelled, url = await in_thread(
        idp_initiated_cancelled, chrome, f"{demo.saml_url}/idp-initiated", demo.gateway_url
    )
    assert "Nothing changed" in cancelled
    assert url.startswith(demo.saml_url)  # back at the IdP's sign-in, not in the LMS
    assert demo.skyprep.calls.count() == before
