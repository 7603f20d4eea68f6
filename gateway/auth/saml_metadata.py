"""IdP metadata (what we trust) and our SP metadata (what we publish).

IdP metadata comes from a file, an HTTPS URL (refreshed on a schedule by ``saml.py``; a
failed refresh keeps the last good copy) or inline settings. Only what we need is read:
entity id, the HTTP-Redirect SingleSignOnService and the signing certificates (several
during a key rollover). Metadata signatures are not verified; trust comes from the file
being ours or the URL being HTTPS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from gateway.auth.saml_signature import KEY_TRANSPORT, content_algorithms
from gateway.auth.saml_xml import DS, MD, NS, Element, parse_instant, parse_xml, validate_schema
from gateway.errors import ConfigError
from gateway.settings import SamlIdpSettings

REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
MAX_METADATA_BYTES = 5_000_000


@dataclass(frozen=True)
class IdpMetadata:
    entity_id: str
    sso_url: str
    certificates: tuple[str, ...]  # PEM


def pem(body: str) -> str:
    """A certificate body (base64, any whitespace) or PEM text -> normalised PEM."""
    if "-----BEGIN" in body:
        body = "".join(line for line in body.splitlines() if "-----" not in line)
    compact = "".join(body.split())
    lines = [compact[i : i + 64] for i in range(0, len(compact), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def _entity(root: Element, entity_id: str | None) -> Element:
    if root.tag == MD + "EntityDescriptor":
        candidates = [root]
    elif root.tag == MD + "EntitiesDescriptor":
        candidates = [e for e in root.iter(MD + "EntityDescriptor")
                      if e.find(MD + "IDPSSODescriptor") is not None]
    else:
        raise ValueError("not SAML metadata (no EntityDescriptor)")
    if entity_id is not None:
        candidates = [e for e in candidates if e.get("entityID") == entity_id]
    if len(candidates) != 1:
        raise ValueError("metadata must describe exactly one IdP (set entity_id to choose)")
    return candidates[0]


def parse_idp_metadata(data: bytes, entity_id: str | None, now: float) -> IdpMetadata:
    """Read an IdP's metadata; raise ValueError/GatewayError naming what is wrong."""
    if len(data) > MAX_METADATA_BYTES:
        raise ValueError("metadata larger than 5 MB")
    root = parse_xml(data, "IdP metadata")
    validate_schema(root, "saml-schema-metadata-2.0.xsd", "IdP metadata")
    entity = _entity(root, entity_id)
    for holder in (root, entity):
        valid_until = holder.get("validUntil")
        if valid_until and parse_instant(valid_until, "validUntil", utc_only=False) <= now:
            raise ValueError("metadata validUntil has passed")
    descriptors = [d for d in entity.findall(MD + "IDPSSODescriptor")
                   if PROTOCOL in d.get("protocolSupportEnumeration", "").split()]
    if len(descriptors) != 1:
        raise ValueError("metadata has no SAML 2.0 IDPSSODescriptor")
    idp = descriptors[0]
    sso = [s.get("Location") for s in idp.findall(MD + "SingleSignOnService")
           if s.get("Binding") == REDIRECT and s.get("Location")]
    if not sso:
        raise ValueError("metadata has no HTTP-Redirect SingleSignOnService")
    certs = []
    for key in idp.findall(MD + "KeyDescriptor"):
        if key.get("use") not in (None, "signing"):
            continue
        for cert in key.iterfind(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate"):
            certs.append(pem(cert.xpath("string(.)")))
    if not certs:
        raise ValueError("metadata has no signing certificate")
    return IdpMetadata(str(entity.get("entityID")), str(sso[0]), tuple(dict.fromkeys(certs)))


def inline_metadata(settings: SamlIdpSettings) -> IdpMetadata:
    """entity_id + sso_url + certificate_files from the config."""
    if not (settings.entity_id and settings.sso_url and settings.certificate_files):
        raise ConfigError(["saml idp: set metadata_file, metadata_url, or entity_id + sso_url "
                           "+ certificate_files"])
    certs = []
    for path in settings.certificate_files:
        try:
            certs.append(pem(Path(path).read_text()))
        except OSError as exc:
            raise ConfigError([f"cannot read certificate file {path}: {exc.strerror}"]) from None
    return IdpMetadata(settings.entity_id, settings.sso_url, tuple(certs))


def load_file_metadata(settings: SamlIdpSettings) -> IdpMetadata:
    assert settings.metadata_file is not None
    data = Path(settings.metadata_file).read_bytes()
    return parse_idp_metadata(data, settings.entity_id, time.time())


def build_sp_metadata(
    settings: SamlIdpSettings, acs_url: str, sp_cert_pem: str | None
) -> bytes:
    """Our SPSSODescriptor: entity id, ACS (HTTP-POST), certificates (the encryption one with
    the encryption algorithms we accept), signing wishes."""
    md, ds = NS["md"], NS["ds"]
    root = etree.Element(f"{{{md}}}EntityDescriptor", nsmap={"md": md, "ds": ds})
    root.set("entityID", settings.sp_entity_id)
    sp = etree.SubElement(root, f"{{{md}}}SPSSODescriptor")
    sp.set("AuthnRequestsSigned", "true" if settings.sign_requests else "false")
    sp.set("WantAssertionsSigned",
           "true" if settings.signed in ("assertion", "both") else "false")
    sp.set("protocolSupportEnumeration", PROTOCOL)
    if sp_cert_pem:
        body = "".join(line for line in sp_cert_pem.strip().splitlines() if "-----" not in line)
        for use in ("signing", "encryption"):
            key = etree.SubElement(sp, f"{{{md}}}KeyDescriptor", use=use)
            data = etree.SubElement(etree.SubElement(key, f"{{{ds}}}KeyInfo"),
                                    f"{{{ds}}}X509Data")
            etree.SubElement(data, f"{{{ds}}}X509Certificate").text = body
            if use == "encryption":
                # SAML metadata 2.4.1.1: tell the IdP which algorithms we accept, preferred
                # first, so IdPs that read it (Shibboleth, ADFS) pick AES-GCM and RSA-OAEP.
                for algorithm in content_algorithms(settings.allow_legacy_cbc_encryption) + (
                    KEY_TRANSPORT
                ):
                    etree.SubElement(key, f"{{{md}}}EncryptionMethod", Algorithm=algorithm)
    etree.SubElement(sp, f"{{{md}}}NameIDFormat").text = settings.name_id_format
    etree.SubElement(sp, f"{{{md}}}AssertionConsumerService", Binding=POST,
                     Location=acs_url, index="0", isDefault="true")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))

