"""Throw-away RSA keys and self-signed certificates for SAML tests (never used outside tests)."""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class KeyPair:
    key_pem: str
    cert_pem: str

    @property
    def cert_b64(self) -> str:
        """The certificate body as it appears in metadata and KeyInfo."""
        lines = self.cert_pem.strip().splitlines()
        return "".join(line for line in lines if "-----" not in line)


@functools.lru_cache(maxsize=64)
def make_keypair(common_name: str, *, bits: int = 2048) -> KeyPair:
    """An RSA key and a self-signed certificate naming ``common_name`` (cached per name to
    keep tests fast; ``make_keypair.__wrapped__`` always makes a fresh one)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return KeyPair(key_pem, cert.public_bytes(serialization.Encoding.PEM).decode())


# --- the hostile IdP -----------------------------------------------------------------------

import base64 as _b64  # noqa: E402
import copy as _copy  # noqa: E402
import secrets as _secrets  # noqa: E402
import time as _time  # noqa: E402

import xmlsec  # noqa: E402
from lxml import etree  # noqa: E402

SAMLP_NS = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
MD_NS = "urn:oasis:names:tc:SAML:2.0:metadata"
XENC_NS = "http://www.w3.org/2001/04/xmlenc#"
XENC11_NS = "http://www.w3.org/2009/xmlenc11#"
XENC = f"{{{XENC_NS}}}"
SAMLP = f"{{{SAMLP_NS}}}"
SAML = f"{{{SAML_NS}}}"
DS = f"{{{DS_NS}}}"
NSMAP = {"samlp": SAMLP_NS, "saml": SAML_NS}


def iso(t: float) -> str:
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(t))


def encode(root: etree._Element | bytes) -> str:
    data = root if isinstance(root, bytes) else etree.tostring(root)
    return _b64.b64encode(data).decode()


class HostileIdp:
    """Builds and signs SAML responses with test keys, correctly or in any broken shape."""

    def __init__(self, sp_entity_id: str, acs_url: str,
                 entity_id: str = "https://idp.test.example/saml") -> None:
        self.entity_id = entity_id
        self.sso_url = "https://idp.test.example/sso"
        self.sp_entity_id = sp_entity_id
        self.acs_url = acs_url
        self.keys = make_keypair("idp.test.example")

    def metadata(self) -> bytes:
        return f"""<md:EntityDescriptor xmlns:md="{MD_NS}" xmlns:ds="{DS_NS}"
  entityID="{self.entity_id}"><md:IDPSSODescriptor
  protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
  <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{
  self.keys.cert_b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
  <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
   Location="{self.sso_url}"/></md:IDPSSODescriptor></md:EntityDescriptor>""".encode()

    def assertion(
        self, *, name_id: str = "alice@corp.example", in_response_to: str | None = None,
        now: float | None = None, audience: str | None = None, recipient: str | None = None,
        issuer: str | None = None, not_before: float | None = None,
        not_on_or_after: float | None = None, scd_not_on_or_after: float | None = None,
        attributes: dict[str, list[str]] | None = None, assertion_id: str | None = None,
    ) -> etree._Element:
        now = _time.time() if now is None else now
        a = etree.Element(SAML + "Assertion", nsmap={"saml": SAML_NS}, Version="2.0",
                          ID=assertion_id or "_a" + _secrets.token_hex(16), IssueInstant=iso(now))
        etree.SubElement(a, SAML + "Issuer").text = issuer or self.entity_id
        subject = etree.SubElement(a, SAML + "Subject")
        etree.SubElement(subject, SAML + "NameID",
                         Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
                         ).text = name_id
        sc = etree.SubElement(subject, SAML + "SubjectConfirmation",
                              Method="urn:oasis:names:tc:SAML:2.0:cm:bearer")
        scd = etree.SubElement(sc, SAML + "SubjectConfirmationData",
                               Recipient=recipient or self.acs_url,
                               NotOnOrAfter=iso(scd_not_on_or_after or now + 300))
        if in_response_to:
            scd.set("InResponseTo", in_response_to)
        cond = etree.SubElement(a, SAML + "Conditions",
                                NotBefore=iso(not_before if not_before is not None else now - 30),
                                NotOnOrAfter=iso(not_on_or_after or now + 300))
        ar = etree.SubElement(cond, SAML + "AudienceRestriction")
        etree.SubElement(ar, SAML + "Audience").text = audience or self.sp_entity_id
        etree.SubElement(a, SAML + "AuthnStatement", AuthnInstant=iso(now),
                         SessionIndex="_s" + _secrets.token_hex(8))
        ctx = etree.SubElement(a[-1], SAML + "AuthnContext")
        etree.SubElement(ctx, SAML + "AuthnContextClassRef").text = (
            "urn:oasis:names:tc:SAML:2.0:ac:classes:Password")
        attrs = attributes if attributes is not None else {
            "email": [name_id], "givenName": ["Alice"], "sn": ["Archer"],
            "groups": ["staff", "trainers"]}
        if attrs:
            st = etree.SubElement(a, SAML + "AttributeStatement")
            for name, values in attrs.items():
                at = etree.SubElement(st, SAML + "Attribute", Name=name)
                for v in values:
                    etree.SubElement(at, SAML + "AttributeValue").text = v
        return a

    def response(
        self, *assertions: etree._Element, in_response_to: str | None = None,
        destination: str | None = "", issuer: str | None = None,
        status: str = "urn:oasis:names:tc:SAML:2.0:status:Success", now: float | None = None,
    ) -> etree._Element:
        now = _time.time() if now is None else now
        r = etree.Element(SAMLP + "Response", nsmap=NSMAP, Version="2.0",
                          ID="_r" + _secrets.token_hex(16), IssueInstant=iso(now))
        if destination is not None:
            r.set("Destination", destination or self.acs_url)
        if in_response_to:
            r.set("InResponseTo", in_response_to)
        etree.SubElement(r, SAML + "Issuer").text = issuer or self.entity_id
        st = etree.SubElement(r, SAMLP + "Status")
        etree.SubElement(st, SAMLP + "StatusCode", Value=status)
        for a in assertions:
            r.append(a)
        return r

    def sign(self, element: etree._Element, keys: KeyPair | None = None, *, sha1: bool = False,
             keyinfo_cert: KeyPair | None = None) -> etree._Element:
        """Insert an enveloped signature after the element's Issuer and sign it."""
        keys = keys or self.keys
        alg = xmlsec.Transform.RSA_SHA1 if sha1 else xmlsec.Transform.RSA_SHA256
        sig = xmlsec.template.create(element, xmlsec.Transform.EXCL_C14N, alg, ns="ds")
        element.find(SAML + "Issuer").addnext(sig)
        ref = xmlsec.template.add_reference(
            sig, xmlsec.Transform.SHA1 if sha1 else xmlsec.Transform.SHA256,
            uri="#" + element.get("ID"))
        xmlsec.template.add_transform(ref, xmlsec.Transform.ENVELOPED)
        xmlsec.template.add_transform(ref, xmlsec.Transform.EXCL_C14N)
        x509 = xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(sig))
        xmlsec.template.x509_data_add_certificate(x509)
        ctx = xmlsec.SignatureContext()
        key = xmlsec.Key.from_memory(keys.key_pem.encode(), xmlsec.KeyFormat.PEM, None)
        key.load_cert_from_memory((keyinfo_cert or keys).cert_pem.encode(),
                                  xmlsec.KeyFormat.CERT_PEM)
        ctx.key = key
        ctx.register_id(element, "ID")
        ctx.sign(sig)
        return element

    @staticmethod
    def encrypt(
        assertion: etree._Element,
        sp_cert_pem: str,
        *,
        content: str = "aes256-gcm",
        key_transport: str = "rsa-oaep-mgf1p",
    ) -> etree._Element:
        """Wrap ``assertion`` in an EncryptedAssertion for the SP certificate.

        ``content``: aes{128,192,256}-{gcm,cbc}; ``key_transport``: "rsa-oaep-mgf1p"
        (xmlenc), "rsa-oaep" (xmlenc11) or "rsa-1_5". The EncryptedKey sits inside the
        EncryptedData's KeyInfo, as SimpleSAMLphp, Shibboleth and ADFS place it."""
        bits, mode = int(content[3:6]), content[7:]
        cipher = {
            ("gcm", 128): xmlsec.Transform.AES128_GCM,
            ("gcm", 192): xmlsec.Transform.AES192_GCM,
            ("gcm", 256): xmlsec.Transform.AES256_GCM,
            ("cbc", 128): xmlsec.Transform.AES128,
            ("cbc", 192): xmlsec.Transform.AES192,
            ("cbc", 256): xmlsec.Transform.AES256,
        }[(mode, bits)]
        wrapper = etree.Element(SAML + "EncryptedAssertion", nsmap={"saml": SAML_NS})
        wrapper.append(assertion)
        enc = xmlsec.template.encrypted_data_create(
            wrapper, cipher, type=xmlsec.EncryptionType.ELEMENT, ns="xenc"
        )
        xmlsec.template.encrypted_data_ensure_cipher_value(enc)
        ki = xmlsec.template.encrypted_data_ensure_key_info(enc, ns="ds")
        pkcs1 = key_transport == "rsa-1_5"
        rsa = xmlsec.Transform.RSA_PKCS1 if pkcs1 else xmlsec.Transform.RSA_OAEP
        ek = xmlsec.template.add_encrypted_key(ki, rsa)
        if key_transport == "rsa-oaep":
            # The bindings name no constant for XML Encryption 1.1's rsa-oaep; libxmlsec 1.3
            # implements it and picks the transform by this URI.
            ek.find(XENC + "EncryptionMethod").set("Algorithm", XENC11_NS + "rsa-oaep")
        xmlsec.template.encrypted_data_ensure_cipher_value(ek)
        manager = xmlsec.KeysManager()
        manager.add_key(
            xmlsec.Key.from_memory(sp_cert_pem.encode(), xmlsec.KeyFormat.CERT_PEM, None)
        )
        ctx = xmlsec.EncryptionContext(manager)
        ctx.key = xmlsec.Key.generate(xmlsec.KeyData.AES, bits, xmlsec.KeyDataType.SESSION)
        ctx.encrypt_xml(enc, assertion)
        return wrapper

    def signed_response(self, *, in_response_to: str | None = None, **kw: object
                        ) -> etree._Element:
        """The well-formed baseline: one signed assertion in an unsigned response."""
        assertion = self.sign(self.assertion(in_response_to=in_response_to, **kw))  # type: ignore[arg-type]
        return self.response(assertion, in_response_to=in_response_to)


def clone(element: etree._Element) -> etree._Element:
    return _copy.deepcopy(element)
