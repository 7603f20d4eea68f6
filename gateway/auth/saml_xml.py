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
from datetime import datetime
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


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_instant(value: str | None, what: str) -> float:
    """xs:dateTime with a time zone -> POSIX seconds. Fractions beyond microseconds are cut
    (ADFS sends seven digits)."""
    if not value:
        raise TokenValidationError(f"{what} is missing")
    text = _FRACTION.sub(lambda m: m.group(1), value.strip(), count=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise TokenValidationError(f"{what} is not a valid xs:dateTime") from None
    if moment.tzinfo is None:
        # SAML core 1.3.3: times MUST be UTC with "Z"; a zone-less time is refused.
        raise TokenValidationError(f"{what} has no time zone")
    return moment.timestamp()


def text_of(element: Element | None) -> str:
    """XPath string-value: every descendant text node, comments excluded (never truncated)."""
    if element is None:
        return ""
    return str(element.xpath("string(.)"))


def canonical_copy(element: Element) -> Element:
    """A fresh tree of ``element`` as exclusive C14N (no comments) sees it: what the digest
    covered. Values are read from this copy, so comments, PIs and CDATA cannot split them."""
    data = etree.tostring(element, method="c14n", exclusive=True, with_comments=False)
    return etree.fromstring(data, _parser())
