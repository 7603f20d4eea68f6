"""Languages of the employee pages: gettext catalogues (Babel) and the choice per request.

Catalogues live in ``gateway/locale/<lang>/LC_MESSAGES/messages.po`` (English is the source
language: its message ids are the English texts, so it has no catalogue). They are compiled
**at start-up, in memory, with Babel** (``read_po`` + ``write_mo``) when :class:`Pages` is
built, rather than shipped as ``.mo`` files compiled at build time: a few milliseconds once per
process, no build hook in the packaging, and no compiled file that can go stale next to its
``.po`` (a fuzzy or empty entry is simply not used). ``tests/test_i18n.py`` fails when a
message id lacks a translation in any language or a catalogue keeps an id no page uses.

Choice, first that applies: a ``?lang=xx`` on the request (then remembered in a small cookie
that authenticates nothing), that cookie, the browser's ``Accept-Language`` (q-values honoured,
matched with Babel's ``negotiate_locale``), ``[gateway] default_language``.
Log messages are never translated: operators search them.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from babel.core import negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from starlette.requests import Request

LANGUAGES = ("en", "de", "fr", "es")
SOURCE_LANGUAGE = "en"
# Each language named in itself: what a person looks for in a language switcher.
LANGUAGE_NAMES = {"en": "English", "de": "Deutsch", "fr": "Français", "es": "Español"}
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "messages"
# Remembers a ``?lang=`` choice for a year; it selects a language and nothing else.
COOKIE_MAX_AGE = 365 * 24 * 3600

# Accept-Language is hostile input: bounded length and entries, strict tags (RFC 4647 ranges).
_MAX_HEADER = 512
_MAX_RANGES = 16
_RANGE = re.compile(r"^(?:\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*)$")
_QVALUE = re.compile(r"^q=(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$", re.IGNORECASE)


def catalogue_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def load_translations(lang: str) -> NullTranslations:
    """The compiled catalogue of ``lang`` (English: the identity translation)."""
    if lang == SOURCE_LANGUAGE:
        return NullTranslations()
    with catalogue_path(lang).open("rb") as handle:
        catalog = read_po(handle, locale=lang, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def parse_accept_language(header: str | None) -> list[str]:
    """Language ranges of an ``Accept-Language`` header, best first (q=0 ranges dropped;
    equal q-values keep the browser's order). Malformed entries are ignored."""
    if not header or len(header) > _MAX_HEADER:
        return []
    ranked: list[tuple[float, int, str]] = []
    for index, entry in enumerate(header.split(",")[:_MAX_RANGES]):
        tag, *params = (part.strip() for part in entry.split(";"))
        if not _RANGE.match(tag):
            continue
        quality = 1.0
        for param in params:
            match = _QVALUE.match(param)
            if match is None:
                quality = -1.0  # a malformed parameter spoils only this entry
                break
            quality = float(match.group(1))
        if quality > 0 and tag != "*":
            ranked.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(ranked)]


def negotiate(header: str | None) -> str | None:
    """The shipped language the browser prefers most (``de-CH`` finds ``de``), or None."""
    found = negotiate_locale(parse_accept_language(header), LANGUAGES, sep="-")
    return found.lower() if found and found.lower() in LANGUAGES else None


def cookie_name(secure: bool) -> str:
    return "__Host-gw_lang" if secure else "gw_lang"


def choose(request: Request, default: str, *, secure: bool) -> tuple[str, bool]:
    """(language for this request, whether a ``?lang=`` choice should be remembered)."""
    asked = request.query_params.getlist("lang")
    if len(asked) == 1 and asked[0] in LANGUAGES:
        return asked[0], True
    remembered = request.cookies.get(cookie_name(secure))
    if remembered in LANGUAGES:
        return str(remembered), False
    return negotiate(request.headers.get("accept-language")) or default, False
