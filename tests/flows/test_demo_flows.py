"""End to end through the demo stack over real HTTP on 127.0.0.1: browser -> gateway -> demo
IdP (OIDC or SAML) -> gateway -> LMS simulator, as a person clicking would go."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.sandbox.demo import DemoStack
from tests.flows.agent import forms_of, hosts_visited, sign_in

ALICE = "emp-1001"  # Staff, Managers
BOB = "emp-1002"  # Staff, Safety (has Damstra lessons)
DANA = "ctr-2001"  # Contractors only: denied by the demo's access rule




@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


def netloc(url: str) -> str:
    return urlsplit(url).netloc


async def test_oidc_sign_in_lands_in_skyprep_as_the_right_employee(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    page = await sign_in(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", ALICE)
    assert page.status_code == 200
    assert "Alice Anderson" in page.text and "alice.anderson@example.com" in page.text
    assert "All staff" in page.text and "Managers" in page.text
    assert netloc(str(page.url)) == netloc(demo.skyprep.login_base_url)
    # the hop into the LMS: 303, never cached, never leaking the link as a Referer
    hop = page.history[-1]
    assert hop.status_code == 303
    assert hop.headers["cache-control"] == "no-store"
    assert hop.headers["referrer-policy"] == "no-referrer"
    cookie = next(
        v for k, v in hop.headers.multi_items() if k == "set-cookie" and v.startswith("gw_session=")
    )
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")


async def test_second_click_skips_the_idp(demo: DemoStack, browser: httpx.AsyncClient) -> None:
    await sign_in(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", ALICE)
    again = await browser.get(f"{demo.gateway_url}/login/skyprep", follow_redirects=True)
    assert "Alice Anderson" in again.text
    assert netloc(demo.oidc_url) not in hosts_visited(again)


async def test_each_sign_in_gets_a_new_session_value(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", ALICE)
    first = browser.cookies.get("gw_session")
    await sign_in(browser, f"{demo.gateway_url}/auth/demo-oidc/login?app=skyprep", ALICE)
    assert browser.cookies.get("gw_session") not in (None, first)


async def test_saml_sign_in_lands_in_skyprep(demo: DemoStack, browser: httpx.AsyncClient) -> None:
    page = await sign_in(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-saml", BOB)
    assert page.status_code == 200, page.text[:400]
    assert "Bob Brown" in page.text and "Safety team" in page.text


async def test_app_with_two_idps_offers_a_choice(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    page = await browser.get(f"{demo.gateway_url}/login/litmos")
    assert page.status_code == 200
    assert "Demo company (OpenID Connect)" in page.text and "Demo company (SAML)" in page.text


async def test_denied_employee_gets_a_403_that_reveals_no_rule(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    page = await sign_in(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", DANA)
    assert page.status_code == 403
    assert "not allowed to use this application" in page.text
    assert "Staff" not in page.text and "group" not in page.text.lower()
    assert re.search(r"reference: <code>[0-9a-f]{16}</code>", page.text)
    assert demo.skyprep.calls.count() == 0


async def test_litmos_deep_link_lands_in_the_course(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    course = next(iter(demo.litmos.courses.values()))
    page = await sign_in(
        browser,
        f"{demo.gateway_url}/login/litmos?idp=demo-oidc&target=course:{course.OriginalId}",
        ALICE,
    )
    assert page.status_code == 200, page.text[:400]
    assert "Alice Anderson" in page.text and course.Name in page.text


async def test_unknown_target_form_is_refused(demo: DemoStack, browser: httpx.AsyncClient) -> None:
    page = await browser.get(f"{demo.gateway_url}/login/litmos?target=https://evil.example/")
    assert page.status_code == 400
    assert "evil.example" not in page.text


async def test_damstra_sign_in_reuses_the_existing_account(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    users_before = len(demo.damstra.users)
    page = await sign_in(browser, f"{demo.gateway_url}/login/damstra?idp=demo-oidc", BOB)
    assert page.status_code == 200, page.text[:400]
    assert "Bob Brown" in page.text
    assert len(demo.damstra.users) == users_before


@pytest.mark.parametrize(
    ("app", "sim"), [("skyprep", "skyprep"), ("damstra", "damstra"), ("litmos", "litmos")]
)
async def test_returning_sign_in_costs_one_lms_call(
    demo: DemoStack, browser: httpx.AsyncClient, app: str, sim: str
) -> None:
    await sign_in(browser, f"{demo.gateway_url}/login/{app}?idp=demo-oidc", ALICE)
    calls = getattr(demo, sim).calls
    before = calls.count()
    again = await browser.get(f"{demo.gateway_url}/login/{app}", follow_redirects=True)
    assert "Alice Anderson" in again.text
    # Damstra magic links are reusable: a click seconds later (reuse_links = "repeat_clicks",
    # the default) gets the link minted a moment ago, without an LMS call. The others: one.
    assert calls.count() - before == (0 if app == "damstra" else 1)


async def test_logout_needs_same_origin_and_csrf_then_ends_the_session(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", ALICE)
    cross = await browser.post(
        f"{demo.gateway_url}/logout", headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 400
    no_token = await browser.post(
        f"{demo.gateway_url}/logout", headers={"Origin": demo.gateway_url}
    )
    assert no_token.status_code == 400
    stolen = browser.cookies.get("gw_session")
    page = await browser.get(f"{demo.gateway_url}/logout")
    (form,) = forms_of(page)
    done = await browser.post(form.action, data=form.fields, headers={"Origin": demo.gateway_url})
    assert done.status_code == 303
    # continues to the IdP's end-session endpoint (configured in the demo)
    assert done.headers["location"].startswith(demo.oidc_url)
    # the old cookie value no longer works, even if someone copied it
    async with httpx.AsyncClient() as thief:
        thief.cookies.set("gw_session", stolen or "", domain="127.0.0.1")
        back = await thief.get(f"{demo.gateway_url}/login/skyprep?idp=demo-oidc")
    assert back.status_code == 303 and back.headers["location"].startswith(demo.oidc_url)


async def test_replayed_callback_is_refused(demo: DemoStack, browser: httpx.AsyncClient) -> None:
    page = await browser.get(
        f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", follow_redirects=True
    )
    (form,) = forms_of(page)
    to_callback = await browser.post(form.action, data={**form.fields, "sub": ALICE})
    callback = to_callback.headers["location"]
    first = await browser.get(callback)
    assert first.status_code == 303
    calls = demo.skyprep.calls.count()
    # Another browser (no session) replaying the spent callback gets the expired page.
    async with httpx.AsyncClient(timeout=20) as other:
        replay = await other.get(callback)
    assert replay.status_code in (400, 401)
    assert "Please try again from the start" in replay.text or "already used" in replay.text
    assert demo.skyprep.calls.count() == calls
    # The browser that landed (Back or Reload onto the callback) carries on with its session
    # at the app of that sign-in; the spent answer itself is not used again.
    again = await browser.get(callback)
    assert again.status_code == 303 and again.headers["location"] == "/login/skyprep"
    assert demo.skyprep.calls.count() == calls


async def test_idp_error_gives_a_friendly_page(demo: DemoStack, browser: httpx.AsyncClient) -> None:
    page = await browser.get(
        f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", follow_redirects=True
    )
    (form,) = forms_of(page)
    cancelled = await browser.post(
        form.action, data={**form.fields, "action": "cancel"}, follow_redirects=True
    )
    assert cancelled.status_code == 401
    assert "Sign-in was not completed" in cancelled.text and "reference" in cancelled.text
    # "Start again" goes back to the app the sign-in was for, not the index of apps.
    assert '<a class="button" href="/login/skyprep">Start again</a>' in cancelled.text
    assert "Traceback" not in cancelled.text and "access_denied" not in cancelled.text
    assert demo.skyprep.calls.count() == 0


async def test_no_secret_reaches_the_logs(
    demo: DemoStack, browser: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    async def remember(request: httpx.Request) -> None:
        seen.append(str(request.url))

    browser.event_hooks["request"] = [remember]
    page = await sign_in(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", ALICE)
    assert "Alice Anderson" in page.text
    apps = demo.settings.app
    secrets = {
        demo.settings.idp["demo-oidc"].client_secret.reveal(),  # type: ignore[union-attr]
        apps["skyprep"].skyprep.api_key.reveal(),  # type: ignore[union-attr]
        apps["litmos"].litmos.api_key.reveal(),  # type: ignore[union-attr]
        apps["damstra"].damstra.access_key.reveal(),  # type: ignore[union-attr]
        demo.settings.gateway.signing_key.reveal(),
    }
    for url in seen:  # the authorization code and login key, as the browser saw them
        for name in ("code", "login_key", "state"):
            match = re.search(rf"[?&]{name}=([^&]+)", url)
            if match:
                secrets.add(match.group(1))
    # httpx/httpcore are the test browser's own loggers here; the gateway silences them
    # (configure_logging) because they print whole URLs.
    logged = "\n".join(
        r.getMessage() + " " + str(getattr(r, "fields", ""))
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))
    )
    assert logged, "expected the flow to log something"
    for secret in secrets:
        assert secret not in logged
    assert "eyJ" not in logged  # no JWT (ID or access token) of any kind
    assert not re.search(r"code_verifier|verifier=", logged)


async def test_metrics_show_sign_ins_lms_calls_and_provisioning(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, f"{demo.gateway_url}/login/damstra?idp=demo-oidc", ALICE)  # created
    await browser.get(f"{demo.gateway_url}/login/damstra", follow_redirects=True)  # returning
    async with httpx.AsyncClient() as other:
        await sign_in(other, f"{demo.gateway_url}/login/skyprep?idp=demo-oidc", DANA)  # denied
    # Metrics are served on the operator listener; the public one answers 404.
    assert (await browser.get(f"{demo.gateway_url}/metrics")).status_code == 404
    text = (await browser.get(f"{demo.operator_url}/metrics")).text
    assert 'gateway_sign_ins_total{app="damstra",idp="demo-oidc",outcome="success"} 2.0' in text
    assert (
        'gateway_sign_ins_total{app="skyprep",idp="demo-oidc",outcome="access_denied"} 1.0' in text
    )
    assert 'gateway_provisioning_actions_total{action="created",app="damstra"} 1.0' in text
    assert re.search(
        r'gateway_lms_calls_total\{app="damstra",operation="[a-z_]+",status="20\d"\} \d', text
    )
    assert 'gateway_lms_call_seconds_bucket{app="damstra"' in text
    assert 'gateway_lms_circuit_open{app="damstra"} 0.0' in text
    assert "gateway_budget_queue_wait_seconds_count" in text
    tokens = re.search(r'gateway_budget_tokens_left\{app="damstra"\} ([0-9.]+)', text)
    assert tokens and 0 <= float(tokens.group(1)) < 10  # the demo's burst is 10


async def test_pages_forbid_framing_and_health_endpoints_answer(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    for path in ("/", "/login/litmos", "/signed-out", "/logout"):
        response = await browser.get(f"{demo.gateway_url}{path}")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
        assert response.headers["x-content-type-options"] == "nosniff"
    assert (await browser.get(f"{demo.gateway_url}/healthz")).text == "ok"
    ready = await browser.get(f"{demo.gateway_url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    missing = await browser.get(f"{demo.gateway_url}/login/no-such-app")
    assert missing.status_code == 404 and "reference" in missing.text
