"""The composition root: the only place that builds clients, stores, front doors and
connectors. Handlers (``gateway/web/handlers.py``) read them from ``app.state.services``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from gateway.auth.base import FrontDoor
from gateway.auth.oidc import OidcFrontDoor
from gateway.auth.saml import SamlFrontDoor
from gateway.auth.session import SessionManager
from gateway.budget import Budget
from gateway.connectors import CONNECTORS
from gateway.connectors._http import LmsHttp, build_client
from gateway.connectors.base import LifecycleCapable
from gateway.errors import GatewayError
from gateway.http_transport import AiohttpTransport
from gateway.limits import PendingLogins
from gateway.links import RecentLinks
from gateway.observability import Metrics, request_id_var
from gateway.provisioning import Provisioner
from gateway.scim import routes as scim_routes
from gateway.scim.service import ScimService
from gateway.services import AppRuntime, Services
from gateway.settings import HttpSettings, OidcIdpSettings, Settings
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.tls import ClientContexts, effective_trust
from gateway.web import branding, embed_handlers, handlers, operator, responses
from gateway.web.pages import STATIC_DIR, Pages

log = logging.getLogger("gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def build_store(settings: Settings) -> Store:
    if settings.store.backend == "redis":
        from gateway.store.redis import RedisStore  # only deployments with Redis import it

        st = settings.store
        url = None if st.sentinels else (st.url or "redis://127.0.0.1:6379/0")
        tls = st.sentinel_tls if st.sentinels else bool(url and url.startswith("rediss:"))
        return RedisStore(
            url,
            password=st.password.reveal() if st.password else None,
            key_prefix=st.key_prefix,
            # [gateway] ca_file covers every outgoing TLS connection, Redis's included.
            tls_ca_file=st.tls_ca_file or (settings.gateway.ca_file if tls else None),
            username=st.username,
            tls_cert_file=st.tls_cert_file,
            tls_key_file=st.tls_key_file,
            sentinels=st.sentinels,
            sentinel_service=st.sentinel_service,
            sentinel_username=st.sentinel_username,
            sentinel_password=st.sentinel_password.reveal() if st.sentinel_password else None,
            sentinel_tls=st.sentinel_tls,
        )
    return MemoryStore(max_entries=settings.store.memory_max_entries)


def build_services(settings: Settings, store: Store | None = None) -> Services:
    """Build every long-lived part from settings (no I/O: that happens in the lifespan)."""
    gw = settings.gateway
    store = store if store is not None else build_store(settings)
    metrics = Metrics()
    public = gw.public_url.rstrip("/")
    own_host = urlsplit(public).netloc
    # One SSL context per distinct trust setting (gateway/tls.py), shared by every client.
    contexts = ClientContexts()
    # IdPs (discovery, JWKS, token, userinfo, SAML metadata) that trust the same CAs share
    # one connection pool; each IdP's client carries its own timeouts.
    idp_pools: dict[int, AiohttpTransport] = {}
    clients: list[httpx.AsyncClient] = []
    front_doors: dict[str, FrontDoor] = {}
    for name, idp in settings.idp.items():
        tls = contexts.get(*effective_trust(idp.ca_file, idp.ca_mode, gw))
        pool = idp_pools.get(id(tls))
        if pool is None:
            pool = idp_pools[id(tls)] = AiohttpTransport(verify=tls, max_connections=200)
        idp_http = HttpSettings(connect_timeout=idp.connect_timeout, read_timeout=idp.read_timeout)
        idp_client = build_client(idp_http, verify=tls, transport=pool)
        clients.append(idp_client)
        if isinstance(idp, OidcIdpSettings):
            front_doors[name] = OidcFrontDoor(
                name,
                idp,
                idp_client,
                store,
                f"{public}/auth/{name}/callback",
                metrics,
                dev_mode=gw.dev_mode,
                login_timeout=gw.login_timeout_seconds,
            )
        else:
            front_doors[name] = SamlFrontDoor(
                name,
                idp,
                idp_client,
                store,
                f"{public}/auth/{name}/acs",
                f"{public}/auth/{name}/metadata",
                metrics,
                dev_mode=gw.dev_mode,
                login_timeout=gw.login_timeout_seconds,
            )
    apps: dict[str, AppRuntime] = {}
    for name, app in settings.app.items():
        connector_settings = getattr(app, app.connector)
        http_settings = connector_settings.http
        tls = contexts.get(*effective_trust(http_settings.ca_file, http_settings.ca_mode, gw))
        client = build_client(http_settings, verify=tls)
        clients.append(client)
        budget = Budget(name, app.budget, store)
        http = LmsHttp(name, client, budget, metrics)
        connector = CONNECTORS[app.connector](name, app, http, dev_mode=gw.dev_mode)
        provisioner = Provisioner(name, app, connector, store, metrics, budget=budget)
        apps[name] = AppRuntime(name, app, connector, provisioner, budget)
    relevant_groups = {
        group
        for app in settings.app.values()
        for group in (*app.required_groups, *app.group_map, *app.role_map)
    }
    sessions = SessionManager(
        gw.signing_key.reveal(),
        store,
        secure=gw.cookie_secure,
        lifetime=gw.session_lifetime_seconds,
        login_timeout=gw.login_timeout_seconds,
        relevant_groups=relevant_groups,
    )
    pending_logins = PendingLogins(
        store,
        window=gw.login_timeout_seconds,
        max_total=gw.max_pending_logins,
        max_per_client=gw.max_pending_logins_per_client,
    )
    scim = build_scim(settings, apps)
    return Services(
        settings=settings,
        store=store,
        metrics=metrics,
        sessions=sessions,
        pages=Pages(
            settings.branding, default_language=gw.default_language, secure=gw.cookie_secure
        ),
        front_doors=front_doors,
        apps=apps,
        own_host=own_host,
        pending_logins=pending_logins,
        clients=clients,
        scim=scim,
        links=RecentLinks(gw.signing_key.reveal(), store),
    )


def build_scim(settings: Settings, apps: dict[str, AppRuntime]) -> dict[str, ScimService]:
    """SCIM Users for every app an IdP provisions over SCIM and whose connector can."""
    provisioned = {a for idp in settings.idp.values() if idp.scim for a in idp.scim.apps}
    result: dict[str, ScimService] = {}
    for name in sorted(provisioned & set(apps)):
        runtime = apps[name]
        if isinstance(runtime.connector, LifecycleCapable):
            result[name] = ScimService(name, runtime.settings, runtime.connector,
                                       runtime.provisioner, dict(settings.idp))
        else:
            log.warning("app %s: connector %s cannot provision over SCIM", name,
                        runtime.settings.connector)
    return result


class RequestContext:
    """Pure ASGI middleware: request id on every log line and response, and the security
    headers every page gets unless a handler set its own (embed pages set frame-ancestors)."""

    def __init__(self, app: ASGIApp, *, secure: bool, img_sources: tuple[str, ...] = ()) -> None:
        self.app = app
        self.secure = secure
        # [branding] logo_url: its origin may serve the pages' logo (and nothing else).
        images = " ".join(("'self'", "data:", *img_sources))
        self.csp = (
            f"default-src 'none'; style-src 'self'; img-src {images}; "
            "frame-ancestors 'none'; base-uri 'none'"
        ).encode()
        # Built once: the same list serves every response.
        self._default_headers = tuple(self._defaults())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in self._default_headers:
                    # A page that set its own CSP (embed pages: frame-ancestors <portals>)
                    # must not be contradicted by X-Frame-Options: DENY.
                    framing_set = (
                        name == b"x-frame-options" and b"content-security-policy" in present
                    )
                    if name not in present and not framing_set:
                        headers.append((name, value))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            request_id_var.reset(token)

    def _defaults(self) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-security-policy", self.csp),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
        ]
        if self.secure:
            headers.append((b"strict-transport-security", b"max-age=31536000"))
        return headers


def create_app(settings: Settings, *, store: Store | None = None) -> Starlette:
    """The ASGI application for ``settings``."""
    services = build_services(settings, store)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for door in services.front_doors.values():
            await door.start()
        # An evicting Redis can silently drop replay-cache and session entries: say so loudly
        # at start (and in detailed readiness), but keep serving.
        for problem in await services.store.health_problems():
            log.warning("%s", problem)
        try:
            yield
        finally:
            for door in services.front_doors.values():
                await door.aclose()
            for runtime in services.apps.values():
                await runtime.connector.aclose()
            for client in services.clients:
                await client.aclose()
            await services.store.aclose()

    routes = [
        *handlers.routes(),
        *operator.public_routes(),
        *embed_handlers.routes(),
        *scim_routes.routes(),
        *branding.routes(settings.branding),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                RequestContext,
                secure=settings.gateway.cookie_secure,
                img_sources=branding.img_sources(settings.branding),
            )
        ],
        exception_handlers={
            GatewayError: responses.gateway_error,
            # No route (404) or wrong method (405): styled pages; JSON under /api/ and /scim/.
            HTTPException: responses.http_error,
            Exception: responses.internal_error,
        },
        lifespan=lifespan,
    )
    app.state.services = services
    return app


def create_operator_app(app: Starlette) -> Starlette:
    """The operator listener (``[operator] port``) for the gateway ``app``: /metrics and
    detailed /readyz over the same services. It has no lifespan: ``app``'s runs it all."""
    services: Services = app.state.services
    listener = Starlette(
        routes=operator.operator_routes(),
        middleware=[Middleware(RequestContext, secure=False)],
        exception_handlers={
            GatewayError: responses.gateway_error,
            Exception: responses.internal_error,
        },
    )
    listener.state.services = services
    return listener


__all__ = ["AppRuntime", "Services", "create_app", "create_operator_app"]
