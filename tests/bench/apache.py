"""Apache httpd for the anchors benchmark: a ServerRoot under a temp dir, a generated config,
Debian's ``apache2`` binary and modules, 127.0.0.1 only, never the system service.

One instance per front door (mod_auth_openidc, mod_auth_mellon), each loading only the modules
it needs, each in front of its own :mod:`tests.bench.anchor_backend`. Every choice below is
what a competent admin would make for this job; the reasons are in the comments and in the
README's "Anchors" section.

* **MPM event, one child process** (``ServerLimit 1``, ``ThreadsPerChild 64``): comparable to
  the gateway's one process. Both modules make blocking back-channel calls (mod_auth_openidc's
  token request), so a sign-in holds a thread while the IdP answers: 64 threads leave room for
  the 16 concurrent employees plus kept-alive connections. ``-X`` would serialise everything.
* **no access log**, ``LogLevel warn``: the gateway runs without an access log too.
  ``AllowOverride None``: no ``.htaccess`` lookups on every request.
* **mod_proxy_http** to the backend (pooled, kept-alive connections; reuse is its default).
  The identity goes in request headers Apache sets itself (``RequestHeader set`` overwrites
  whatever the browser sent).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.procstat import ProcTree

MODULES = Path("/usr/lib/apache2/modules")
BINARY = "/usr/sbin/apache2"
# The modules every instance loads; each front door adds its own.
BASE_MODULES = (
    "mpm_event",
    "authn_core",
    "authz_core",
    "authz_user",
    "headers",
    "proxy",
    "proxy_http",
)
OIDC_CLIENT_ID = "apache-anchor"
# Sessions (and mod_auth_openidc's replay entries) the shared-memory caches hold: more than the
# sign-ins in flight, so no live session is evicted; no larger, since both modules scan their
# cache linearly on every lookup.
OIDC_CACHE_ENTRIES = 4096
MELLON_CACHE_ENTRIES = 1024
MELLON_ENTRY_BYTES = 65_536  # mod_auth_mellon's minimum; the default is 192 KiB per session


def available() -> str | None:
    """Why the anchors cannot run here (missing binary or modules), or None."""
    if not Path(BINARY).exists():
        return f"{BINARY} not found (Debian package apache2)"
    for module, package in (
        ("auth_openidc", "libapache2-mod-auth-openidc"),
        ("auth_mellon", "libapache2-mod-auth-mellon"),
    ):
        if not (MODULES / f"mod_{module}.so").exists():
            return f"mod_{module}.so not found (Debian package {package})"
    return None


def free_port() -> int:
    """A free 127.0.0.1 port (Apache binds its own sockets; see :meth:`Apache.start`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _common(root: Path, port: int, modules: tuple[str, ...]) -> str:
    loads = "\n".join(
        f'LoadModule {m}_module "{MODULES}/mod_{m}.so"' for m in (*BASE_MODULES, *modules)
    )
    # As root, Apache's child must run as an unprivileged user (it refuses root).
    user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
    return f"""ServerRoot "{root}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{root}/run/httpd.pid"
DefaultRuntimeDir "{root}/run"
ErrorLog "{root}/logs/error.log"
LogLevel warn
{loads}
{user}StartServers 1
ServerLimit 1
ThreadLimit 64
ThreadsPerChild 64
MaxRequestWorkers 64
MinSpareThreads 1
MaxSpareThreads 128
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 5
Timeout 60
DocumentRoot "{root}/htdocs"
<Directory />
  AllowOverride None
  Require all granted
</Directory>
"""


def _forward(backend: int, given: str, family: str, groups: str) -> str:
    return f"""  RequestHeader set X-Remote-User "expr=%{{REMOTE_USER}}"
  RequestHeader set X-Given-Name "%{{{given}}}e"
  RequestHeader set X-Family-Name "%{{{family}}}e"
  RequestHeader set X-Groups "%{{{groups}}}e"
  ProxyPass "http://127.0.0.1:{backend}/login/"
"""


def openidc_conf(
    root: Path, port: int, backend: int, metadata_url: str, client_id: str, secret: str
) -> str:
    """mod_auth_openidc as a relying party of the demo OpenID provider.

    ``metadata_url``: the provider's discovery document, fetched once and cached by the
    module. The module refuses http endpoints in static ``OIDCProvider*`` directives but
    takes them from discovery, and the demo provider is http; for the variant without the
    userinfo call, the harness serves a copy of the document without ``userinfo_endpoint``
    (the gateway skips userinfo when the ID token carries the claims). ``OIDCSSLValidateServer
    Off`` only matters for https and changes nothing here.
    """
    return (
        _common(root, port, ("auth_openidc",))
        + f"""OIDCProviderMetadataURL {metadata_url}
OIDCProviderTokenEndpointAuth client_secret_basic
OIDCClientID {client_id}
OIDCClientSecret {secret}
OIDCRedirectURI http://127.0.0.1:{port}/oidc/callback
OIDCCryptoPassphrase {secrets.token_hex(32)}
OIDCScope "openid email profile"
OIDCResponseType code
OIDCPKCEMethod S256
OIDCSSLValidateServer Off
OIDCSessionType server-cache
OIDCCacheType shm
OIDCCacheShmMax {OIDC_CACHE_ENTRIES}
OIDCRemoteUserClaim email
OIDCPassClaimsAs environment
<Location /oidc/>
  AuthType openid-connect
  Require valid-user
</Location>
<Location /login/>
  AuthType openid-connect
  Require claim groups:Staff
"""
        + _forward(backend, "OIDC_CLAIM_given_name", "OIDC_CLAIM_family_name", "OIDC_CLAIM_groups")
        + "</Location>\n"
    )


def mellon_conf(root: Path, port: int, backend: int) -> str:
    """mod_auth_mellon as an SP of the demo SAML IdP (metadata and key files under ``root``),
    configured as its README shows: the SP/IdP settings in ``<Location />``, the protected
    location inheriting them. See :func:`mellon_env` for what "tuned" adds.

    Also tuned here: the session cache sized to need, entries at mellon's minimum size (the
    default is 192 KiB each). AuthnRequests are unsigned (the IdP's metadata says it does not
    want them signed; the gateway sends them unsigned too); response and assertion
    signatures are checked, as by default.
    """
    return (
        _common(root, port, ("auth_mellon",))
        + f"""MellonCacheSize {MELLON_CACHE_ENTRIES}
MellonCacheEntrySize {MELLON_ENTRY_BYTES}
MellonLockFile "{root}/run/mellon.lock"
<Location />
  MellonEnable info
  MellonEndpointPath /mellon
  MellonSPentityId "http://127.0.0.1:{port}/mellon/metadata"
  MellonSPMetadataFile "{root}/saml/sp.xml"
  MellonSPPrivateKeyFile "{root}/saml/sp.key"
  MellonSPCertFile "{root}/saml/sp.crt"
  MellonIdPMetadataFile "{root}/saml/idp.xml"
  MellonUser email
  MellonMergeEnvVars On ","
  MellonSecureCookie Off
</Location>
<Location /login/>
  AuthType Mellon
  MellonEnable auth
  MellonCond groups Staff
  Require valid-user
"""
        + _forward(backend, "MELLON_givenName", "MELLON_sn", "MELLON_groups")
        + "</Location>\n"
    )


def mellon_env(root: Path) -> dict[str, str]:
    """The environment of the tuned mod_auth_mellon (an admin sets it in
    ``/etc/apache2/envvars``).

    Why: mellon keeps its Lasso server (parsed SP and IdP metadata, keys) on the merged
    per-directory configuration that first sets those directives. Apache merges
    ``<Location>`` sections per request and mellon's directives are not allowed at server
    level, so in practice a new Lasso server is built for every request that needs one, and
    each build makes xmlsec load OpenSSL's default trust store, the system CA bundle (~140
    certificates, tens of ms with OpenSSL 3). Mellon never uses those CAs (the IdP's key is
    pinned by its metadata; ``MellonIdPCAFile`` is separate), so pointing OpenSSL's default
    paths at an empty file and directory removes that cost and changes no check.
    """
    empty = root / "saml" / "no-default-ca"
    empty.mkdir(parents=True, exist_ok=True)
    (root / "saml" / "no-default-ca.pem").write_bytes(b"")
    return {"SSL_CERT_FILE": str(root / "saml" / "no-default-ca.pem"), "SSL_CERT_DIR": str(empty)}


def mellon_sp_metadata(port: int, cert_base64: str) -> str:
    """The mellon SP's metadata: entity id, POST ACS, signing certificate, unsigned requests."""
    base = f"http://127.0.0.1:{port}/mellon"
    return f"""<?xml version="1.0"?>
<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{base}/metadata">
 <SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true"
   protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
  <KeyDescriptor use="signing">
   <ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data>
    <ds:X509Certificate>{cert_base64}</ds:X509Certificate>
   </ds:X509Data></ds:KeyInfo>
  </KeyDescriptor>
  <NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</NameIDFormat>
  <AssertionConsumerService index="0" isDefault="true"
    Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{base}/postResponse"/>
 </SPSSODescriptor>
</EntityDescriptor>
"""


@dataclass
class Apache:
    """One httpd instance; :meth:`write` its files, then :meth:`start`."""

    name: str
    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write(self, conf: str, files: dict[str, bytes] | None = None) -> None:
        """Create the ServerRoot: config, run/log dirs, a static probe file and ``files``
        (relative path -> bytes; ``*.key`` readable only by root and Apache's group)."""
        for sub in ("run", "logs", "htdocs", "saml"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "htdocs" / "alive.txt").write_text("ok\n")
        (self.root / "httpd.conf").write_text(conf)
        for rel, data in (files or {}).items():
            path = self.root / rel
            path.write_bytes(data)
            if path.suffix == ".key":
                path.chmod(0o640)
                if os.geteuid() == 0:
                    shutil.chown(path, group="www-data")
        # The child (www-data when started as root) reads the ServerRoot and writes run/.
        self.root.chmod(0o755)
        for sub in ("run", "saml", "htdocs"):
            (self.root / sub).chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root / "run", user="www-data", group="www-data")

    def start(self, timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        """``apache2 -d ROOT -f httpd.conf -DFOREGROUND`` in its own session, with ``env``
        added to the environment; waits until it serves the probe file."""
        log = open(self.root / "logs" / "stdout.log", "wb")
        self.proc = subprocess.Popen(
            [BINARY, "-d", str(self.root), "-f", str(self.root / "httpd.conf"), "-DFOREGROUND"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"apache {self.name} exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/alive.txt", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"apache {self.name} did not become ready: {self.log_tail()}")

    def tree(self) -> ProcTree:
        assert self.proc is not None
        return ProcTree(self.proc.pid)

    def log_tail(self, chars: int = 3000) -> str:
        text = ""
        for log in ("stdout.log", "error.log"):
            path = self.root / "logs" / log
            if path.exists():
                text += path.read_text(errors="replace")[-chars:]
        return text

    def stop(self) -> None:
        """SIGTERM to Apache's process group (parent and child), SIGKILL if it lingers."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
