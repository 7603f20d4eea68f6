"""Browser -> gateway -> npm ``oidc-provider`` (a real OpenID provider nobody here wrote) ->
gateway -> SkyPrep simulator, signed in as the right employee with the right groups."""

from __future__ import annotations

import httpx

from tests.flows.stack import gateway_with_skyprep
from tests.support.oidc_op import OidcOp, drive_login


def corp_idp(op: OidcOp):  # type: ignore[no-untyped-def]
    def build(gateway: str) -> dict:
        return {
            "corp": {
                "type": "oidc",
                "issuer": op.issuer,
                "client_id": op.client_id,
                "client_secret": {"env": "CORP_SECRET"},
                "scopes": list(op.scopes),
                "claims": {"employee_number": "employee_number"},
            }
        }

    return build


async def test_full_sign_in_through_a_real_openid_provider(oidc_op: OidcOp) -> None:
    async with (
        gateway_with_skyprep(
            corp_idp(oidc_op), env={"CORP_SECRET": oidc_op.client_secret}
        ) as gateway,
        httpx.AsyncClient(timeout=30) as browser,
    ):
        ready = await browser.get(f"{gateway.url}/readyz")
        assert ready.status_code == 200, ready.text
        start = await browser.get(f"{gateway.url}/login/skyprep")
        assert start.status_code == 303 and start.headers["location"].startswith(oidc_op.issuer)
        callback = await drive_login(browser, start.headers["location"], "ada")
        assert callback.startswith(f"{gateway.url}/auth/corp/callback?")
        page = await browser.get(callback, follow_redirects=True)
        assert page.status_code == 200, page.text[:300]
        assert "Ada Lovelace" in page.text and "ada.lovelace@example.com" in page.text
        assert "Staff" in page.text  # IdP group "staff" mapped by the app's group_map
        user = gateway.skyprep.users["ada.lovelace@example.com"]
        assert (user.first_name, user.last_name) == ("Ada", "Lovelace")
        # the second click stays at the gateway
        again = await browser.get(f"{gateway.url}/login/skyprep")
        assert again.status_code == 303 and not again.headers["location"].startswith(oidc_op.issuer)


async def test_unverified_email_is_not_let_in(oidc_op: OidcOp) -> None:
    async with (
        gateway_with_skyprep(
            corp_idp(oidc_op), env={"CORP_SECRET": oidc_op.client_secret}
        ) as gateway,
        httpx.AsyncClient(timeout=30) as browser,
    ):
        start = await browser.get(f"{gateway.url}/login/skyprep")
        callback = await drive_login(browser, start.headers["location"], "mallory")
        page = await browser.get(callback, follow_redirects=True)
        assert page.status_code == 403
        assert gateway.skyprep.calls.count() == 0
