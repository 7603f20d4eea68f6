"""The catalogues are complete and current, and the language choice reads Accept-Language as
browsers send it (q-values, regional variants, junk)."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from gateway.web import i18n

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "gateway" / "locale" / "babel.cfg"


def extracted_ids() -> set[str | tuple[str, ...]]:
    """Every message id the pages use, extracted as ``pybabel extract`` would."""
    from babel.messages.frontend import parse_mapping_cfg

    with CONFIG.open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    ids: set[str | tuple[str, ...]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map
    ):
        ids.add(message if isinstance(message, str) else tuple(message))
    return ids


@pytest.fixture(scope="module")
def used() -> set[str | tuple[str, ...]]:
    found = extracted_ids()
    assert len(found) > 50  # the extraction really ran over templates and Python
    return found


@pytest.mark.parametrize("lang", [lang for lang in i18n.LANGUAGES if lang != "en"])
def test_every_message_has_a_translation_and_no_id_is_stale(
    lang: str, used: set[str | tuple[str, ...]]
) -> None:
    with i18n.catalogue_path(lang).open("rb") as handle:
        catalog = read_po(handle, locale=lang)
    by_key = {message.id if isinstance(message.id, str) else message.id[0]: message
              for message in catalog if message.id}
    missing, untranslated, fuzzy = [], [], []
    for msgid in used:
        key = msgid if isinstance(msgid, str) else msgid[0]
        message = by_key.get(key)
        if message is None:
            missing.append(key)
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if len(strings) != (catalog.num_plurals if not isinstance(msgid, str) else 1) or not all(
            s.strip() for s in strings
        ):
            untranslated.append(key)
        if message.fuzzy:
            fuzzy.append(key)
    used_keys = {m if isinstance(m, str) else m[0] for m in used}
    stale = sorted(set(by_key) - used_keys)
    assert not missing, f"{lang}: no translation for {missing}"
    assert not untranslated, f"{lang}: empty or incomplete translation for {untranslated}"
    assert not fuzzy, f"{lang}: fuzzy (unused) translation for {fuzzy}"
    assert not stale, f"{lang}: catalogue keeps ids no page uses: {stale}"


@pytest.mark.parametrize("lang", [lang for lang in i18n.LANGUAGES if lang != "en"])
def test_placeholders_survive_translation(lang: str) -> None:
    import re

    with i18n.catalogue_path(lang).open("rb") as handle:
        catalog = read_po(handle, locale=lang)
    placeholder = re.compile(r"%\(\w+\)s|<code>|</code>")
    for message in catalog:
        if not message.id:
            continue
        source = message.id if isinstance(message.id, str) else message.id[-1]
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for text in strings:
            assert sorted(placeholder.findall(text)) == sorted(placeholder.findall(source)), (
                lang,
                source,
                text,
            )


def test_catalogues_compile_at_start_up() -> None:
    assert i18n.load_translations("de").gettext("Start again") == "Neu beginnen"
    assert i18n.load_translations("fr").ngettext(
        "It should take about %(count)s second.", "It should take about %(count)s seconds.", 3
    ) == "Cela devrait prendre environ %(count)s secondes."
    assert i18n.load_translations("en").gettext("Start again") == "Start again"


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("de-CH,de;q=0.9,en;q=0.8", "de"),
        ("en-GB,en;q=0.9", "en"),
        ("fr-CA", "fr"),
        ("es-419,es;q=0.9", "es"),
        ("de;q=0.1, es;q=0.9", "es"),  # q-values, not order
        ("ja, pt-BR;q=0.9, fr;q=0.2", "fr"),
        ("fr;q=0, de", "de"),  # q=0 means "not this one"
        ("ja, zh", None),
        ("*", None),
        ("", None),
        (None, None),
        ("de;q=2, fr;q=abc, es;q=0.5", "es"),  # malformed q-values spoil only their entry
        ("x" * 600, None),  # oversized header: ignored
        ("<script>, de", "de"),
    ],
)
def test_accept_language_negotiation(header: str | None, chosen: str | None) -> None:
    assert i18n.negotiate(header) == chosen


def test_accept_language_order_is_stable_for_equal_q() -> None:
    assert i18n.parse_accept_language("fr, de, es;q=0.5") == ["fr", "de", "es"]
