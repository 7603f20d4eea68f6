"""Validation of one SAML Response received at the ACS (HTTP-POST binding).

The order: bounded decode, safe parse, schema (python3-saml's strict-mode gate), unique IDs,
response Destination/Issuer/Status/IssueInstant, exactly one assertion (its encryption
algorithms allow-listed, then decrypted and parsed again; a plaintext one refused when
encryption is required), signatures verified with the configured IdP certificates only, and
then every value is read from a canonical copy of the element a verified signature covers.
Time (IssueInstant age, validity windows; UTC only), audience, recipient and destination
checks are ours, exact and with the configured skew: python3-saml 1.16 is lax on each of
them (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lxml import etree

from gateway.auth.saml_signature import decrypt_assertion, verify_signature
from gateway.auth.saml_xml import (
    DS,
    SAML,
    SAMLP,
    Element,
    canonical_copy,
    decode_post_binding,
    parse_instant,
    parse_xml,
    text_of,
    validate_schema,
)
from gateway.errors import IdpRejected, TokenValidationError

SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
ENTITY = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"


@dataclass(frozen=True)
class Expectations:
    """What a response for this IdP and SP must say."""

    idp_entity_id: str
    idp_certificates: tuple[str, ...]
    sp_entity_id: str
    acs_url: str
    signed: str  # "assertion" | "response" | "both" | "either"
    allow_sha1: bool
    clock_skew: int
    max_bytes: int
    sp_key_pem: str | None = None
    # Oldest IssueInstant accepted, seconds (clock_skew is added on top).
    max_issue_instant_age: int = 300
    require_encrypted: bool = False
    allow_legacy_cbc: bool = False


@dataclass(frozen=True)
class VerifiedAssertion:
    """What a verified assertion says; nothing here came from outside the signed element."""

    assertion_id: str
    in_response_to: str | None
    name_id: str
    name_id_format: str | None
    session_index: str | None
    authn_instant: int | None
    # Until when the assertion could still be accepted (replay cache lifetime).
    expires_at: float
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    friendly: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _only(parent: Element, tag: str, what: str, *, required: bool = True) -> Element:
    """The single ``tag`` child (None only when not ``required`` and absent)."""
    found = parent.findall(tag)
    if len(found) > 1 or (required and not found):
        raise TokenValidationError(f"expected exactly one {what}")
    return found[0] if found else None


def _check_issuer(parent: Element, exp: Expectations, what: str, *, required: bool) -> None:
    issuer = _only(parent, SAML + "Issuer", f"Issuer in the {what}", required=required)
    if issuer is None:
        return
    if issuer.get("Format") not in (None, ENTITY) or text_of(issuer) != exp.idp_entity_id:
        raise TokenValidationError(f"{what} Issuer is not the configured IdP entity id")


def _unique_ids(root: Element) -> None:
    seen: set[str] = set()
    for element in root.iter(etree.Element):
        for name in ("ID", "Id", "id"):
            value = element.get(name)
            if value is None:
                continue
            if value in seen:
                raise TokenValidationError("duplicate ID attribute in the response")
            seen.add(value)


def _the_assertion(root: Element, exp: Expectations) -> Element:
    """Exactly one (possibly encrypted) assertion, a direct child of the Response; one found
    anywhere else (Advice, Extensions, inside a Signature) refuses the whole response."""
    plain = list(root.iter(SAML + "Assertion"))
    encrypted = list(root.iter(SAML + "EncryptedAssertion"))
    if len(plain) + len(encrypted) != 1:
        raise TokenValidationError("response must carry exactly one assertion")
    element = (plain or encrypted)[0]
    if element.getparent() is not root:
        raise TokenValidationError("assertion is not a direct child of the Response")
    if element.tag == SAML + "Assertion":
        if exp.require_encrypted:
            # Local policy on top of SAML core 6.1 (EncryptedAssertion): when on, plaintext is
            # refused even inside a signed Response, so no assertion crosses the browser clear.
            raise TokenValidationError(
                "assertion is not encrypted (require_encrypted_assertions is on)"
            )
        return element
    decrypted = decrypt_assertion(element, exp.sp_key_pem, exp.allow_legacy_cbc)
    if decrypted.tag != SAML + "Assertion":
        raise TokenValidationError("EncryptedAssertion did not hold an Assertion")
    root.replace(element, decrypted)
    return decrypted


def _stray_signatures(root: Element, allowed: list[Element | None]) -> None:
    keep = {id(s) for s in allowed if s is not None}
    if any(id(s) not in keep for s in root.iter(DS + "Signature")):
        raise TokenValidationError("Signature found outside the Response and the Assertion")


def _verified_assertion(root: Element, exp: Expectations) -> tuple[Element, bool]:
    """Verify the signatures ``exp.signed`` asks for (and any other present) and return the
    assertion. The response signature is checked before decryption: it covers the ciphertext."""
    response_sig = _only(root, DS + "Signature", "response Signature", required=False)
    if exp.signed in ("response", "both") and response_sig is None:
        raise TokenValidationError("response is not signed (signed = response/both)")
    if response_sig is not None:
        # SAML bindings 3.5.5.2: a signed POST-binding message MUST carry Destination.
        if root.get("Destination") is None:
            raise TokenValidationError("signed response has no Destination")
        verify_signature(response_sig, exp.idp_certificates, exp.allow_sha1, "response")
    assertion = _the_assertion(root, exp)
    _unique_ids(root)  # again: decryption added elements
    if len(list(root.iter(SAML + "Assertion"))) != 1:
        raise TokenValidationError("response must carry exactly one assertion")
    assertion_sig = _only(assertion, DS + "Signature", "assertion Signature", required=False)
    _stray_signatures(root, [response_sig, assertion_sig])
    if exp.signed in ("assertion", "both") and assertion_sig is None:
        raise TokenValidationError("assertion is not signed (signed = assertion/both)")
    if response_sig is None and assertion_sig is None:
        raise TokenValidationError("neither the response nor the assertion is signed")
    # Every signature present is verified: a present-but-wrong one is never ignored.
    if assertion_sig is not None:
        verify_signature(assertion_sig, exp.idp_certificates, exp.allow_sha1, "assertion")
    return assertion, response_sig is not None


def _check_issue_instant(element: Element, exp: Expectations, now: float, what: str) -> None:
    """IssueInstant (SAML core 2.3.3 for the Assertion, 3.2.2 for the Response) must be recent:
    no older than max_issue_instant_age + skew and no later than now + skew. The validity
    windows alone would let an IdP's long NotOnOrAfter keep a captured message usable."""
    issued = parse_instant(element.get("IssueInstant"), f"{what} IssueInstant")
    if issued > now + exp.clock_skew:
        raise TokenValidationError(f"{what} IssueInstant is in the future")
    if now - issued > exp.max_issue_instant_age + exp.clock_skew:
        raise TokenValidationError(
            f"{what} IssueInstant is older than max_issue_instant_age_seconds"
        )


