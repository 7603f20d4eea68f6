"""OidcFrontDoor against a real OpenID provider nobody here wrote (npm ``oidc-provider``)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gateway.auth.base import LoginRequest
from gateway.auth.oidc import OidcFrontDoor
from gateway.errors import AccessDenied, IdpRejected, LoginStateError, ReplayDetected
from gateway.observability import Metrics
from gateway.settings import OidcIdpSettings, Secret
from gateway.store.memory import MemoryStore

if TYPE_CHECKING:
    from tests.support.oidc_op import OidcOp

# Imported as a plugin (not by name) so pytest rewrites its asserts and shares the one
# session-scoped provider with every module that asks for ``oidc_op``.


GATEWAY_PORT = 8443  # any port: the provider matches loopback redirect URIs on any port


def door_for(op: OidcOp, http: httpx.AsyncClient, **extra: object) -> OidcFrontDoor:
    settings = OidcIdpSettings(
        type="oidc", issuer=op.issuer, client_id=op.client_id,
        client_secret=Secret(op.client_secret), scopes=op.scopes, **extra,  # type: ignore[arg-type]
    )
    return OidcFrontDoor("corp", settings, http, MemoryStore(), op.redirect_uri(GATEWAY_PORT),
                         Metrics(), dev_mode=True)


@pytest.mark.parametrize("username", ["ada", "grace"])
async def test_sign_in_at_real_provider_yields_the_employee(oidc_op: OidcOp, username: str) -> None:
    async with httpx.AsyncClient() as http, httpx.AsyncClient() as browser:
        door = door_for(oidc_op, http)
        await door.start()
        assert door.ready
        redirect = await door.begin(LoginRequest(app="skyprep", target="/courses"))
        callback = await oidc_op.drive_login(browser, redirect.url, username)
        assert callback.startswith(oidc_op.redirect_uri(GATEWAY_PORT) + "?")
        params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
        assert params["iss"] == oidc_op.issuer  # RFC 9207, checked by the door
        identity, request = await door.complete(params, redirect.browser_token)
    employee = oidc_op.employees[username]
    assert identity.subject == employee["sub"]
    assert identity.email == employee["email"]
    assert (identity.given_name, identity.family_name) == (
        employee["given_name"], employee["family_name"])
    assert identity.display_name == employee["name"]
    assert identity.employee_number == employee["employee_number"]
    assert identity.groups == tuple(employee["groups"])
    assert request == LoginRequest(app="skyprep", target="/courses")


async def test_unverified_email_refused(oidc_op: OidcOp) -> None:
    async with httpx.AsyncClient() as http, httpx.AsyncClient() as browser:
        door = door_for(oidc_op, http)
        redirect = await door.begin(LoginRequest(app="skyprep"))
        callback = await oidc_op.drive_login(browser, redirect.url, "mallory")
        params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
        # email_verified is false at the provider: a clear refusal (claims.py, OIDC Core 5.1),
        # after the ID token and the token response passed every check.
        with pytest.raises(AccessDenied, match="not verified"):
            await door.complete(params, redirect.browser_token)


async def test_replayed_callback_refused_and_foreign_browser_refused(oidc_op: OidcOp) -> None:
    async with httpx.AsyncClient() as http, httpx.AsyncClient() as browser:
        door = door_for(oidc_op, http)
        redirect = await door.begin(LoginRequest(app="skyprep"))
        params = dict(parse_qs(urlsplit(
            await oidc_op.drive_login(browser, redirect.url, "ada")).query).items())
        flat = {k: v[0] for k, v in params.items()}
        await door.complete(flat, redirect.browser_token)
        with pytest.raises(ReplayDetected):
            await door.complete(flat, redirect.browser_token)
        other = await door.begin(LoginRequest(app="skyprep"))
        flat = {k: v[0] for k, v in parse_qs(urlsplit(
            await oidc_op.drive_login(browser, other.url, "grace")).query).items()}
        with pytest.raises(LoginStateError):
            await door.complete(flat, "a-different-browser")


async def test_user_abort_at_provider_is_friendly_idp_rejection(oidc_op: OidcOp) -> None:
    async with httpx.AsyncClient() as http, httpx.AsyncClient() as browser:
        door = door_for(oidc_op, http)
        redirect = await door.begin(LoginRequest(app="skyprep"))
        # prompt=none without a session at the provider: it answers error=login_required.
        url = str(httpx.URL(redirect.url).copy_merge_params({"prompt": "none"}))
        answer = await browser.get(url, follow_redirects=False)
        location = answer.headers["location"]
        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        assert params["error"] == "login_required"
        with pytest.raises(IdpRejected) as caught:
            await door.complete(params, redirect.browser_token)
    assert "sign in again" in caught.value.public


async def test_end_session_url_points_at_provider(oidc_op: OidcOp) -> None:
    async with httpx.AsyncClient() as http:
        door = door_for(oidc_op, http, end_session=True)
        await door.start()
        url = door.end_session_url(f"http://127.0.0.1:{GATEWAY_PORT}/")
    assert url is not None and url.startswith(f"{oidc_op.issuer}/session/end?")
