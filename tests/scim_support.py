"""Shared pieces of the SCIM tests: a demo stack with room in its LMS budget, a SCIM client
over it, and request bodies shaped the way Entra ID and Okta send them."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx

from gateway.app import create_app
from gateway.sandbox.demo import SCIM_TOKENS, DemoStack, start_demo
from gateway.settings import Settings

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
APPS = ("skyprep", "damstra", "litmos")


@contextlib.asynccontextmanager
async def roomy_demo(calls_per_minute: int = 6000) -> AsyncIterator[DemoStack]:
    """The demo with a budget big enough that SCIM is never held back by the reserve."""
    stack = await start_demo(0, calls_per_minute=calls_per_minute)
    try:
        yield stack
    finally:
        await stack.stop()


def scim(stack: DemoStack, app: str, idp: str = "demo-oidc", token: str | None = None,
         *, gateway: Any = None) -> httpx.AsyncClient:
    """A SCIM client of ``idp`` for ``app`` (over the network, or in-process ``gateway``)."""
    headers = {
        "Authorization": f"Bearer {token if token is not None else SCIM_TOKENS[idp]}",
        "Content-Type": "application/scim+json",
        "Accept": "application/scim+json",
    }
    if token == "":
        del headers["Authorization"]  # no credential at all
    transport = httpx.ASGITransport(app=gateway) if gateway is not None else None
    return httpx.AsyncClient(base_url=f"{stack.gateway_url}/scim/v2/{app}", headers=headers,
                             transport=transport, timeout=20)


@contextlib.asynccontextmanager
async def gateway_with(stack: DemoStack, settings: Settings) -> AsyncIterator[Any]:
    """A second gateway (in-process) over the demo's simulators with other settings."""
    gateway = create_app(settings)
    try:
        yield gateway
    finally:
        for client in gateway.state.services.clients:
            await client.aclose()


def replace_idp_scim(settings: Settings, idp: str, **changes: Any) -> Settings:
    current = settings.idp[idp]
    assert current.scim is not None
    new = dataclasses.replace(current, scim=dataclasses.replace(current.scim, **changes))
    return dataclasses.replace(settings, idp={**settings.idp, idp: new})


def entra_user(email: str, given: str, family: str, *, number: str | None = None,
               active: bool = True) -> dict[str, Any]:
    """A POST /Users as Entra ID's default attribute mappings send it."""
    body: dict[str, Any] = {
        "schemas": [USER, ENTERPRISE],
        "externalId": email.partition("@")[0],
        "userName": email,
        "active": active,
        "displayName": f"{given} {family}",
        "emails": [{"primary": True, "type": "work", "value": email}],
        "name": {"formatted": f"{given} {family}", "familyName": family, "givenName": given},
        "title": "Operator",
        "roles": [],
    }
    if number is not None:
        body[ENTERPRISE] = {"employeeNumber": number, "department": "Ops"}
    return body


def okta_user(email: str, given: str, family: str, *, active: bool = True) -> dict[str, Any]:
    """A POST /Users as Okta's SCIM 2.0 template sends it (password included, ignored)."""
    return {
        "schemas": [USER],
        "userName": email,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"primary": True, "value": email, "type": "work"}],
        "displayName": f"{given} {family}",
        "locale": "en-US",
        "externalId": "00u1a2b3c4d5e6f7g8h9",
        "groups": [],
        "password": "Not-a-real-password-1",
        "active": active,
    }


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(operations)}


def user_filter(email: str) -> dict[str, str]:
    return {"filter": f'userName eq "{email}"'}
