"""Hostile-input XML handling for SAML: safe parsing, schema validation, times.

Everything that arrives from a browser or an IdP is parsed here with a parser that never
loads a DTD, never resolves entities and never touches the network; a document that
declares a DOCTYPE at all is refused (SAML never needs one).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from lxml import etree

from gateway.errors import BadRequest, TokenValidationError

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "xenc": "http://www.w3.org/2001/04/xmlenc#",
}
SAMLP = f"{{{NS['samlp']}}}"
SAML = f"{{{NS['saml']}}}"
MD = f"{{{NS['md']}}}"
DS = f"{{{NS['ds']}}}"
XENC = f"{{{NS['xenc']}}}"

Element = Any  # lxml.etree._Element (lxml ships no usable stubs here)


def _parser() -> Any:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        # CDATA sections become plain text, so "a<![CDATA[]]>b" reads as "ab".
        strip_cdata=True,
        collect_ids=False,
    )


def parse_xml(data: bytes, what: str) -> Element:
    """Parse untrusted XML; refuse DTDs, entities and malformed input.

    ``what`` names the document in the operator reason ("SAMLResponse", "IdP metadata").
    """
    # Cheap early refusal for the common encoding; the docinfo check below catches the rest
    # (UTF-16 and friends) after a parse that resolved nothing.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise TokenValidationError(f"{what} declares a DTD or entities (refused)")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError:
        raise BadRequest(f"{what} is not well-formed XML") from None
    tree = root.getroottree()
    info = tree.docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise TokenValidationError(f"{what} declares a DTD or entities (refused)")
    if next(root.iter(etree.Entity), None) is not None:
        raise TokenValidationError(f"{what} contains entity references (refused)")
    return root


def decode_post_binding(value: str, max_bytes: int) -> bytes:
    """Base64-decode an HTTP-POST binding parameter, bounded before and after decoding."""
    if len(value) > max_bytes:
        raise BadRequest("SAMLResponse is larger than max_response_bytes")
    # IdPs line-wrap the base64; anything else outside the alphabet is refused by validate=True.
    compact = re.sub(r"[\r\n\t ]", "", value)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("SAMLResponse is not valid base64") from None
    if len(data) > max_bytes:
        raise BadRequest("decoded SAMLResponse is larger than max_response_bytes")
    if not data:
        raise BadRequest("SAMLResponse is empty")
    return data


@functools.cache
def _schema(name: str) -> Any:
    # python3-saml ships the OASIS schemas; loading one takes ~50 ms, so it is done once per
    # process (lazily, not at import time). The XSDs import each other by relative path.
    folder = resources.files("onelogin.saml2") / "schemas"
    with resources.as_file(folder / name) as path:
        return etree.XMLSchema(etree.parse(str(path)))


def validate_schema(root: Element, schema: str, what: str) -> None:
    """Strict mode's first gate: the document must match the OASIS schema."""
    if not _schema(schema).validate(root):
        raise TokenValidationError(f"{what} does not match {schema}")


# xs:dateTime as SAML core 1.3.3 allows it: "MUST be expressed in UTC form, with no time zone
# component". In practice every IdP writes a trailing "Z" (also UTC), so both the bare form and
# "Z" are accepted; any numeric offset ("+02:00", "-05:00", even "+00:00") is refused. Fractional
# seconds of any length are allowed (ADFS sends seven digits; beyond microseconds they are cut).
# The regex runs before fromisoformat, which would also take "T"-less or basic-format times.
_UTC_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z?)", re.ASCII
)
# Metadata (trusted, operator-supplied) is read leniently: an offset is converted to UTC.
_ANY_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?",
    re.ASCII,
)


def parse_instant(value: str | None, what: str, *, utc_only: bool = True) -> float:
    """A SAML xs:dateTime -> POSIX seconds.

    ``utc_only`` (every time read from a SAML message) refuses any time zone offset other
    than "Z" (SAML core 1.3.3); ``utc_only=False`` (metadata ``validUntil``) converts one.
    Either way a time without designator is taken as UTC, never as local time.
    """
    if not value:
        raise TokenValidationError(f"{what} is missing")
    text = value.strip()  # xs:dateTime's whiteSpace facet is "collapse"
    match = (_UTC_INSTANT if utc_only else _ANY_INSTANT).fullmatch(text)
    if match is None:
        if utc_only and re.search(r"[+-]\d{2}:?\d{2}$", text):
            raise TokenValidationError(f"{what} is not in UTC (SAML core 1.3.3: no time zone)")
        raise TokenValidationError(f"{what} is not a valid xs:dateTime")
    fraction = (match.group(7) or "")[:6].ljust(6, "0")
    zone = match.group(8) or "Z"
    iso = "-".join(match.group(1, 2, 3)) + "T" + ":".join(match.group(4, 5, 6))
    try:
        moment = datetime.fromisoformat(f"{iso}.{fraction}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:  # month 13, hour 24, 30 February ...
        raise TokenValidationError(f"{what} is not a valid xs:dateTime") from None
    return moment.astimezone(UTC).timestamp()


# Compiled once: ``element.xpath(...)`` compiles the expression on every call (4x slower,
# and a SAML sign-in reads about a dozen values). The gateway validates in one thread.
_STRING_VALUE = etree.XPath("string(.)")


def text_of(element: Element | None) -> str:
    """XPath string-value: every descendant text node, comments excluded (never truncated)."""
    if element is None:
        return ""
    return str(_STRING_VALUE(element))


def canonical_copy(element: Element) -> Element:
    """A fresh tree of ``element`` as exclusive C14N (no comments) sees it: what the digest
    covered. Values are read from this copy, so comments, PIs and CDATA cannot split them."""
    data = etree.tostring(element, method="c14n", exclusive=True, with_comments=False)
    return etree.fromstring(data, _parser())
