"""TLS: the CA stores outgoing connections trust, and the checks on the files that feed them.

Outgoing trust (IdP discovery/JWKS/token/userinfo/SAML metadata, LMS APIs):

* **Public bundle** — certifi's Mozilla bundle, as httpx uses by default. When the environment
  sets ``SSL_CERT_FILE`` and/or ``SSL_CERT_DIR`` those take its place (OpenSSL's, curl's and
  httpx's meaning of the variables; ``SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt``
  selects the operating system's store). Python's ``ssl`` reads them only through
  ``load_default_certs``, and certifi ignores them, so they are read here explicitly.
* ``ca_file`` (``[gateway]``, overridable per IdP and per app) — a PEM bundle of private CAs.
  ``ca_mode = "add"`` (default) trusts it *alongside* the public bundle, which is what a
  TLS-inspecting corporate proxy or an internal IdP next to a public LMS needs;
  ``"replace"`` trusts *only* it (a locked-down deployment, or pinning an IdP to its CA).
  An intermediate CA in the file is enough (partial chains are accepted, as Python 3.13
  does by default).

Every context verifies host names and requires TLS 1.2 or later. Building one parses the
whole public bundle (~20 ms measured here, more on slow machines, and memory per copy), so
:class:`ClientContexts` builds each distinct (bundle, mode) once and hands the same object to
every client that needs it.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import certifi

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings, Settings

CaMode = Literal["add", "replace"]

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def ca_file_problem(key: str, path: str) -> str | None:
    """Why ``path`` cannot serve as a CA bundle (``key: reason``), or None when it can."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(8 * 1024 * 1024)
    except FileNotFoundError:
        return f"{key}: no such file {path!r}"
    except OSError as exc:
        return f"{key}: cannot read {path!r}: {exc.strerror}"
    if _PEM_CERT not in data:
        # DER, a private key, or a PKCS#12 file are the usual mistakes.
        return f"{key}: {path!r} is not a PEM certificate bundle (no BEGIN CERTIFICATE block)"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=path)
    except (ssl.SSLError, ValueError):
        return f"{key}: {path!r} holds a PEM block that is not a valid certificate"
    if context.cert_store_stats()["x509"] == 0:
        return f"{key}: {path!r} holds no certificate"
    return None


def cert_key_problem(cert_key: str, cert_file: str, key_key: str, key_file: str) -> str | None:
    """Why ``cert_file`` + ``key_file`` cannot serve TLS, or None when they can."""
    for key, path in ((cert_key, cert_file), (key_key, key_file)):
        if not os.path.isfile(path):
            return f"{key}: no such file {path!r}"
        if not os.access(path, os.R_OK):
            return f"{key}: cannot read {path!r}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            return f"{key_key}: {key_file!r} is not the private key of {cert_file!r}"
        return (
            f"{cert_key}: {cert_file!r} and {key_file!r} are not a PEM certificate and its "
            "unencrypted private key"
        )
    return None


def _new_client_context() -> ssl.SSLContext:
    # Not ssl.create_default_context(): that loads the system store, which "replace" must not.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


class ClientContexts:
    """The SSL contexts of outgoing connections, one per distinct trust setting, shared.

    ``environ`` is read once, at construction (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.public_file = env.get("SSL_CERT_FILE") or None
        self.public_dir = env.get("SSL_CERT_DIR") or None
        if self.public_file is None and self.public_dir is None:
            self.public_file = certifi.where()
        self._built: dict[tuple[str | None, CaMode], ssl.SSLContext] = {}

    def get(self, ca_file: str | None = None, mode: CaMode = "add") -> ssl.SSLContext:
        """The context trusting the public bundle and/or ``ca_file`` as ``mode`` says."""
        if ca_file is None:
            mode = "add"  # nothing to replace the public bundle with
        else:
            ca_file = os.path.realpath(ca_file)
        key = (ca_file, mode)
        context = self._built.get(key)
        if context is None:
            context = _new_client_context()
            if mode == "add":
                context.load_verify_locations(cafile=self.public_file, capath=self.public_dir)
            if ca_file is not None:
                context.load_verify_locations(cafile=ca_file)
            self._built[key] = context
        return context

    def __len__(self) -> int:
        """How many distinct contexts were built."""
        return len(self._built)


def describe_tls_error(exc: BaseException) -> str | None:
    """A one-line reason when ``exc`` (or its cause chain) is a TLS verification failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {current.verify_message}"
        if isinstance(current, ssl.SSLError):
            return f"TLS error: {current.reason or type(current).__name__}"
        current = current.__cause__ or current.__context__
    return None


def effective_trust(
    ca_file: str | None, ca_mode: CaMode | None, gateway: GatewaySettings
) -> tuple[str | None, CaMode]:
    """An IdP's or app's (``ca_file``, ``ca_mode``), falling back to ``[gateway]``'s."""
    return (ca_file or gateway.ca_file, ca_mode or gateway.ca_mode)


def settings_problems(settings: Settings) -> list[str]:
    """Every problem with the CA bundles a configuration names (for
    ``config_rules.check_rules``)."""
    gw = settings.gateway
    problems: list[str | None] = []
    places: list[tuple[str, str | None, CaMode | None]] = [
        ("gateway", gw.ca_file, gw.ca_mode)
    ]
    places += [(f"idp.{name}", idp.ca_file, idp.ca_mode) for name, idp in settings.idp.items()]
    for name, app in settings.app.items():
        connector = getattr(app, app.connector, None)
        if connector is not None:
            http = connector.http
            places.append((f"app.{name}.{app.connector}.http", http.ca_file, http.ca_mode))
    for key, ca_file, ca_mode in places:
        if ca_file is not None:
            problems.append(ca_file_problem(f"{key}.ca_file", ca_file))
        # An inherited "replace" without a file is reported once, at [gateway].
        if ca_mode == "replace" and effective_trust(ca_file, ca_mode, gw)[0] is None:
            problems.append(
                f"{key}.ca_mode: 'replace' needs a ca_file (here or in [gateway]); "
                "nothing would be trusted"
            )
    if settings.store.tls_ca_file is not None:
        problems.append(ca_file_problem("store.tls_ca_file", settings.store.tls_ca_file))
    return [p for p in problems if p]
