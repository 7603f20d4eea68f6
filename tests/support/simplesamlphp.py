"""A real SAML IdP for tests: Debian's SimpleSAMLphp served by ``php -S`` on 127.0.0.1.

The fixture writes its own configuration into a temp dir (config.php, authsources.php with
``exampleauth:UserPass`` demo employees, a hosted IdP with a fresh test key) and points
SimpleSAMLphp at it with ``SIMPLESAMLPHP_CONFIG_DIR``. Service providers are registered at
run time with :meth:`SimpleSamlPhp.register_sp` from OUR SP metadata XML (SimpleSAMLphp reads
its metadata files on every request, so no restart is needed).

:func:`drive_saml_login` plays the browser: it follows the redirect to the IdP, fills in the
UserPass form and returns the SAMLResponse and RelayState the IdP auto-posts to the ACS.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from lxml import etree

from tests.support.saml_attacks import KeyPair, make_keypair

SSP_ROOT = Path("/usr/share/simplesamlphp")
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"

# username -> (password, attributes). Attribute names are the generic preset's names.
EMPLOYEES: dict[str, tuple[str, dict[str, list[str]]]] = {
    "alice": (
        "alice-pass",
        {
            "uid": ["alice"],
            "email": ["alice@corp.example"],
            "givenName": ["Alice"],
            "sn": ["Archer"],
            "groups": ["staff", "trainers"],
        },
    ),
    "bob": (
        "bob-pass",
        {
            "uid": ["bob"],
            "email": ["bob@corp.example"],
            "givenName": ["Bob"],
            "sn": ["Baker"],
            "groups": ["staff"],
        },
    ),
}


def _php(value: object) -> str:
    """Render a Python value as a PHP literal (only the shapes this module needs)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_php(v) for v in value) + "]"
    if isinstance(value, dict):
        return "[" + ", ".join(f"{_php(k)} => {_php(v)}" for k, v in value.items()) + "]"
    raise TypeError(type(value))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SimpleSamlPhp:
    """A running SimpleSAMLphp IdP."""

    base_url: str
    directory: Path
    keys: KeyPair
    employees: dict[str, tuple[str, dict[str, list[str]]]]
    _sps: dict[str, str] = field(default_factory=dict)

    @property
    def entity_id(self) -> str:
        return f"{self.base_url}/saml2/idp/metadata.php"

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/saml2/idp/metadata.php"

    @property
    def sso_url(self) -> str:
        return f"{self.base_url}/saml2/idp/SSOService.php"

    @property
    def metadata_file(self) -> Path:
        """The IdP's metadata, fetched once and saved beside the config."""
        path = self.directory / "idp-metadata.xml"
        if not path.exists():
            path.write_bytes(httpx.get(self.metadata_url, timeout=10).content)
        return path

    def idp_initiated_url(self, sp_entity_id: str, relay_state: str | None = None) -> str:
        params = {"spentityid": sp_entity_id}
        if relay_state is not None:
            params["RelayState"] = relay_state
        return str(httpx.URL(self.sso_url, params=params))

    def register_sp(
        self,
        sp_metadata: bytes,
        *,
        encrypt_assertion: bool = False,
        sign_response: bool = False,
        sign_assertion: bool = True,
        signature_algorithm: str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    ) -> None:
        """Trust the SP described by ``sp_metadata`` (our /metadata output)."""
        root = etree.fromstring(sp_metadata, etree.XMLParser(resolve_entities=False))
        entity_id = root.get("entityID")
        acs = root.find(f".//{{{MD}}}AssertionConsumerService")
        assert entity_id and acs is not None
        entry: dict[str, object] = {
            "AssertionConsumerService": [
                {"Binding": acs.get("Binding"), "Location": acs.get("Location"), "index": 0}
            ],
            "NameIDFormat": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
            "simplesaml.nameidattribute": "uid",
            "saml20.sign.response": sign_response,
            "saml20.sign.assertion": sign_assertion,
            "signature.algorithm": signature_algorithm,
            "assertion.encryption": encrypt_assertion,
            "attributes.NameFormat": "urn:oasis:names:tc:SAML:2.0:attrname-format:basic",
        }
        keys = []
        for descriptor in root.iter(f"{{{MD}}}KeyDescriptor"):
            cert = descriptor.find(f".//{{{DS}}}X509Certificate")
            assert cert is not None and cert.text
            use = descriptor.get("use")
            keys.append(
                {
                    "encryption": use in (None, "encryption"),
                    "signing": use in (None, "signing"),
                    "type": "X509Certificate",
                    "X509Certificate": "".join(cert.text.split()),
                }
            )
        if keys:
            entry["keys"] = keys
        if root.find(f".//{{{MD}}}SPSSODescriptor").get("AuthnRequestsSigned") == "true":
            entry["validate.authnrequest"] = True
        self._sps[entity_id] = f"$metadata[{_php(entity_id)}] = {_php(entry)};\n"
        (self.directory / "metadata" / "saml20-sp-remote.php").write_text(
            "<?php\n" + "".join(self._sps.values())
        )


