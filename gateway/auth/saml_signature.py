"""XML signature verification and assertion decryption (xmlsec, in process).

python3-saml's own ``validate_node_sign`` accepts several References and any transforms, so
the shape of a signature is checked here before xmlsec verifies it: one Reference, naming the
element that carries the Signature, digested with only the enveloped-signature and exclusive
C14N transforms. The key is always one of the configured IdP certificates; xmlsec is handed
that key explicitly, so whatever a message carries in ``KeyInfo`` is never used.

Decryption runs only after the EncryptedData/EncryptedKey algorithms passed an allow-list
(RSA-OAEP key transport; AES-GCM content, AES-CBC only when the operator allows it).
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


# XML Encryption allow-list, checked on the EncryptedData/EncryptedKey elements before xmlsec
# sees them (xmlsec itself would run whatever Algorithm a document names).
# Key transport: RSA-OAEP only (XML Encryption 1.1, 5.5.2). RSA PKCS#1 v1.5 (xmlenc#rsa-1_5) is
# never accepted, not even as a legacy option: a decryptor that answers differently for bad
# padding is a Bleichenbacher oracle (XML Encryption 1.1, 5.5.1 security note; "Bleichenbacher's
# Attack Strikes Again: Breaking PKCS#1 v1.5 in XML Encryption", Jager et al., 2012).
XENC11 = "{http://www.w3.org/2009/xmlenc11#}"
RSA_OAEP_MGF1P = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
RSA_OAEP_11 = "http://www.w3.org/2009/xmlenc11#rsa-oaep"
RSA_1_5 = "http://www.w3.org/2001/04/xmlenc#rsa-1_5"
KEY_TRANSPORT = (RSA_OAEP_MGF1P, RSA_OAEP_11)
# Content: AES-GCM (XML Encryption 1.1, 5.2.4). AES-CBC is malleable and open to the padding
# and "How to Break XML Encryption" (Jager & Somorovsky, 2011) attacks, so it needs the
# operator's allow_legacy_cbc_encryption.
CONTENT_GCM = (
    "http://www.w3.org/2009/xmlenc11#aes256-gcm",
    "http://www.w3.org/2009/xmlenc11#aes192-gcm",
    "http://www.w3.org/2009/xmlenc11#aes128-gcm",
)
CONTENT_CBC = (
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
    "http://www.w3.org/2001/04/xmlenc#aes192-cbc",
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
)


def content_algorithms(allow_cbc: bool) -> tuple[str, ...]:
    """Content encryption algorithms accepted (most preferred first)."""
    return CONTENT_GCM + (CONTENT_CBC if allow_cbc else ())


def _method(element: Element, what: str) -> str:
    methods = element.findall(XENC + "EncryptionMethod")
    if len(methods) != 1 or not methods[0].get("Algorithm"):
        raise TokenValidationError(f"{what} must name exactly one EncryptionMethod")
    return str(methods[0].get("Algorithm"))


def check_encryption(encrypted: Element, allow_cbc: bool) -> Element:
    """Refuse an EncryptedAssertion whose algorithms are not on the allow-list; return its
    EncryptedData. Every EncryptionMethod in the subtree is accounted for, so xmlsec cannot
    be steered to another algorithm through a nested or extra element."""
    data = list(encrypted.iter(XENC + "EncryptedData"))
    if len(data) != 1 or data[0].getparent() is not encrypted:
        raise TokenValidationError("EncryptedAssertion must hold exactly one EncryptedData")
    # Every EncryptedKey, wherever it sits (nested ones included): xmlsec may try any.
    keys = list(encrypted.iter(XENC + "EncryptedKey"))
    if not keys:
        raise TokenValidationError("encrypted assertion carries no EncryptedKey")
    for key in keys:
        transport = _method(key, "EncryptedKey")
        if transport == RSA_1_5:
            raise TokenValidationError("RSA PKCS#1 v1.5 key transport refused (use RSA-OAEP)")
        if transport not in KEY_TRANSPORT:
            raise TokenValidationError("key transport algorithm not allowed (RSA-OAEP only)")
    content = _method(data[0], "EncryptedData")
    if content in CONTENT_CBC and not allow_cbc:
        raise TokenValidationError(
            "assertion encrypted with AES-CBC (refused; allow_legacy_cbc_encryption is off)"
        )
    if content not in content_algorithms(allow_cbc):
        raise TokenValidationError("assertion content encryption algorithm not allowed")
    owners = {id(data[0])} | {id(key) for key in keys}
    for method in encrypted.iter(XENC + "EncryptionMethod"):
        if id(method.getparent()) not in owners:
            raise TokenValidationError("EncryptionMethod outside EncryptedData/EncryptedKey")
    # Key agreement (DH/ECDH-ES) and key references are other ways to a content key: only
    # an inline RSA-OAEP EncryptedKey is accepted.
    for tag in (XENC + "AgreementMethod", DS + "RetrievalMethod", XENC11 + "DerivedKey"):
        if next(encrypted.iter(tag), None) is not None:
            raise TokenValidationError("only an inline EncryptedKey may carry the content key")
    return data[0]


def decrypt_assertion(encrypted: Element, sp_key_pem: str | None, allow_cbc: bool) -> Element:
    """Decrypt an EncryptedAssertion with our SP key; returns the (still untrusted) element.
    The algorithms are checked against the allow-list before anything is decrypted."""
    if not sp_key_pem:
        raise TokenValidationError("encrypted assertion received but no sp_key_file is configured")
    data = check_encryption(encrypted, allow_cbc)
    manager = xmlsec.KeysManager()
    try:
        manager.add_key(xmlsec.Key.from_memory(sp_key_pem.encode(), _FORMAT.PEM, None))
        decrypted = xmlsec.EncryptionContext(manager).decrypt(data)
    except xmlsec.Error:
        raise TokenValidationError(
            "encrypted assertion could not be decrypted with our key"
        ) from None
    if not hasattr(decrypted, "tag"):
        raise TokenValidationError("encrypted assertion did not decrypt to an element")
    return decrypted
