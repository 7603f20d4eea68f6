"""The long-lived parts handlers use, built once per process by ``gateway.app`` (the
composition root). Their own module so handlers never import the composition root back."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from gateway.auth.base import FrontDoor
from gateway.auth.session import SessionManager
from gateway.budget import Budget
from gateway.connectors.base import Connector
from gateway.errors import NotFound
from gateway.limits import PendingLogins
from gateway.links import RecentLinks
from gateway.observability import Metrics
from gateway.provisioning import Provisioner
from gateway.scim.service import ScimService
from gateway.settings import AppSettings, Settings
from gateway.store.base import Store
from gateway.web.pages import Pages


@dataclass
class AppRuntime:
    """One configured app with the parts built for it."""

    name: str
    settings: AppSettings
    connector: Connector
    provisioner: Provisioner
    budget: Budget


@dataclass
class Services:
    """Everything handlers need, built once per process by :func:`create_app`."""

    settings: Settings
    store: Store
    metrics: Metrics
    sessions: SessionManager
    pages: Pages
    front_doors: dict[str, FrontDoor]
    apps: dict[str, AppRuntime]
    own_host: str
    pending_logins: PendingLogins
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    # SCIM Users per app, for the apps some IdP provisions over SCIM (gateway/scim).
    scim: dict[str, ScimService] = field(default_factory=dict)
    # Reusable sign-in links kept for repeat sign-ins (gateway/links.py); None: no reuse.
    links: RecentLinks | None = None

    def app(self, name: str) -> AppRuntime:
        runtime = self.apps.get(name)
        if runtime is None:
            raise NotFound(f"unknown app {name[:64]!r}")
        return runtime

    def front_door(self, name: str) -> FrontDoor:
        door = self.front_doors.get(name)
        if door is None:
            raise NotFound(f"unknown IdP {name[:64]!r}")
        return door
