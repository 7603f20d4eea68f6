"""XML for the demo SAML IdP: its key and certificate, its metadata, signed Responses, and a
safe parser for incoming AuthnRequests. Demo and tests only.

Attributes released (``NameFormat`` basic, each value an ``xs:string``), named the way a
"generic" SP preset expects them:

==================  ====================================================
``mail``, ``email``  e-mail address (both names, for SPs expecting either)
``givenName``        first name
``sn``               family name
``displayName``      "First Last"
``employeeNumber``   employee number
``groups``           one ``AttributeValue`` per group
==================  ====================================================
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from gateway.sandbox.employees import DemoEmployee

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
XS = "http://www.w3.org/2001/XMLSchema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
ATTRNAME_BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
AC_PPT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"

ASSERTION_TTL = 300  # seconds the assertion (and its bearer confirmation) is valid


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The IdP's RSA key (PEM, PKCS#8) and self-signed certificate (PEM)."""

    key_pem: bytes
    cert_pem: bytes

    @classmethod
    def generate(cls, common_name: str, now: dt.datetime) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cls(key_pem, cert.public_bytes(serialization.Encoding.PEM))

    @property
    def cert_base64(self) -> str:
        """The certificate's DER, base64, as it goes into ``ds:X509Certificate``."""
        lines = self.cert_pem.decode("ascii").strip().splitlines()
        return "".join(line for line in lines if not line.startswith("-----"))


def _ts(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_id() -> str:
    # An xs:ID must not start with a digit.
    return "_" + secrets.token_hex(20)


def _el(parent: etree._Element, ns: str, tag: str, text: str | None = None,
        **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, f"{{{ns}}}{tag}", attrs)
    if text is not None:
        el.text = text
    return el


def metadata_xml(entity_id: str, sso_url: str, key: SigningKey) -> bytes:
    """IdP metadata: the signing certificate and the HTTP-Redirect SSO endpoint."""
    root = etree.Element(f"{{{MD}}}EntityDescriptor", {"entityID": entity_id},
                         nsmap={"md": MD, "ds": DS})
    idp = _el(root, MD, "IDPSSODescriptor", WantAuthnRequestsSigned="false",
              protocolSupportEnumeration=SAMLP)
    kd = _el(idp, MD, "KeyDescriptor", use="signing")
    x509_data = _el(_el(kd, DS, "KeyInfo"), DS, "X509Data")
    _el(x509_data, DS, "X509Certificate", key.cert_base64)
    _el(idp, MD, "NameIDFormat", NAMEID_EMAIL)
    _el(idp, MD, "SingleSignOnService", Binding=BINDING_REDIRECT, Location=sso_url)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _attributes(employee: DemoEmployee) -> list[tuple[str, tuple[str, ...]]]:
    return [
        ("mail", (employee.email,)),
        ("email", (employee.email,)),
        ("givenName", (employee.given_name,)),
        ("sn", (employee.family_name,)),
        ("displayName", (employee.display_name,)),
        ("employeeNumber", (employee.employee_number,)),
        ("groups", employee.groups),
    ]


def signed_response(
    *,
    issuer: str,
    key: SigningKey,
    employee: DemoEmployee,
    acs_url: str,
    audience: str,
    in_response_to: str | None,
    now: dt.datetime,
) -> bytes:
    """A ``samlp:Response`` with one assertion signed (RSA-SHA256, SHA-256, exclusive c14n,
    enveloped) by ``key``; the Response itself is not signed."""
    issue = _ts(now)
    until = _ts(now + dt.timedelta(seconds=ASSERTION_TTL))
    reply = {"InResponseTo": in_response_to} if in_response_to else {}
    root = etree.Element(
        f"{{{SAMLP}}}Response",
        {"ID": _new_id(), "Version": "2.0", "IssueInstant": issue, "Destination": acs_url,
         **reply},
        nsmap={"samlp": SAMLP, "saml": SAML, "xs": XS, "xsi": XSI},
    )
    _el(root, SAML, "Issuer", issuer)
    _el(_el(root, SAMLP, "Status"), SAMLP, "StatusCode", Value=STATUS_SUCCESS)

    assertion_id = _new_id()
    assertion = _el(root, SAML, "Assertion", ID=assertion_id, Version="2.0", IssueInstant=issue)
    _el(assertion, SAML, "Issuer", issuer)
    subject = _el(assertion, SAML, "Subject")
    _el(subject, SAML, "NameID", employee.email, Format=NAMEID_EMAIL)
    confirmation = _el(subject, SAML, "SubjectConfirmation", Method=CM_BEARER)
    _el(confirmation, SAML, "SubjectConfirmationData",
        NotOnOrAfter=until, Recipient=acs_url, **reply)
    conditions = _el(assertion, SAML, "Conditions",
                     NotBefore=_ts(now - dt.timedelta(seconds=5)), NotOnOrAfter=until)
    _el(_el(conditions, SAML, "AudienceRestriction"), SAML, "Audience", audience)
    authn = _el(assertion, SAML, "AuthnStatement", AuthnInstant=issue,
                SessionIndex=_new_id())
    _el(_el(authn, SAML, "AuthnContext"), SAML, "AuthnContextClassRef", AC_PPT)
    statement = _el(assertion, SAML, "AttributeStatement")
    for name, values in _attributes(employee):
        attribute = _el(statement, SAML, "Attribute", Name=name, NameFormat=ATTRNAME_BASIC)
        for value in values:
            _el(attribute, SAML, "AttributeValue", value, **{f"{{{XSI}}}type": "xs:string"})

    _sign(assertion, assertion_id, key)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _sign(element: etree._Element, element_id: str, key: SigningKey) -> None:
    """Enveloped signature over ``element``, placed right after its Issuer (as SAML requires)."""
    signature = xmlsec.template.create(
        element, xmlsec.constants.TransformExclC14N, xmlsec.constants.TransformRsaSha256, ns="ds"
    )
    element.insert(1, signature)
    ref = xmlsec.template.add_reference(
        signature, xmlsec.constants.TransformSha256, uri=f"#{element_id}"
    )
    xmlsec.template.add_transform(ref, xmlsec.constants.TransformEnveloped)
    xmlsec.template.add_transform(ref, xmlsec.constants.TransformExclC14N)
    xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(signature))
    xmlsec.tree.add_ids(element, ["ID"])
    ctx = xmlsec.SignatureContext()
    ctx.key = xmlsec.Key.from_memory(key.key_pem, xmlsec.constants.KeyDataFormatPem)
    ctx.key.load_cert_from_memory(key.cert_pem, xmlsec.constants.KeyDataFormatCertPem)
    ctx.sign(signature)


