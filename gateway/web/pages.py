"""Rendering the pages employees see: Jinja2 (autoescaped), in the request's language, with
the company's branding on every page.

One Jinja environment per shipped language, each with that language's gettext catalogue
installed (``jinja2.ext.i18n``, new-style gettext: ``_("... %(app)s", app=x)`` escapes ``x``),
so concurrent requests in different languages never share a translation object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from gateway.settings import BrandingSettings
from gateway.web import i18n
from gateway.web.branding import CSS_PATH, Branding

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
TEMPLATE_DIR = WEB_DIR / "templates"

# Query parameters a language-switcher link keeps: harmless ones a person may have bookmarked.
# Never codes, states or anything else an IdP put into a URL.
_KEPT_PARAMS = ("idp", "target")


def _environment(lang: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        auto_reload=False,
        extensions=["jinja2.ext.i18n"],
    )
    # {% trans %} blocks are written over several lines; their message ids are not.
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_translations(  # type: ignore[attr-defined]
        i18n.load_translations(lang), newstyle=True
    )
    return env


class Pages:
    """Loads templates and catalogues once; renders them into no-store HTML responses."""

    def __init__(
        self,
        branding: BrandingSettings | None = None,
        *,
        default_language: str = i18n.SOURCE_LANGUAGE,
        secure: bool = True,
    ) -> None:
        self.branding = Branding.from_settings(branding or BrandingSettings())
        self._default = default_language
        self._secure = secure
        self._envs = {lang: _environment(lang) for lang in i18n.LANGUAGES}

    def language(self, request: Request) -> str:
        """The language ``request`` is answered in."""
        return i18n.choose(request, self._default, secure=self._secure)[0]

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """``template`` in the request's language; a ``?lang=`` choice is remembered."""
        lang, remember = i18n.choose(request, self._default, secure=self._secure)
        html = (
            self._envs[lang]
            .get_template(template)
            .render(
                lang=lang,
                branding=self.branding,
                branding_css=CSS_PATH,
                languages=_switcher(request, lang, keep_params=status < 400),
                **context,
            )
        )
        response = HTMLResponse(html, status_code=status, headers=headers)
        response.headers["Content-Language"] = lang
        response.headers["Vary"] = "Accept-Language, Cookie"
        if remember:
            response.set_cookie(
                i18n.cookie_name(self._secure),
                lang,
                max_age=i18n.COOKIE_MAX_AGE,
                path="/",
                secure=self._secure,
                httponly=True,
                samesite="lax",
            )
        return response


def _switcher(
    request: Request, current: str, *, keep_params: bool
) -> list[tuple[str, str, str | None]]:
    """(code, name, link or None for the current one) per language; empty where reloading
    the page would repeat something (a POST, an IdP's answer under /auth/). Only a page that
    accepted its parameters keeps them: an error page never echoes what it refused."""
    if request.method != "GET" or request.url.path.startswith("/auth/"):
        return []
    kept = []
    if keep_params:
        kept = [(k, v) for k in _KEPT_PARAMS for v in request.query_params.getlist(k)[:1]]
    links: list[tuple[str, str, str | None]] = []
    for code in i18n.LANGUAGES:
        href = None if code == current else "?" + urlencode([*kept, ("lang", code)])
        links.append((code, i18n.LANGUAGE_NAMES[code], href))
    return links
