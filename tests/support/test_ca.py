"""A private test CA (PyPI ``trustme``) and a server certificate for 127.0.0.1 / localhost,
written as PEM files the way an operator would have them: the CA bundle for ``ca_file``, the
server's chain and key for uvicorn / ``gateway serve --tls-cert --tls-key``.

Fixtures (session scope, files in a temporary directory removed at the end):
``private_ca`` — the CA every test server's certificate comes from; ``stranger_ca`` — an
unrelated CA, for "this CA is not trusted" tests.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.sandbox._common import ServerTls

HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class CaFiles:
    """One CA and a server certificate it issued, as files."""

    ca_file: str  # the CA certificate (PEM): what the gateway's ca_file names
    cert_file: str  # the server certificate chain (PEM, leaf first)
    key_file: str  # the server's private key (PEM, unencrypted)
    # base64(SHA-256(SubjectPublicKeyInfo)) of the server certificate: what Chromium's
    # --ignore-certificate-errors-spki-list takes.
    leaf_spki_sha256: str
    ca: trustme.CA

    @property
    def server(self) -> ServerTls:
        return ServerTls(self.cert_file, self.key_file)


def make_ca(directory: Path, name: str = "Gateway Test CA") -> CaFiles:
    """A fresh CA and a server certificate for :data:`HOSTS`, written under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name=name)
    leaf = ca.issue_cert(*HOSTS)
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "server.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_file))
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return CaFiles(
        str(ca_file),
        str(cert_file),
        str(key_file),
        base64.b64encode(hashlib.sha256(spki).digest()).decode(),
        ca,
    )


@pytest.fixture(scope="session")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> CaFiles:
    """The test CA every HTTPS test server's certificate comes from."""
    return make_ca(tmp_path_factory.mktemp("private-ca"))


@pytest.fixture(scope="session")
def stranger_ca(tmp_path_factory: pytest.TempPathFactory) -> CaFiles:
    """A CA nothing was issued by for our servers (trusting it trusts none of them)."""
    return make_ca(tmp_path_factory.mktemp("stranger-ca"), "Someone Else's CA")
