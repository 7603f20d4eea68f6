"""The employee pages in real headless Chromium: branding, the language a browser asks for,
the error pages a person can reach (heading and next action), Back after landing, the queue
page, styled 404/405. Screenshots go to the test's tmp dir (and, when GATEWAY_SHOTS_DIR is set,
there too, for people to look at)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from gateway.app import create_app
from gateway.sandbox._common import bind_port, serve_task
from gateway.sandbox.demo import DemoStack, start_demo
from gateway.settings import BrandingSettings
from tests.flows.agent import sign_in
from tests.flows.test_browser import CHROMEDRIVER, CHROMIUM, in_thread

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc000000301010018dd8db40000000049454e44ae426082"
)
Browser = Callable[[str], webdriver.Chrome]


@pytest.fixture
def chromium() -> Iterator[Browser]:
    """Start Chromium asking for ``lang`` (its Accept-Language, as a person's settings do)."""
    started: list[tuple[webdriver.Chrome, str]] = []

    def start(lang: str) -> webdriver.Chrome:
        profile = tempfile.mkdtemp(prefix="gateway-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
            "--window-size=900,800", f"--lang={lang}",
        ):
            options.add_argument(flag)
        options.add_experimental_option("prefs", {"intl.accept_languages": lang})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(30)
        started.append((driver, profile))
        return driver

    try:
        yield start
    finally:
        for driver, profile in started:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)


def shot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    extra = os.environ.get("GATEWAY_SHOTS_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(extra) / f"{name}.png"))


def open_page(driver: webdriver.Chrome, url: str) -> tuple[str, str, str]:
    """(h1 text, body text, <html lang>) once the page has loaded."""
    driver.get(url)
    WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    html = driver.find_element(By.TAG_NAME, "html")
    return (
        driver.find_element(By.TAG_NAME, "h1").text,
        driver.find_element(By.TAG_NAME, "body").text,
        str(html.get_attribute("lang")),
    )


@pytest.mark.parametrize(
    ("lang", "heading", "button"),
    [
        ("en-GB", "Sign in to SkyPrep (demo)", "Demo company (OpenID Connect)"),
        ("de-DE", "Bei SkyPrep (demo) anmelden", "Wählen Sie, wie Sie sich"),
        ("fr-FR", "Se connecter à SkyPrep (demo)", "Choisissez comment vous"),
        ("es-ES", "Iniciar sesión en SkyPrep (demo)", "Elija cómo inicia sesión"),
    ],
)
async def test_each_language_by_the_browsers_accept_language(
    demo: DemoStack, chromium: Browser, tmp_path: Path, lang: str, heading: str, button: str
) -> None:
    driver = chromium(lang)
    h1, body, html_lang = await in_thread(open_page, driver, f"{demo.gateway_url}/login/skyprep")
    assert h1 == heading and button in body
    assert html_lang == lang[:2]
    await in_thread(shot, driver, tmp_path, f"chooser-{lang[:2]}")
    # The switcher overrides the browser's choice, and the choice is remembered.
    other = "Deutsch" if lang[:2] != "de" else "English"
    await in_thread(lambda: driver.find_element(By.LINK_TEXT, other).click())
    h1, _, html_lang = await in_thread(open_page, driver, f"{demo.gateway_url}/nowhere")
    assert html_lang == ("de" if other == "Deutsch" else "en")
    assert h1 == ("Seite nicht gefunden" if other == "Deutsch" else "Page not found")


async def test_branded_pages_show_company_logo_colour_and_support(
    demo: DemoStack, chromium: Browser, tmp_path: Path
) -> None:
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    branding = BrandingSettings(
        company_name="Acme Corporation",
        logo_file=str(logo),
        primary_colour="#0b6e4f",
        support_text="the Acme service desk",
        support_url="mailto:help@acme.example",
    )
    settings = dataclasses.replace(demo.settings, branding=branding)
    served = await serve_task(create_app(settings), bind_port())
    try:
        driver = chromium("en")
        h1, body, _ = await in_thread(open_page, driver, f"{served.url}/login/skyprep")
        assert h1 == "Sign in to SkyPrep (demo)"
        assert "Acme Corporation" in body and "Need help? the Acme service desk" in body

        def looks() -> tuple[int, str, str]:
            width = driver.execute_script(
                "return document.querySelector('img.logo').naturalWidth"
            )
            button = driver.find_element(By.CSS_SELECTOR, "a.button")
            return width, button.value_of_css_property("background-color"), driver.title

        width, colour, title = await in_thread(looks)
        assert width == 1  # the logo loaded (CSP allowed it)
        assert colour in ("rgba(11, 110, 79, 1)", "rgb(11, 110, 79)")
        assert title == "Sign in to SkyPrep (demo) · Acme Corporation"
        await in_thread(shot, driver, tmp_path, "branded-chooser-en")
        h1, body, _ = await in_thread(open_page, driver, f"{served.url}/login/nope?lang=fr")
        assert h1 == "Page introuvable" and "Acme Corporation" in body
        await in_thread(shot, driver, tmp_path, "branded-404-fr")
    finally:
        await served.astop()


def pick(driver: webdriver.Chrome, start: str, idp_label: str, email: str) -> str:
    """Open ``start``, choose the IdP and the demo employee; the page's h1 (or body) after."""
    wait = WebDriverWait(driver, 30)
    driver.get(start)
    wait.until(ec.element_to_be_clickable((By.PARTIAL_LINK_TEXT, idp_label))).click()
    button = wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, f"button[data-email='{email}']"))
    )
    button.click()
    # The IdP's page has an h1 too: wait until it is gone before reading the next page.
    wait.until(ec.staleness_of(button))
    wait.until(lambda d: d.find_elements(By.TAG_NAME, "h1") or "Signed in" in d.page_source)
    return str(driver.find_element(By.TAG_NAME, "body").text)