def _write_config(directory: Path, base_url: str, keys: KeyPair, employees: dict) -> None:
    for sub in ("metadata", "cert", "log", "data", "tmp", "sessions"):
        (directory / sub).mkdir()
    (directory / "cert" / "idp.pem").write_text(keys.key_pem)
    (directory / "cert" / "idp.crt").write_text(keys.cert_pem)
    config = {
        "baseurlpath": base_url + "/",
        "certdir": str(directory / "cert") + "/",
        "loggingdir": str(directory / "log") + "/",
        "datadir": str(directory / "data") + "/",
        "tempdir": str(directory / "tmp"),
        "metadatadir": str(directory / "metadata") + "/",
        "attributenamemapdir": "/etc/simplesamlphp/attributemap/",
        "secretsalt": os.urandom(16).hex(),
        "auth.adminpassword": os.urandom(16).hex(),
        "technicalcontact_name": "Tests",
        "technicalcontact_email": "tests@example.org",
        "timezone": "UTC",
        "enable.saml20-idp": True,
        "logging.handler": "file",
        "logging.logfile": "simplesamlphp.log",
        "logging.level": 7,
        "module.enable": {"exampleauth": True, "core": True, "saml": True, "admin": True},
        "store.type": "phpsession",
        "session.phpsession.savepath": str(directory / "sessions"),
        "session.cookie.secure": False,
        "session.cookie.samesite": None,
        "language.cookie.secure": False,
        "production": False,
        "admin.checkforupdates": False,
        "trusted.url.domains": ["127.0.0.1"],
        "metadata.sources": [{"type": "flatfile"}],
    }
    (directory / "config.php").write_text(f"<?php\n$config = {_php(config)};\n")
    users = {f"{u}:{pw}": attrs for u, (pw, attrs) in employees.items()}
    # SimpleSAMLphp wants the source class at index 0 and the users as string keys of the
    # same PHP array, which _php cannot express.
    body = ", ".join(f"{_php(k)} => {_php(v)}" for k, v in users.items())
    (directory / "authsources.php").write_text(
        "<?php\n$config = ["
        f"'admin' => ['core:AdminPassword'], "
        f"'employees' => ['exampleauth:UserPass', {body}]];\n"
    )
    hosted = {
        "host": "__DEFAULT__",
        "privatekey": "idp.pem",
        "certificate": "idp.crt",
        "auth": "employees",
        "signature.algorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "saml20.sendartifact": False,
        "NameIDFormat": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    }
    (directory / "metadata" / "saml20-idp-hosted.php").write_text(
        f"<?php\n$metadata['__DYNAMIC:1__'] = {_php(hosted)};\n"
    )
    (directory / "metadata" / "saml20-sp-remote.php").write_text("<?php\n")


@pytest.fixture(scope="session")
def simplesamlphp() -> Iterator[SimpleSamlPhp]:
    """Start SimpleSAMLphp on a free port; yields its URLs, metadata and demo credentials."""
    if shutil.which("php") is None or not SSP_ROOT.exists():
        pytest.fail("php-cli and simplesamlphp (apt) are required for the SAML integration tests")
    directory = Path(tempfile.mkdtemp(prefix="ssp-"))
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    keys = make_keypair("simplesamlphp test idp")
    _write_config(directory, base_url, keys, EMPLOYEES)
    env = dict(os.environ, SIMPLESAMLPHP_CONFIG_DIR=str(directory))
    proc = subprocess.Popen(
        ["php", "-d", f"session.save_path={directory / 'sessions'}", "-d", "display_errors=0",
         "-S", f"127.0.0.1:{port}", "-t", str(SSP_ROOT / "www")],
        env=env, stdout=subprocess.DEVNULL, stderr=(directory / "log" / "php.log").open("w"),
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                probe = httpx.get(f"{base_url}/saml2/idp/metadata.php", timeout=2)
                if probe.status_code == 200 and b"EntityDescriptor" in probe.content:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                logs = (directory / "log" / "php.log").read_text()[-2000:]
                pytest.fail(f"SimpleSAMLphp did not start: {logs}")
            time.sleep(0.1)
        yield SimpleSamlPhp(base_url, directory, keys, EMPLOYEES)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


_FORM = re.compile(r"<form[^>]*action=\"([^\"]*)\"", re.I)
_INPUT = re.compile(r"<input[^>]*>", re.I)
_ATTR = re.compile(r"(\w+)=\"([^\"]*)\"")


def _form(page: str, base: str) -> tuple[str, dict[str, str]]:
    match = _FORM.search(page)
    if match is None:
        raise AssertionError("no form on the IdP page")
    fields: dict[str, str] = {}
    for tag in _INPUT.findall(page):
        attrs = {k.lower(): html.unescape(v) for k, v in _ATTR.findall(tag)}
        if "name" in attrs:
            fields[attrs["name"]] = attrs.get("value", "")
    return urljoin(base, html.unescape(match.group(1))), fields


async def drive_saml_login(
    http: httpx.AsyncClient, redirect_url: str, username: str, password: str
) -> tuple[str, str | None]:
    """Play the browser at the IdP: follow ``redirect_url``, sign in with the UserPass form,
    and return (SAMLResponse, RelayState) from the auto-submitting POST form.

    ``http`` should keep cookies (the IdP's session); it is not sent to the SP.
    """
    response = await http.get(redirect_url, follow_redirects=True)
    for _ in range(4):
        page = response.text
        if response.status_code != 200:
            raise AssertionError(f"IdP answered {response.status_code}")
        action, fields = _form(page, str(response.url))
        if "SAMLResponse" in fields:
            return fields["SAMLResponse"], fields.get("RelayState")
        if "password" in fields:
            fields["username"] = username
            fields["password"] = password
        response = await http.post(action, data=fields, follow_redirects=True)
    raise AssertionError("the IdP never produced a SAMLResponse")
