"""Signing in from a portal's embedded lesson, in real headless Chromium with two sites.

The portal page is served from ``http://localhost:P1`` and frames the gateway at
``http://127.0.0.1:P2``: different sites, so Chromium applies its real cross-site cookie rules
(the gateway's ``SameSite=Lax`` session never reaches the frame; only the frame's own
partitioned cookies do). The employee clicks "Sign in" in the frame, signs in at the demo
OpenID Provider in the popup, and the lesson then plays inside the portal's frame while the
top-level page stays the portal page.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.sandbox._common import Served, bind_port, serve_task
from gateway.sandbox.demo import DemoStack
from tests.flows.test_browser import chrome as chrome  # the Chromium fixture, re-exported
from tests.flows.test_browser import in_thread

FRAME = "lesson"


def _portal_page(frame_src: str) -> Starlette:
    """A company intranet page on another site, framing one lesson (what a portal does)."""

    async def page(_: object) -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>Intranet</title>"
            "</head><body><h1>Acme intranet</h1>"
            f"<iframe name='{FRAME}' id='{FRAME}' src='{frame_src}' width=800 height=600"
            " title='Lesson player'></iframe></body></html>"
        )

    return Starlette(routes=[Route("/", page)])


def _rebind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


@pytest.fixture
async def two_sites(demo: DemoStack) -> AsyncIterator[tuple[DemoStack, str]]:
    """The demo, with a portal page on ``localhost`` whose origin the demo portal lists, and
    the URL of that page. The demo's gateway is restarted on its own URL with that origin
    added to ``[portal.demo-portal] origins`` (the IdP knows only that redirect URI)."""
    portal_sock = bind_port()
    portal_origin = f"http://localhost:{portal_sock.getsockname()[1]}"
    portals = {
        name: dataclasses.replace(p, origins=(*p.origins, portal_origin))
        for name, p in demo.settings.portal.items()
    }
    settings = dataclasses.replace(demo.settings, portal=portals)
    old = demo.servers.pop()
    await old.astop()
    gateway: Served = await serve_task(create_app(settings), _rebind(old.port))
    demo.servers.append(gateway)  # demo.stop() stops it
    frame = f"{demo.gateway_url}/embed/damstra/lesson-schedules/{demo.lesson_schedule_id}"
    portal = await serve_task(_portal_page(frame), portal_sock)
    try:
        yield demo, f"{portal_origin}/"
    finally:
        await portal.astop()


def _shot(driver: webdriver.Chrome, path: Path) -> None:
    driver.save_screenshot(str(path))
    keep = os.environ.get("GATEWAY_SHOTS_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def sign_in_from_the_frame(
    driver: webdriver.Chrome, portal: str, employee: str, shots: Path
) -> dict[str, str]:
    """What the employee does: open the portal, click "Sign in" in the lesson frame, sign in
    in the popup; then what they see."""
    wait = WebDriverWait(driver, 30)
    driver.get(portal)
    main = driver.current_window_handle
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.NAME, FRAME)))
    button = wait.until(ec.element_to_be_clickable((By.ID, "gw-embed-sign-in")))
    driver.switch_to.default_content()
    _shot(driver, shots / "embed-1-sign-in-in-frame.png")
    driver.switch_to.frame(FRAME)
    button.click()
    wait.until(lambda d: len(d.window_handles) == 2)
    popup = next(h for h in driver.window_handles if h != main)
    driver.switch_to.window(popup)
    # The demo's Damstra app takes two IdPs: the popup asks which one.
    wait.until(ec.element_to_be_clickable((By.PARTIAL_LINK_TEXT, "OpenID Connect"))).click()
    person = (By.CSS_SELECTOR, f"button[data-email='{employee}']")
    wait.until(ec.element_to_be_clickable(person)).click()
    # The frame collects the sign-in and closes the popup itself.
    wait.until(lambda d: len(d.window_handles) == 1)
    driver.switch_to.window(main)
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.NAME, FRAME)))
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "lesson player"))
    frame_url = str(driver.execute_script("return location.href"))
    frame_text = str(driver.find_element(By.TAG_NAME, "body").text)
    driver.switch_to.default_content()
    _shot(driver, shots / "embed-2-lesson-in-frame.png")
    return {"top": driver.current_url, "frame": frame_url, "frame_text": frame_text}


async def test_signing_in_from_the_frame_plays_the_lesson_inside_the_portal(
    two_sites: tuple[DemoStack, str], chrome: webdriver.Chrome, tmp_path: Path
) -> None:
    demo, portal = two_sites
    seen = await in_thread(
        sign_in_from_the_frame, chrome, portal, "bob.brown@example.com", tmp_path
    )
    # The top-level page never left the portal ...
    assert seen["top"] == portal
    # ... and the frame ended on the Damstra simulator's player for Bob's lesson.
    assert seen["frame"].startswith(f"{demo.damstra.login_base_url}/player/")
    assert f"/player/{demo.lesson_schedule_id}" in seen["frame"]
    assert "lesson player: Site safety induction" in seen["frame_text"]


def _reload_frame(driver: webdriver.Chrome, portal: str) -> str:
    wait = WebDriverWait(driver, 30)
    driver.get(portal)
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.NAME, FRAME)))
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").text.strip())
    text = str(driver.find_element(By.TAG_NAME, "body").text)
    driver.switch_to.default_content()
    return text


async def test_the_frame_stays_signed_in_until_the_gateway_session_ends(
    two_sites: tuple[DemoStack, str], chrome: webdriver.Chrome, tmp_path: Path
) -> None:
    demo, portal = two_sites
    await in_thread(sign_in_from_the_frame, chrome, portal, "bob.brown@example.com", tmp_path)
    # Reloading the portal: the frame's own grant opens the lesson without any sign-in.
    assert "lesson player" in await in_thread(_reload_frame, chrome, portal)

    def sign_out(driver: webdriver.Chrome) -> None:
        wait = WebDriverWait(driver, 30)
        driver.get(f"{demo.gateway_url}/logout")
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "form button"))).click()
        # Then on to the IdP's end-session page: the gateway session is gone by then.
        wait.until(lambda d: not d.current_url.startswith(f"{demo.gateway_url}/logout"))

    await in_thread(sign_out, chrome)
    # Signing out at the gateway ends the frame's grant too: the sign-in page is back.
    text = await in_thread(_reload_frame, chrome, portal)
    assert "lesson player" not in text and "Sign in" in text