@dataclass(frozen=True, slots=True)
class AuthnRequest:
    """The parts of an incoming AuthnRequest the demo IdP uses."""

    id: str
    issuer: str
    acs_url: str | None
    protocol_binding: str | None


_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
    huge_tree=False, remove_comments=True, remove_pis=True,
)


def parse_authn_request(xml: bytes) -> AuthnRequest:
    """Parse an AuthnRequest without DTDs or entities; ``ValueError`` when it is not one."""
    try:
        root = etree.fromstring(xml, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValueError("AuthnRequest is not well-formed XML") from exc
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise ValueError("AuthnRequest must not carry a DTD")
    if root.tag != f"{{{SAMLP}}}AuthnRequest" or root.get("Version") != "2.0":
        raise ValueError("not a SAML 2.0 AuthnRequest")
    request_id = root.get("ID") or ""
    if not 1 <= len(request_id) <= 256 or not (request_id[0].isalpha() or request_id[0] == "_"):
        raise ValueError("AuthnRequest ID is missing or invalid")
    issuers = root.findall(f"{{{SAML}}}Issuer")
    if len(issuers) != 1 or not (issuers[0].text or "").strip():
        raise ValueError("AuthnRequest must have exactly one Issuer")
    return AuthnRequest(
        id=request_id,
        issuer=(issuers[0].text or "").strip(),
        acs_url=root.get("AssertionConsumerServiceURL"),
        protocol_binding=root.get("ProtocolBinding"),
    )
