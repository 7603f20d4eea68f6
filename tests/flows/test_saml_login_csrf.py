"""Login CSRF and session swap over SAML, end to end through the demo stack (real HTTP on
127.0.0.1: gateway, demo SAML IdP, SkyPrep simulator).

The attack: an attacker signs in at the IdP as themself, keeps the SAMLResponse the IdP's
page would post, and makes a victim's browser post it (an auto-submitting form on any web
page). Before the fix the gateway accepted it and the victim worked in the attacker's LMS
account; an IdP-initiated response replaced the victim's session without a word.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.sandbox.demo import DemoStack
from tests.flows.agent import Form, choose_employee, forms_of

ALICE = "emp-1001"  # Alice Anderson
BOB = "emp-1002"  # Bob Brown


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


@pytest.fixture
async def attacker() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


async def response_form(client: httpx.AsyncClient, start: str, sub: str) -> Form:
    """Go as far as the IdP's auto-post page; return the form a browser would post."""
    page = await client.get(start, follow_redirects=True)
    (choose,) = forms_of(page)
    posted = await client.post(choose.action, data={**choose.fields, "sub": sub})
    (form,) = [f for f in forms_of(posted) if "SAMLResponse" in f.fields]
    return form


def sets_session(response: httpx.Response) -> bool:
    return any(
        "gw_session=" in value
        for r in (*response.history, response)
        for key, value in r.headers.multi_items()
        if key == "set-cookie"
    )


def same_origin(demo: DemoStack) -> dict[str, str]:
    """What a browser sends with a form posted from one of the gateway's own pages."""
    return {"Origin": demo.gateway_url, "Sec-Fetch-Site": "same-origin"}


async def test_attackers_sp_initiated_response_posted_by_victim_is_refused(
    demo: DemoStack, browser: httpx.AsyncClient, attacker: httpx.AsyncClient
) -> None:
    form = await response_form(attacker, f"{demo.gateway_url}/login/skyprep?idp=demo-saml", BOB)
    calls = demo.skyprep.calls.count()
    # The victim's browser never started this login: it has no binding cookie.
    posted = await browser.post(form.action, data=form.fields)
    assert posted.status_code == 400, posted.text[:400]
    assert "another browser" in posted.text and "start again" in posted.text
    assert "location" not in posted.headers
    assert not sets_session(posted) and "gw_session" not in browser.cookies
    assert demo.skyprep.calls.count() == calls
    # The pending request was consumed: the attacker cannot use it afterwards either.
    again = await attacker.post(form.action, data=form.fields)
    assert again.status_code in (400, 401) and not sets_session(again)
    assert demo.skyprep.calls.count() == calls


async def test_sp_initiated_sign_in_from_the_starting_browser_still_works(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    form = await response_form(browser, f"{demo.gateway_url}/login/skyprep?idp=demo-saml", BOB)
    landed = await browser.post(form.action, data=form.fields, follow_redirects=True)
    assert landed.status_code == 200, landed.text[:400]
    assert "Signed in to SkyPrep as Bob Brown" in landed.text
    assert sets_session(landed)


async def held_confirmation(demo: DemoStack, client: httpx.AsyncClient, sub: str) -> httpx.Response:
    """An IdP-initiated sign-in up to the gateway's confirmation page."""
    page = await client.get(f"{demo.saml_url}/idp-initiated")
    (form,) = forms_of(page)
    posted = await client.post(form.action, data={**form.fields, "sub": sub})
    (saml,) = [f for f in forms_of(posted) if "SAMLResponse" in f.fields]
    return await client.post(saml.action, data=saml.fields, follow_redirects=True)


async def test_idp_initiated_asks_before_signing_in(
    demo: DemoStack, browser: httpx.AsyncClient, attacker: httpx.AsyncClient
) -> None:
    calls = demo.skyprep.calls.count()
    page = await held_confirmation(demo, browser, BOB)
    assert page.status_code == 200, page.text[:400]
    assert str(page.url) == f"{demo.gateway_url}/auth/demo-saml/confirm"
    assert "Continue to SkyPrep (demo) as bob.brown@" in page.text
    assert "You are signed in as" not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # Nothing happened yet: no session, no LMS call.
    assert not sets_session(page) and "gw_session" not in browser.cookies
    assert demo.skyprep.calls.count() == calls
    (form,) = forms_of(page)
    assert form.method == "post" and form.action == str(page.url)
    continue_ = {**form.fields, "action": "continue"}

    # Another client (no binding cookie) with the very same form: refused, nothing consumed.
    stolen = await attacker.post(form.action, data=continue_, headers=same_origin(demo))
    assert stolen.status_code == 400 and not sets_session(stolen)
    assert demo.skyprep.calls.count() == calls
    # A cross-site post of the form from the right browser: refused too.
    cross = await browser.post(
        form.action,
        data=continue_,
        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 400 and not sets_session(cross)

    binding = dict(browser.cookies)
    landed = await browser.post(
        form.action, data=continue_, headers=same_origin(demo), follow_redirects=True
    )
    assert landed.status_code == 200, landed.text[:400]
    assert "Signed in to SkyPrep as Bob Brown" in landed.text
    assert sets_session(landed)
    assert demo.skyprep.calls.count() > calls

    # Replay: the same form again, even with the binding cookie put back.
    calls = demo.skyprep.calls.count()
    browser.cookies.update(binding)
    replay = await browser.post(form.action, data=continue_, headers=same_origin(demo))
    assert replay.status_code == 400, replay.text[:400]
    assert "location" not in replay.headers and not sets_session(replay)
    assert demo.skyprep.calls.count() == calls


async def test_idp_initiated_for_someone_else_names_both_people(
    demo: DemoStack, browser: httpx.AsyncClient
) -> None:
    signed_in = await choose_employee(
        browser,
        await browser.get(f"{demo.gateway_url}/login/skyprep?idp=demo-saml", follow_redirects=True),
        ALICE,
    )
    assert "Alice Anderson" in signed_in.text
    session = browser.cookies.get("gw_session")
    calls = demo.skyprep.calls.count()
    page = await held_confirmation(demo, browser, BOB)
    assert page.status_code == 200, page.text[:400]
    assert "You are signed in as alice.anderson@" in page.text
    assert "Continue as bob.brown@" in page.text
    assert browser.cookies.get("gw_session") == session  # not replaced
    assert demo.skyprep.calls.count() == calls
    (form,) = forms_of(page)

    cancelled = await browser.post(
        form.action, data={**form.fields, "action": "cancel"}, headers=same_origin(demo)
    )
    assert cancelled.status_code == 200 and "Sign-in cancelled" in cancelled.text
    assert browser.cookies.get("gw_session") == session
    again = await browser.get(f"{demo.gateway_url}/login/skyprep", follow_redirects=True)
    assert "Alice Anderson" in again.text
    assert demo.skyprep.calls.count() == calls + 1  # only Alice's own relaunch

    # After Cancel the held sign-in is gone.
    page = await browser.get(form.action)
    assert page.status_code == 400
