"""Employee pages as a browser receives them: each error kind's heading, sentence, next action
and status, in every shipped language; branding (logo, colours, support contact, CSP); the
queue and "just a moment" pages; styled 404/405 with JSON kept for /api/ and /scim/.

Errors are raised from a route added to the real application (built from a real config), so
the whole path (exception handlers, middleware headers, templates, catalogues) is exercised;
the browser tests (tests/flows/test_pages_browser.py) drive the ones a browser can reach.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from gateway import errors
from gateway.app import create_app
from gateway.config import parse_settings
from gateway.web.branding import Branding, contrast
from gateway.web.error_pages import KINDS
from tests.test_config import ENV, minimal

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc000000301010018dd8db40000000049454e44ae426082"
)

# (exception, status, English heading, German heading, what the page offers next)
CASES: list[tuple[errors.GatewayError, int, str, str, str]] = [
    (errors.LoginStateError("x"), 400, "Your sign-in has expired",
     "Ihre Anmeldung ist abgelaufen", 'href="/login/training">Start again'),
    (errors.ReplayDetected("x"), 401, "Your sign-in has expired",
     "Ihre Anmeldung ist abgelaufen", 'href="/login/training">Start again'),
    (errors.TokenValidationError("x"), 401, "Sign-in could not be completed",
     "Die Anmeldung konnte nicht abgeschlossen werden", "contact your IT support"),
    (errors.IdpRejected("x"), 401, "Sign-in was not completed",
     "Die Anmeldung wurde nicht abgeschlossen", ">Start again</a>"),
    (errors.IdpUnavailable("x"), 503, "Your sign-in service is not reachable",
     "Ihr Anmeldedienst ist nicht erreichbar", "try again in a few minutes"),
    (errors.AccessDenied("x"), 403, "You do not have access to Acme Academy",
     "Sie haben keinen Zugang zu Acme Academy", "If you need access, contact your IT support"),
    (errors.IdpNotAuthoritative("x"), 403, "This sign-in service cannot sign you in here",
     "Dieser Anmeldedienst kann Sie hier nicht anmelden", ">Start again</a>"),
    (errors.LmsUnavailable("x"), 503, "Acme Academy is not available right now",
     "Acme Academy ist gerade nicht erreichbar", "try again in a minute"),
    (errors.LmsRateLimited("x", retry_after=20), 503, "Acme Academy is busy",
     "Acme Academy ist ausgelastet", "try again in a minute"),
    (errors.LmsRejected("x"), 502, "Acme Academy did not answer as expected",
     "Acme Academy hat nicht wie erwartet geantwortet", "contact your IT support"),
    (errors.AccountInactive("x"), 403, "Your training account is deactivated",
     "Ihr Schulungskonto ist deaktiviert", "contact your training administrator"),
    (errors.PrivilegedAccount("x"), 403, "Administrator accounts cannot sign in here",
     "Administratorkonten können sich hier nicht anmelden", "training administrator"),
    (errors.AmbiguousAccount("x"), 409, "More than one training account matches you",
     "Mehrere Schulungskonten passen zu Ihnen", "training administrator"),
    (errors.SignOutRefused("x"), 400, "Sign-out did not finish",
     "Die Abmeldung wurde nicht abgeschlossen", 'href="/logout">Sign out'),
    (errors.UnsafeTarget("x"), 400, "This destination is not allowed",
     "Dieses Ziel ist nicht erlaubt", ">Start again</a>"),
    (errors.BadRequest("x"), 400, "This link is not valid",
     "Dieser Link ist ungültig", ">Start again</a>"),
    (errors.TooManyPendingLogins("x"), 429, "Too many sign-ins right now",
     "Gerade zu viele Anmeldungen", "try again in a minute"),
    (errors.StoreUnavailable("x"), 503, "Sign-in is temporarily unavailable",
     "Die Anmeldung ist vorübergehend nicht möglich", "try again in a few minutes"),
    (errors.NotFound("x"), 404, "Page not found", "Seite nicht gefunden",
     'href="/">Go to the start page'),
    (errors.GatewayError("x"), 500, "Something went wrong",
     "Etwas ist schiefgelaufen", "contact your IT support"),
]


def _all_error_classes() -> list[type[errors.GatewayError]]:
    found: list[type[errors.GatewayError]] = []
    todo: list[type[errors.GatewayError]] = [errors.GatewayError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def settings_with(**branding: Any) -> Any:
    data = minimal()
    data["app"]["training"]["display_name"] = "Acme Academy"
    if branding:
        data["branding"] = branding
    return parse_settings(data, ENV)


def client_for(settings: Any) -> httpx.AsyncClient:
    app = create_app(settings)
    raised: list[errors.GatewayError] = []

    async def raiser(request: Request) -> Response:
        raise raised[0]

    app.add_route("/_raise/{app}", raiser)
    # ASGITransport runs no lifespan: nothing reaches out to the (fictional) IdP or LMS.
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://learn.example.com"
    )
    client.raised = raised  # type: ignore[attr-defined]
    return client


@pytest.fixture
async def pages() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings_with()) as client:
        yield client


async def raise_page(
    client: httpx.AsyncClient, exc: errors.GatewayError, path: str = "/_raise/training", **kw: Any
) -> httpx.Response:
    client.raised[:] = [exc]  # type: ignore[attr-defined]
    return await client.get(path, **kw)


def heading(page: httpx.Response) -> str:
    match = re.search(r"<h1>(.*?)</h1>", page.text, re.S)
    assert match, page.text[:500]
    return match.group(1).strip()


@pytest.mark.parametrize(("exc", "status", "en", "de", "action"), CASES,
                         ids=[type(c[0]).__name__ for c in CASES])
async def test_each_error_kind_has_its_heading_next_action_and_status(
    pages: httpx.AsyncClient, exc: errors.GatewayError, status: int, en: str, de: str, action: str
) -> None:
    page = await raise_page(pages, exc)
    assert page.status_code == status
    assert heading(page) == en
    assert action in page.text
    assert re.search(r"quote this reference: <code>[0-9a-f]{16}</code>", page.text)
    assert "We could not sign you in" not in page.text
    german = await raise_page(pages, exc, headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    assert german.status_code == status and heading(german) == de
    assert '<html lang="de">' in german.text and german.headers["content-language"] == "de"


@pytest.mark.parametrize("lang", ["en", "de", "fr", "es"])
@pytest.mark.parametrize("kind", sorted({c.page for c in _all_error_classes()} - {"queue", "busy"}))
async def test_every_kind_renders_in_every_language_without_english_leaking(
    pages: httpx.AsyncClient, kind: str, lang: str
) -> None:
    exc_class = next(c for c in _all_error_classes() if c.page == kind)
    page = await raise_page(pages, exc_class("x"), params={"lang": lang})
    assert f'<html lang="{lang}">' in page.text and page.status_code == exc_class.status
    assert heading(page)
    if lang != "en":
        assert "Start again<" not in page.text and "quote this reference" not in page.text
        assert "Please" not in page.text and "training system" not in page.text


def test_every_error_class_names_a_page_kind_that_exists() -> None:
    for cls in _all_error_classes():
        assert cls.page in KINDS, cls


async def test_language_choice_order_cookie_and_q_values(pages: httpx.AsyncClient) -> None:
    exc = errors.NotFound("x")
    # q-values decide, not the order: French is preferred here.
    page = await raise_page(pages, exc, headers={"Accept-Language": "de;q=0.4, fr-CA, en;q=0.8"})
    assert heading(page) == "Page introuvable"
    # Unknown languages fall through to the default (English).
    page = await raise_page(pages, exc, headers={"Accept-Language": "ja, pt-BR;q=0.9"})
    assert heading(page) == "Page not found"
    # ?lang= overrides the browser and is remembered in a cookie that authenticates nothing.
    page = await raise_page(pages, exc, params={"lang": "es"}, headers={"Accept-Language": "de"})
    assert heading(page) == "Página no encontrada"
    assert "__Host-gw_lang=es" in page.headers["set-cookie"]
    assert "HttpOnly" in page.headers["set-cookie"] and "Secure" in page.headers["set-cookie"]
    page = await raise_page(pages, exc, headers={"Accept-Language": "de"})
    assert heading(page) == "Página no encontrada"
    # A bogus or repeated ?lang= changes nothing and sets nothing.
    for params in ({"lang": "xx"}, [("lang", "de"), ("lang", "fr")]):
        page = await raise_page(pages, exc, params=params)
        assert heading(page) == "Página no encontrada" and "set-cookie" not in page.headers


async def test_default_language_setting_applies_without_accept_language() -> None:
    data = minimal()
    data["gateway"]["default_language"] = "fr"
    async with client_for(parse_settings(data, ENV)) as client:
        page = await raise_page(client, errors.NotFound("x"))
        assert heading(page) == "Page introuvable"


async def test_lesson_missing_in_a_portal_frame_links_back_to_the_app(
    pages: httpx.AsyncClient,
) -> None:
    page = await pages.get("/embed/nope/lesson-schedules/1")
    assert page.status_code == 404 and heading(page) == "Lesson not found"
    assert 'target="_top"' in page.text
    assert "nope" not in page.text  # an unknown app name from the URL is not echoed


async def test_unrouted_and_wrong_method_pages_are_styled_but_api_and_scim_stay_json(
    pages: httpx.AsyncClient,
) -> None:
    missing = await pages.get("/no/such/page", headers={"Accept-Language": "fr"})
    assert missing.status_code == 404 and heading(missing) == "Page introuvable"
    assert missing.headers["content-type"].startswith("text/html")
    assert '/static/gateway.css' in missing.text
    wrong = await pages.post("/signed-out")
    assert wrong.status_code == 405 and heading(wrong) == "This page cannot be used like this"
    assert "GET" in wrong.headers["allow"]
    api = await pages.get("/api/v1/nothing")
    assert api.status_code == 404 and api.json()["error"] == "not_found"
    # /scim/ answers SCIM error JSON (its own handlers, or ours for what it does not route).
    scim = await pages.get("/scim/v2/nothing/at/all/here")
    assert scim.status_code in (401, 404) and "<html" not in scim.text
    assert scim.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


async def test_queue_page_shows_position_and_estimate_and_refreshes_accessibly(
    pages: httpx.AsyncClient,
) -> None:
    exc = errors.BudgetExhausted("x", retry_after=12.2)
    exc.position = 6  # type: ignore[attr-defined]  # LMS calls reserved ahead
    page = await raise_page(pages, exc)
    assert page.status_code == 503 and page.headers["retry-after"] == "13"
    assert "You&#39;re in the queue" in page.text or "You're in the queue" in page.text
    assert "Many people are opening Acme Academy right now." in page.text
    # 6 calls ahead, 2 per SkyPrep first sign-in: 3 people ahead, so number 4.
    assert "You are number 4 in line." in page.text
    assert "It should take about 13 seconds." in page.text
    assert 'role="status" aria-live="polite"' in page.text
    assert '<meta http-equiv="refresh" content="13">' in page.text
    unknown = errors.BudgetExhausted("x", retry_after=1)
    page = await raise_page(pages, unknown, params={"lang": "de"})
    assert "in line" not in page.text and "Position" not in page.text
    assert "Das dauert etwa 1 Sekunde." in page.text


async def test_employee_busy_is_a_short_just_a_moment_page(pages: httpx.AsyncClient) -> None:
    busy_class = getattr(errors, "EmployeeBusy", None)
    if busy_class is None:  # until issue 11's class lands: the same shape
        busy_class = type("EmployeeBusy", (errors.BudgetExhausted,), {"status": 429,
                                                                      "page": "busy"})
    page = await raise_page(pages, busy_class("x", retry_after=3), params={"lang": "fr"})
    assert page.status_code == 429 and page.headers["retry-after"] == "3"
    assert heading(page) == "Un instant"
    assert '<meta http-equiv="refresh" content="3">' in page.text


async def test_expected_conditions_are_not_logged_as_errors(
    pages: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.web")
    for exc in (errors.BudgetExhausted("x"), errors.AccessDenied("x"),
                errors.AccountInactive("x"), errors.NotFound("x")):
        caplog.clear()
        await raise_page(pages, exc)
        levels = {r.levelno for r in caplog.records if r.name == "gateway.web"}
        assert levels and max(levels) <= logging.INFO, (exc, levels)
    caplog.clear()
    await raise_page(pages, errors.LmsUnavailable("x"))
    assert any(r.levelno == logging.ERROR for r in caplog.records)


async def test_branding_on_every_page_with_logo_colour_and_support(tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    settings = settings_with(
        company_name="Acme <Corp>",
        logo_file=str(logo),
        primary_colour="#FFCC00",
        support_text="the Acme service desk",
        support_url="mailto:help@acme.example",
    )
    async with client_for(settings) as client:
        for page in (await client.get("/"), await raise_page(client, errors.AccessDenied("x"))):
            assert "Acme &lt;Corp&gt;" in page.text and 'src="/branding/logo"' in page.text
            assert 'href="/branding.css"' in page.text
            assert '<a href="mailto:help@acme.example">the Acme service desk</a>' in page.text
        denied = await raise_page(client, errors.AccessDenied("x"))
        assert "If you need access, contact <a href" in denied.text
        served = await client.get("/branding/logo")
        assert served.content == PNG and served.headers["content-type"] == "image/png"
        css = (await client.get("/branding.css")).text
    # Yellow: black text on buttons; links darkened until they are readable on white.
    assert "--accent:#ffcc00" in css and "--on-accent:#111111" in css
    link = re.search(r"--link:(#[0-9a-f]{6})", css)
    assert link and contrast(link.group(1), "#ffffff") >= 4.5


def test_readable_text_colour_for_any_primary_colour() -> None:
    for colour in ("#000000", "#ffffff", "#2b59c3", "#ffcc00", "#00ff00", "#777777"):
        brand = Branding.from_settings(settings_with(primary_colour=colour).branding)
        assert contrast(brand.on_primary, colour) >= 4.5 or colour == "#777777"
        assert contrast(brand.link_light, "#ffffff") >= 4.5
        assert contrast(brand.link_dark, "#1d2230") >= 4.5


async def test_logo_url_origin_joins_the_csp_img_src() -> None:
    settings = settings_with(logo_url="https://cdn.acme.example/brand/logo.svg")
    async with client_for(settings) as client:
        page = await client.get("/")
    assert 'src="https://cdn.acme.example/brand/logo.svg"' in page.text
    csp = page.headers["content-security-policy"]
    assert "img-src 'self' data: https://cdn.acme.example;" in csp
    assert "script-src" not in csp and "default-src 'none'" in csp


@pytest.mark.parametrize(
    ("branding", "problem"),
    [
        ({"logo_file": "/no/such/logo.png"}, "branding.logo_file: no such file"),
        ({"logo_file": "/etc/passwd"}, "branding.logo_file: '/etc/passwd' must be a"),
        ({"logo_url": "http://cdn.example/logo.png"}, "branding.logo_url: must be an absolute"),
        ({"logo_url": "https://a.example/l.png", "logo_file": "/x.png"}, "not both"),
        ({"primary_colour": "red"}, "branding.primary_colour"),
        ({"support_url": "javascript:alert(1)"}, "branding.support_url: must be an https://"),
        ({"support_url": "mailto:nobody"}, "branding.support_url: not a valid mailto"),
        ({"colour": "#ffffff"}, "branding.colour: unknown key"),
    ],
)
def test_branding_config_problems_are_reported(branding: dict[str, str], problem: str) -> None:
    from tests.test_config import problems_of

    data = minimal()
    data["branding"] = branding
    assert any(problem in p for p in problems_of(data)), problems_of(data)