def _window(element: Element, now: float, skew: int, what: str) -> float | None:
    not_before = element.get("NotBefore")
    if not_before is not None and now + skew < parse_instant(not_before, f"{what} NotBefore"):
        raise TokenValidationError(f"{what} is not yet valid (NotBefore)")
    not_after = element.get("NotOnOrAfter")
    if not_after is None:
        return None
    expiry = parse_instant(not_after, f"{what} NotOnOrAfter")
    if now - skew >= expiry:
        raise TokenValidationError(f"{what} has expired (NotOnOrAfter)")
    return expiry


def _check_conditions(assertion: Element, exp: Expectations, now: float) -> float | None:
    conditions = _only(assertion, SAML + "Conditions", "Conditions")
    expiry = _window(conditions, now, exp.clock_skew, "Conditions")
    restrictions = conditions.findall(SAML + "AudienceRestriction")
    if not restrictions:
        raise TokenValidationError("assertion has no AudienceRestriction")
    for restriction in restrictions:  # each one must include us (SAML core 2.5.1.4)
        audiences = [text_of(a) for a in restriction.findall(SAML + "Audience")]
        if exp.sp_entity_id not in audiences:
            raise TokenValidationError("Audience is not our SP entity id")
    return expiry


def _check_subject(
    assertion: Element, exp: Expectations, now: float, response_irt: str | None
) -> tuple[Element, float, str | None]:
    """NameID, confirmation expiry and the signed InResponseTo of a valid bearer
    confirmation (the caller decides whether the Response's own value may stand in)."""
    subject = _only(assertion, SAML + "Subject", "Subject")
    if subject.find(SAML + "EncryptedID") is not None:
        raise TokenValidationError("encrypted NameID is not supported")
    name_id = _only(subject, SAML + "NameID", "NameID")
    problem = "no bearer SubjectConfirmation"
    for confirmation in subject.findall(SAML + "SubjectConfirmation"):
        if confirmation.get("Method") != BEARER:
            continue
        data = confirmation.find(SAML + "SubjectConfirmationData")
        if data is None:
            problem = "bearer SubjectConfirmation without SubjectConfirmationData"
            continue
        if data.get("Recipient") != exp.acs_url:
            problem = "SubjectConfirmationData Recipient is not our ACS URL"
            continue
        if data.get("NotOnOrAfter") is None:
            problem = "SubjectConfirmationData has no NotOnOrAfter"
            continue
        irt = data.get("InResponseTo")
        if irt is not None and response_irt is not None and irt != response_irt:
            problem = "SubjectConfirmationData InResponseTo differs from the Response's"
            continue
        try:
            expiry = _window(data, now, exp.clock_skew, "SubjectConfirmationData")
        except TokenValidationError as exc:
            problem = exc.reason
            continue
        assert expiry is not None
        return name_id, expiry, irt
    raise TokenValidationError(problem)