async def test_error_pages_a_person_can_reach_say_what_happened_and_what_next(
    demo: DemoStack, chromium: Browser, tmp_path: Path
) -> None:
    driver = chromium("en")
    # Access denied by the app's rules: contact support, with the reference.
    body = await in_thread(
        pick, driver, f"{demo.gateway_url}/login/skyprep", "OpenID", "dana.visitor@example.com"
    )
    assert "You do not have access to SkyPrep (demo)" in body
    assert "If you need access, contact your IT support" in body and "quote this reference" in body
    await in_thread(shot, driver, tmp_path, "access-denied-en")

    # Cancelled at the IdP: its own heading, and Start again.
    def cancel() -> str:
        wait = WebDriverWait(driver, 30)
        driver.delete_all_cookies()
        driver.get(f"{demo.gateway_url}/login/litmos?idp=demo-oidc")
        button = wait.until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, "button[value='cancel']"))
        )
        button.click()
        wait.until(ec.staleness_of(button))  # the IdP's page (it has an h1 too) is gone
        wait.until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
        return str(driver.find_element(By.TAG_NAME, "body").text)

    body = await in_thread(cancel)
    assert "Sign-in was not completed" in body and "Start again" in body
    await in_thread(lambda: driver.find_element(By.LINK_TEXT, "Start again").click())
    assert "/login" in driver.current_url or driver.current_url.rstrip("/") == demo.gateway_url

    # A spent sign-in answer in a browser without a session: expired, Start again.
    async with httpx.AsyncClient(timeout=20) as other:
        page = await other.get(
            f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", follow_redirects=True
        )
        from tests.flows.agent import forms_of

        (form,) = forms_of(page)
        answer = await other.post(form.action, data={**form.fields, "sub": "emp-1001"})
        callback = answer.headers["location"]
        assert (await other.get(callback)).status_code == 303
    await in_thread(driver.delete_all_cookies)
    h1, body, _ = await in_thread(open_page, driver, callback)
    assert h1 == "Your sign-in has expired" and "Start again" in body
    await in_thread(shot, driver, tmp_path, "expired-en")

    # Unrouted URL (404) and a wrong method (405), styled like every page.
    h1, body, _ = await in_thread(open_page, driver, f"{demo.gateway_url}/no/such/page")
    assert h1 == "Page not found" and "Go to the start page" in body

    def post_to_get_only() -> tuple[str, str]:
        driver.get(demo.portal_url)  # a page of another origin that posts a form to us
        driver.execute_script(
            "const f = document.createElement('form'); f.method = 'post';"
            f"f.action = '{demo.gateway_url}/signed-out'; document.body.appendChild(f); f.submit();"
        )
        WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/signed-out"))
        WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
        return driver.find_element(By.TAG_NAME, "h1").text, driver.page_source

    h1, source = await in_thread(post_to_get_only)
    assert h1 == "This page cannot be used like this" and "/static/gateway.css" in source


async def test_back_after_landing_continues_with_the_session(
    demo: DemoStack, chromium: Browser, tmp_path: Path
) -> None:
    driver = chromium("en")
    body = await in_thread(
        pick, driver, f"{demo.gateway_url}/login/skyprep", "OpenID", "alice.anderson@example.com"
    )
    assert "Signed in" in body
    lms_logins = demo.skyprep.calls.count()

    def back_and_choose_again() -> str:
        driver.back()  # the IdP's page again (the callback was a redirect to the LMS)
        wait = WebDriverWait(driver, 30)
        button = (By.CSS_SELECTOR, "button[data-email='alice.anderson@example.com']")
        wait.until(ec.element_to_be_clickable(button)).click()
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Signed in"))
        return str(driver.find_element(By.TAG_NAME, "body").text)

    body = await in_thread(back_and_choose_again)
    # The spent answer led to the session being used again: the employee lands, no error.
    assert "Signed in" in body and "Alice Anderson" in body
    assert driver.current_url.startswith(demo.skyprep.login_base_url)
    assert demo.skyprep.calls.count() > lms_logins  # a fresh sign-in link, via /login/skyprep


async def test_queue_page_in_the_browser(chromium: Browser, tmp_path: Path) -> None:
    stack = await start_demo(0, calls_per_minute=1)
    try:
        # Someone else's sign-in spends the minute's budget.
        async with httpx.AsyncClient(timeout=20) as first:
            await sign_in(first, f"{stack.gateway_url}/login/skyprep?idp=demo-oidc", "emp-1001")
        driver = chromium("de")
        body = await in_thread(
            pick, driver, f"{stack.gateway_url}/login/skyprep", "OpenID", "bob.brown@example.com"
        )
        assert "Sie sind in der Warteschlange" in body
        assert "Gerade öffnen viele Personen SkyPrep (demo)." in body
        assert "Das dauert etwa" in body and "Sekunden" in body
        live = await in_thread(
            lambda: driver.find_element(By.CSS_SELECTOR, "[aria-live='polite']").text
        )
        assert "Das dauert etwa" in live
        await in_thread(shot, driver, tmp_path, "queue-de")
    finally:
        await stack.stop()
