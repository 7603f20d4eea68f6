"""Pieces shared by the two demo identity providers (``oidc_idp.py`` and ``saml_idp.py``).

* :class:`TtlMap`: bounded, expiring, single-use storage for pending logins and codes.
* :func:`render`: a Jinja2 page (autoescaped) with a strict, nonce-based CSP.
* :func:`read_form`: a size-bounded ``application/x-www-form-urlencoded`` body, each field once.
* :func:`error_page`: the IdP's own error page for a :class:`~gateway.errors.GatewayError`.

Demo and tests only; nothing here is used by ``gateway serve``.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gateway.errors import BadRequest, GatewayError
from gateway.sandbox.employees import EMPLOYEES

V = TypeVar("V")

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("gateway.sandbox", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)

MAX_FORM_BYTES = 16 * 1024


def require_demo_mode(demo_mode: bool, what: str) -> None:
    """Refuse to build a development IdP unless the caller says it is the demo."""
    if demo_mode is not True:
        raise RuntimeError(
            f"{what} is a development identity provider that signs in anyone who clicks a "
            "name; it only runs in demo mode (`gateway demo`)"
        )


class TtlMap(Generic[V]):
    """At most ``max_items`` values, each readable once and only until it expires.

    The oldest entries are dropped when full, so a flood of unfinished logins costs bounded
    memory (the demo is single-process; everything runs on one event loop).
    """

    def __init__(self, ttl: float, max_items: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def add(self, value: V) -> str:
        """Store ``value`` under a new unguessable key and return the key."""
        key = secrets.token_urlsafe(32)
        self._items[key] = (self._clock() + self.ttl, value)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return key

    def pop(self, key: str) -> V | None:
        """The value (removing it), or None when unknown, already used or expired."""
        entry = self._items.pop(key, None)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def get(self, key: str) -> V | None:
        """The value without removing it, or None when unknown or expired."""
        entry = self._items.get(key)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def __len__(self) -> int:
        return len(self._items)


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL (for a CSP source)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def is_absolute_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.fragment


def render(
    template: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` with a fresh CSP nonce (``csp_nonce``) for its style and script.

    No ``form-action``: Chromium applies it to every redirect after a form POST, and a
    sign-in POST here is redirected to the gateway and from there on to the LMS, an origin
    this IdP cannot know (real IdPs leave it unset for the same reason).
    """
    nonce = secrets.token_urlsafe(16)
    html = _ENV.get_template(template).render(csp_nonce=nonce, **context)
    csp = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Content-Security-Policy": csp,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        },
    )


def choose_page(
    *, action: str, txn: str, audience: str, protocol: str,
    cancel: bool = True, email_domain: str | None = None,
) -> HTMLResponse:
    """The "Choose a demo employee" page: one button per employee, posting ``txn`` and ``sub``
    (addresses shown in ``email_domain`` when the IdP issues them there)."""
    return render(
        "choose_employee.html",
        action=action,
        txn=txn,
        audience=audience,
        protocol=protocol,
        employees=[e.at_domain(email_domain) for e in EMPLOYEES],
        cancel=cancel,
    )


def error_page(exc: GatewayError) -> HTMLResponse:
    """The IdP's own error page; shows the operator reason (a demo IdP has no secrets to hide
    in it, and no input is echoed beyond what the reason names)."""
    return render(
        "idp_error.html", status_code=exc.status, title=exc.public, reason=exc.reason
    )


async def gateway_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: a typed error becomes the IdP's error page."""
    assert isinstance(exc, GatewayError)
    return error_page(exc)


async def read_form(request: Request, fields: tuple[str, ...]) -> dict[str, str]:
    """A small urlencoded form, each field at most once; other fields are ignored."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadRequest("form must be application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise BadRequest("form body too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("form body is not valid") from exc
    return single_values(pairs, fields)


def single_values(pairs: list[tuple[str, str]], fields: tuple[str, ...]) -> dict[str, str]:
    """The named fields of ``pairs``; a field given twice is refused (parameter pollution)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        if name not in fields:
            continue
        if name in out:
            raise BadRequest(f"parameter {name} given more than once")
        out[name] = value
    return out