Values = dict[str, tuple[str, ...]]


def _attributes(assertion: Element) -> tuple[Values, Values]:
    """Attribute values by Name and by FriendlyName, across every AttributeStatement.

    An Attribute Name that occurs twice is refused, not merged: which occurrence a mapping
    reads (or a merged list of groups) would otherwise depend on the IdP's attribute
    release order, and an attacker-influenced second copy could add values (SAML core
    2.7.3.1: Name identifies the attribute). A FriendlyName "MUST NOT be used as a basis for
    formally identifying SAML attributes" (2.7.3.1), so one shared by several attributes is
    not refused, but it can then not be looked up at all.
    """
    by_name: Values = {}
    by_friendly: Values = {}
    ambiguous: set[str] = set()
    for statement in assertion.findall(SAML + "AttributeStatement"):
        for attribute in statement.findall(SAML + "Attribute"):
            values = tuple(text_of(v) for v in attribute.findall(SAML + "AttributeValue"))
            name = attribute.get("Name", "")
            if name in by_name:
                raise TokenValidationError("Attribute Name occurs more than once")
            by_name[name] = values
            friendly = attribute.get("FriendlyName")
            if friendly:
                if friendly in by_friendly:
                    ambiguous.add(friendly)
                by_friendly[friendly] = values
    return by_name, {k: v for k, v in by_friendly.items() if k not in ambiguous}


def validate_response(saml_response: str, exp: Expectations, now: float) -> VerifiedAssertion:
    """Run every check on one base64 SAMLResponse; raise on the first that fails."""
    root = parse_xml(decode_post_binding(saml_response, exp.max_bytes), "SAMLResponse")
    if root.tag != SAMLP + "Response":
        raise TokenValidationError("document is not a samlp:Response")
    validate_schema(root, "saml-schema-protocol-2.0.xsd", "SAMLResponse")
    _unique_ids(root)
    if root.get("Version") != "2.0":
        raise TokenValidationError("response Version is not 2.0")
    status = root.find(f"{SAMLP}Status/{SAMLP}StatusCode")
    if status is None or status.get("Value") != SUCCESS:
        code = status.get("Value", "") if status is not None else "missing"
        raise IdpRejected(f"IdP returned non-success status {code.rsplit(':', 1)[-1][:64]}")
    destination = root.get("Destination")
    if destination is not None and destination != exp.acs_url:
        raise TokenValidationError("response Destination is not our ACS URL")
    _check_issuer(root, exp, "response", required=False)
    _check_issue_instant(root, exp, now, "Response")
    assertion, response_signed = _verified_assertion(root, exp)
    # From here on only the canonical copy of the covered assertion is read.
    signed = canonical_copy(assertion)
    _unique_ids(signed)
    verified = _read_assertion(signed, exp, now, root.get("InResponseTo"))
    if not response_signed and root.get("InResponseTo") != verified.in_response_to:
        # An unsigned Response's InResponseTo would let anyone turn a signed unsolicited
        # assertion into an answer to their own pending request: only a signed value counts.
        raise TokenValidationError("Response InResponseTo is not covered by a signature")
    if verified.in_response_to is None and root.get("InResponseTo") is not None:
        return replace(verified, in_response_to=root.get("InResponseTo"))  # signed response
    return verified


def _read_assertion(
    assertion: Element, exp: Expectations, now: float, response_irt: str | None
) -> VerifiedAssertion:
    if assertion.get("Version") != "2.0" or not assertion.get("ID"):
        raise TokenValidationError("assertion has no ID or Version 2.0")
    _check_issuer(assertion, exp, "assertion", required=True)
    _check_issue_instant(assertion, exp, now, "Assertion")
    conditions_expiry = _check_conditions(assertion, exp, now)
    name_id, confirmation_expiry, irt = _check_subject(assertion, exp, now, response_irt)
    name = text_of(name_id).strip()
    if not name:
        raise TokenValidationError("NameID is empty")
    authn = assertion.find(SAML + "AuthnStatement")
    if authn is None:
        raise TokenValidationError("assertion has no AuthnStatement")
    session_end = authn.get("SessionNotOnOrAfter")
    if session_end is not None and now - exp.clock_skew >= parse_instant(
        session_end, "SessionNotOnOrAfter"
    ):
        raise TokenValidationError("IdP session has ended (SessionNotOnOrAfter)")
    instant = parse_instant(authn.get("AuthnInstant"), "AuthnInstant")
    attributes, friendly = _attributes(assertion)
    expiries = [confirmation_expiry] + ([conditions_expiry] if conditions_expiry else [])
    return VerifiedAssertion(
        assertion_id=str(assertion.get("ID")),
        in_response_to=irt,
        name_id=name,
        name_id_format=name_id.get("Format"),
        session_index=authn.get("SessionIndex"),
        authn_instant=int(instant),
        expires_at=max(expiries) + exp.clock_skew,
        attributes=attributes,
        friendly=friendly,
    )
