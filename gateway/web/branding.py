"""``[branding]`` made visible: company name, logo, colours and support contact on every
employee page.

The colours reach the pages as CSS custom properties in ``GET /branding.css`` (a stylesheet of
our own origin, so the pages' CSP keeps ``style-src 'self'`` without inline styles). Text on
the primary colour is black or white, whichever contrasts more; links use the primary colour
only where it reaches WCAG AA (4.5:1) on the card, else the nearest shade that does.
A ``logo_file`` is served at ``GET /branding/logo``; a ``logo_url``'s origin is added to the
pages' CSP ``img-src`` (:func:`img_sources`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.config_rules import LOGO_TYPES
from gateway.errors import NotFound
from gateway.settings import BrandingSettings

LOGO_PATH = "/branding/logo"
CSS_PATH = "/branding.css"
_LIGHT_CARD = "#ffffff"  # .card backgrounds in gateway.css
_DARK_CARD = "#1d2230"
_AA = 4.5


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def luminance(colour: str) -> float:
    """WCAG 2.x relative luminance of ``#rrggbb``."""

    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(one: str, other: str) -> float:
    """WCAG contrast ratio (1 to 21)."""
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _mix(colour: str, towards: str, share: float) -> str:
    mixed = (round(a + (b - a) * share) for a, b in zip(_rgb(colour), _rgb(towards), strict=True))
    return "#" + "".join(f"{v:02x}" for v in mixed)


def readable_on(background: str, colour: str) -> str:
    """``colour``, or the nearest shade of it (towards black or white) that reaches 4.5:1 on
    ``background``."""
    target = "#000000" if luminance(background) > 0.5 else "#ffffff"
    for step in range(21):
        shade = _mix(colour, target, step / 20)
        if contrast(shade, background) >= _AA:
            return shade
    return target


@dataclass(frozen=True, slots=True)
class Branding:
    """What the templates read (``branding.*``)."""

    company_name: str | None
    logo_src: str | None
    support_text: str | None
    support_url: str | None
    primary: str
    on_primary: str
    link_light: str
    link_dark: str

    @classmethod
    def from_settings(cls, settings: BrandingSettings) -> Branding:
        primary = settings.primary_colour.lower()
        on_primary = (
            "#ffffff" if contrast(primary, "#ffffff") >= contrast(primary, "#111111") else "#111111"
        )
        logo = LOGO_PATH if settings.logo_file else settings.logo_url
        return cls(
            company_name=settings.company_name,
            logo_src=logo,
            support_text=settings.support_text,
            support_url=settings.support_url,
            primary=primary,
            on_primary=on_primary,
            link_light=readable_on(_LIGHT_CARD, primary),
            link_dark=readable_on(_DARK_CARD, primary),
        )

    def css(self) -> str:
        return (
            ":root{"
            f"--accent:{self.primary};--on-accent:{self.on_primary};"
            f"--link:{self.link_light};--link-dark:{self.link_dark}"
            "}\n"
        )


def img_sources(settings: BrandingSettings) -> tuple[str, ...]:
    """Origins the pages' CSP ``img-src`` must allow besides ``'self'`` (the logo URL's)."""
    if settings.logo_url is None:
        return ()
    parts = urlsplit(settings.logo_url)
    return (f"https://{parts.netloc}",)


def routes(settings: BrandingSettings) -> list[BaseRoute]:
    """``GET /branding.css`` and, with ``logo_file``, ``GET /branding/logo``."""
    css = Branding.from_settings(settings).css()
    # Pages are no-store; this changes only with the configuration, so a browser may keep it.
    cache = {"Cache-Control": "public, max-age=3600"}

    async def stylesheet(request: Request) -> Response:
        return Response(css, media_type="text/css", headers=cache)

    logo_bytes: list[bytes] = []  # read once, at the first request (no I/O at build time)

    async def logo(request: Request) -> Response:
        path = settings.logo_file
        if path is None:
            raise NotFound("no branding logo_file configured")
        if not logo_bytes:
            try:
                logo_bytes.append(await anyio.Path(path).read_bytes())
            except OSError:
                raise NotFound(f"branding logo_file {path!r} cannot be read") from None
        media_type = LOGO_TYPES[PurePath(path).suffix.lower()]
        # An SVG is a document too: the default CSP (default-src 'none') keeps scripts in it
        # from running when it is opened directly; as an <img> it never runs them anyway.
        return Response(logo_bytes[0], media_type=media_type, headers=cache)

    return [
        Route(CSS_PATH, stylesheet, methods=["GET"]),
        Route(LOGO_PATH, logo, methods=["GET"]),
    ]
