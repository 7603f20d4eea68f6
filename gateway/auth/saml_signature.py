"""XML signature verification and assertion decryption (xmlsec, in process).

python3-saml's own ``validate_node_sign`` accepts several References and any transforms, so
the shape of a signature is checked here before xmlsec verifies it: one Reference, naming the
element that carries the Signature, digested with only the enveloped-signature and exclusive
C14N transforms. The key is always one of the configured IdP certificates; xmlsec is handed
that key explicitly, so whatever a message carries in ``KeyInfo`` is never used.
"""

from __future__ import annotations

import functools

import xmlsec

from gateway.auth.saml_xml import DS, XENC, Element
from gateway.errors import TokenValidationError

# xmlsec's bundled stubs omit KeyFormat although the module has it.
_FORMAT = xmlsec.KeyFormat  # type: ignore[attr-defined]
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
EXC_C14N_COMMENTS = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments"

SIGNATURE_METHODS = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
}
SHA1_SIGNATURE_METHODS = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1",
}
DIGEST_METHODS = {
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
}
SHA1_DIGEST_METHODS = {"http://www.w3.org/2000/09/xmldsig#sha1"}


def _algorithm(parent: Element, tag: str, what: str) -> str:
    found = parent.findall(DS + tag)
    if len(found) != 1 or not found[0].get("Algorithm"):
        raise TokenValidationError(f"{what}: expected exactly one {tag}")
    return str(found[0].get("Algorithm"))


def check_signature_shape(signature: Element, allow_sha1: bool, what: str) -> None:
    """Refuse any signature whose shape could leave part of the signed element undigested."""
    signed_info = signature.findall(DS + "SignedInfo")
    if len(signed_info) != 1:
        raise TokenValidationError(f"{what}: expected exactly one SignedInfo")
    info = signed_info[0]
    if _algorithm(info, "CanonicalizationMethod", what) not in (EXC_C14N, EXC_C14N_COMMENTS):
        raise TokenValidationError(f"{what}: SignedInfo must use exclusive C14N")
    method = _algorithm(info, "SignatureMethod", what)
    if method in SHA1_SIGNATURE_METHODS and not allow_sha1:
        raise TokenValidationError(f"{what}: SHA-1 signature refused (allow_sha1 is off)")
    if method not in SIGNATURE_METHODS | SHA1_SIGNATURE_METHODS:
        raise TokenValidationError(f"{what}: signature algorithm not allowed")
    references = info.findall(DS + "Reference")
    if len(references) != 1:
        raise TokenValidationError(f"{what}: expected exactly one Reference")
    reference = references[0]
    signed = signature.getparent()
    element_id = signed.get("ID") if signed is not None else None
    if not element_id or reference.get("URI") != "#" + element_id:
        raise TokenValidationError(f"{what}: Reference does not name the enclosing element")
    transforms = [t.get("Algorithm") for t in reference.findall(f"{DS}Transforms/{DS}Transform")]
    if ENVELOPED not in transforms or not set(transforms) <= {ENVELOPED, EXC_C14N} or len(
        transforms
    ) != len(set(transforms)):
        raise TokenValidationError(
            f"{what}: only the enveloped-signature and exclusive C14N transforms are allowed"
        )
    digest = _algorithm(reference, "DigestMethod", what)
    if digest in SHA1_DIGEST_METHODS and not allow_sha1:
        raise TokenValidationError(f"{what}: SHA-1 digest refused (allow_sha1 is off)")
    if digest not in DIGEST_METHODS | SHA1_DIGEST_METHODS:
        raise TokenValidationError(f"{what}: digest algorithm not allowed")


@functools.lru_cache(maxsize=64)
def _certificate_key(pem: str) -> xmlsec.Key:
    """The IdP certificate as an xmlsec key, parsed once (~0.35 ms per response saved).
    Safe to share: assigning ``ctx.key`` duplicates the key into the context."""
    return xmlsec.Key.from_memory(pem.encode(), _FORMAT.CERT_PEM, None)


def verify_signature(
    signature: Element, certificates: tuple[str, ...], allow_sha1: bool, what: str
) -> None:
    """Verify ``signature`` (enveloped in its parent) with one of ``certificates`` (PEM)."""
    check_signature_shape(signature, allow_sha1, what)
    signed = signature.getparent()
    if not certificates:
        raise TokenValidationError(f"{what}: no IdP signing certificate is configured")
    for pem in certificates:
        ctx = xmlsec.SignatureContext()
        # Only the element the Reference names is registered as an ID, so xmlsec cannot
        # resolve "#id" to anything else.
        ctx.register_id(signed, "ID")
        try:
            # Setting ctx.key makes xmlsec use this key and skip KeyInfo entirely.
            ctx.key = _certificate_key(pem)
            ctx.verify(signature)
        except xmlsec.Error:
            continue
        return
    raise TokenValidationError(
        f"{what}: signature does not verify with the configured IdP certificates"
    )


def decrypt_assertion(encrypted: Element, sp_key_pem: str | None) -> Element:
    """Decrypt an EncryptedAssertion with our SP key; returns the (still untrusted) element."""
    if not sp_key_pem:
        raise TokenValidationError("encrypted assertion received but no sp_key_file is configured")
    data = encrypted.findall(XENC + "EncryptedData")
    if len(data) != 1:
        raise TokenValidationError("EncryptedAssertion must hold exactly one EncryptedData")
    manager = xmlsec.KeysManager()
    try:
        manager.add_key(xmlsec.Key.from_memory(sp_key_pem.encode(), _FORMAT.PEM, None))
        decrypted = xmlsec.EncryptionContext(manager).decrypt(data[0])
    except xmlsec.Error:
        raise TokenValidationError(
            "encrypted assertion could not be decrypted with our key"
        ) from None
    if not hasattr(decrypted, "tag"):
        raise TokenValidationError("encrypted assertion did not decrypt to an element")
    return decrypted
