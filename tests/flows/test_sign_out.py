"""Sign-out as browsers really send it.

Pages carry ``Referrer-Policy: no-referrer``; a form posted from such a page reaches us with
``Origin: null`` in Chromium and Firefox. The same-origin check must accept that (with the
session's CSRF token and Fetch Metadata deciding) and still refuse cross-site posts. The last
test clicks "Sign out" in real Chromium and checks what the person then sees.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from gateway.sandbox.demo import DemoStack
from tests.flows.agent import forms_of, sign_in
from tests.flows.test_browser import chrome, click_through, in_thread  # noqa: F401 - fixture

ALICE = "emp-1001"


async def _signed_in_logout_form(
    demo: DemoStack, browser: httpx.AsyncClient
) -> tuple[str, dict[str, str]]:
    await sign_in(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", ALICE)
    page = await browser.get(f"{demo.gateway_url}/logout")
    # The sign-out page lets the browser send our real Origin with its POST.
    assert page.headers["referrer-policy"] == "same-origin"
    (form,) = forms_of(page)
    return form.action, form.fields


async def _still_signed_in(demo: DemoStack, browser: httpx.AsyncClient) -> bool:
    again = await browser.get(f"{demo.gateway_url}/login/skyprep?idp=demo-oidc")
    return not again.headers["location"].startswith(demo.oidc_url)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},  # Chromium, no-referrer page
        {"Origin": "null"},  # an older browser without Fetch Metadata: the CSRF token decides
        {"Sec-Fetch-Site": "same-origin"},  # no Origin at all
    ],
    ids=["null-origin+fetch-metadata", "null-origin-only", "fetch-metadata-only"],
)
async def test_sign_out_with_what_real_browsers_send(
    demo: DemoStack, browser: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    action, fields = await _signed_in_logout_form(demo, browser)
    done = await browser.post(action, data=fields, headers=headers)
    assert done.status_code == 303
    assert not await _still_signed_in(demo, browser)


@pytest.mark.parametrize(
    ("headers", "with_token"),
    [
        ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, True),  # sandboxed attacker frame
        ({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, True),
        ({"Origin": "https://evil.example"}, True),
        ({"Origin": "null"}, False),  # null origin without the session's token
        ({"Sec-Fetch-Site": "same-site"}, True),  # a sibling subdomain is not us
    ],
    ids=["null+cross-site", "evil+cross-site", "evil-origin", "null-no-token", "same-site"],
)
async def test_cross_site_sign_out_is_still_refused(
    demo: DemoStack, browser: httpx.AsyncClient, headers: dict[str, str], with_token: bool
) -> None:
    action, fields = await _signed_in_logout_form(demo, browser)
    refused = await browser.post(action, data=fields if with_token else {}, headers=headers)
    assert refused.status_code == 400
    assert await _still_signed_in(demo, browser)


def _sign_out_in_chromium(driver: webdriver.Chrome, gateway_url: str, shot: Path) -> str:
    wait = WebDriverWait(driver, 30)
    driver.get(f"{gateway_url}/logout")
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "form button"))).click()
    # The demo OIDC IdP ends its side (end_session = true in the demo) and links back to us.
    wait.until(ec.element_to_be_clickable((By.PARTIAL_LINK_TEXT, "Return to"))).click()
    wait.until(ec.url_to_be(f"{gateway_url}/signed-out"))
    driver.save_screenshot(str(shot))
    return str(driver.find_element(By.TAG_NAME, "body").text)


async def test_sign_out_button_in_a_real_browser(
    demo: DemoStack, chrome: webdriver.Chrome, tmp_path: Path  # noqa: F811 - fixture
) -> None:
    await in_thread(
        click_through,
        chrome,
        f"{demo.gateway_url}/login/skyprep",
        "OpenID Connect",
        "alice.anderson@example.com",
        tmp_path / "signed-in.png",
    )
    text = await in_thread(_sign_out_in_chromium, chrome, demo.gateway_url, tmp_path / "out.png")
    assert "signed out" in text.lower()
    # What the person notices next: the app link asks them to sign in again.
    await in_thread(chrome.get, f"{demo.gateway_url}/login/skyprep")
    assert "Signed in" not in str(chrome.find_element(By.TAG_NAME, "body").text)
    assert not chrome.current_url.startswith(demo.skyprep.login_base_url)
