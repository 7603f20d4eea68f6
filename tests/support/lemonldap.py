"""A second real IdP for tests: Debian's LemonLDAP::NG portal, both OpenID Provider and SAML IdP.

It is independent of the first pair (npm oidc-provider, SimpleSAMLphp): Perl, with Lasso (the
C SAML library) underneath, maintained by Worteks and packaged by Debian. The portal is a PSGI
application, so Plack's own ``plackup`` serves it on a free 127.0.0.1 port; no FastCGI server
and no Apache/nginx are involved, and nothing under /etc or /var/lib is used: a private
``lemonldap-ng.ini`` (found through ``LLNG_DEFAULTCONFFILE``) points at a temp directory with
the file-based configuration (``lmConf-N.json``), sessions and caches.

Sign-in is LemonLDAP::NG's "Demo" backend: users ``dwho``, ``rtyler`` and ``msmith`` with the
login as password and the attributes uid, cn, mail; groups ``timelords``, ``earthlings``,
``users``. The configuration adds what a real deployment adds: macros that split ``cn`` into
given and family names, a ``groups`` claim, the OIDC relying party and the SAML SP.

Relying parties and SPs are registered at run time the way an administrator does it, as a new
configuration number; the portal reloads it (``checkTime = 1``), and :meth:`LemonLdap.save`
waits until the SAML metadata shows the new revision.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.saml_attacks import KeyPair, make_keypair

PORTAL_PSGI = Path("/usr/share/lemonldap-ng/portal/htdocs/index.psgi")

# The Demo backend's people (Lemonldap::NG::Portal::UserDB::Demo); the password is the login.
DEMO_USERS: dict[str, dict[str, Any]] = {
    "dwho": {"email": "dwho@badwolf.org", "given_name": "Doctor", "family_name": "Who",
             "groups": ["timelords", "users"]},
    "rtyler": {"email": "rtyler@badwolf.org", "given_name": "Rose", "family_name": "Tyler",
               "groups": ["earthlings", "users"]},
    "msmith": {"email": "msmith@badwolf.org", "given_name": "Mickey", "family_name": "Smith",
               "groups": ["earthlings", "users"]},
}

BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"

FILES = Path(__file__).parent / "lemonldap"  # ini and psgi templates, static lmConf part


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _public_pem(keys: KeyPair) -> str:
    cert = x509.load_pem_x509_certificate(keys.cert_pem.encode())
    return cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass
class LemonLdap:
    """A running LemonLDAP::NG portal and its editable configuration."""

    base_url: str
    directory: Path
    conf: dict[str, Any]
    client_id: str = "gateway"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def issuer(self) -> str:
        """The OpenID Provider's issuer (discovery at ``/.well-known/openid-configuration``)."""
        return self.base_url

    @property
    def saml_metadata_url(self) -> str:
        return f"{self.base_url}/saml/metadata"

    @property
    def saml_entity_id(self) -> str:
        return f"{self.base_url}/saml/metadata"

    def log_tail(self, lines: int = 15) -> str:
        """The portal's distinct error and warning lines, oldest first (for failure
        messages: the first error is the cause, later ones repeat it on every request)."""
        path = self.directory / "portal.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        seen: dict[str, None] = {}
        for line in text.splitlines():
            if "[error]" in line or "[warn]" in line:
                seen.setdefault(re.sub(r"^\[[^]]*\] \[LLNG:\d+\] ", "", line), None)
        return "\n".join(list(seen)[:lines])

    def allow_redirect_uri(self, uri: str) -> None:
        """Add ``uri`` to the gateway relying party's exact-match redirect URIs."""
        options = self.conf["oidcRPMetaDataOptions"]["gateway"]
        uris = options["oidcRPMetaDataOptionsRedirectUris"].split()
        if uri not in uris:
            options["oidcRPMetaDataOptionsRedirectUris"] = " ".join([*uris, uri])
            self.save()

    def set_rp_options(self, **options: Any) -> None:
        """Set ``oidcRPMetaDataOptions*`` of the gateway relying party (without that prefix,
        e.g. ``IDTokenForceClaims=1``)."""
        rp = self.conf["oidcRPMetaDataOptions"]["gateway"]
        changed = {f"oidcRPMetaDataOptions{k}": v for k, v in options.items()}
        if any(rp.get(k) != v for k, v in changed.items()):
            rp.update(changed)
            self.save()

    def register_sp(self, name: str, metadata: bytes, **options: Any) -> None:
        """Trust the SAML SP described by ``metadata`` (the gateway's /metadata output) under
        the configuration key ``name``. Only the given ``samlSPMetaDataOptions*`` are set
        (without that prefix, e.g. ``EncryptionMode="assertion"``): the rest keep
        LemonLDAP::NG's defaults for a newly added SP."""
        self.conf.setdefault("samlSPMetaDataXML", {})[name] = {
            "samlSPMetaDataXML": metadata.decode()
        }
        self.conf.setdefault("samlSPMetaDataOptions", {})[name] = {
            f"samlSPMetaDataOptions{k}": v for k, v in options.items()
        }
        # "mandatory;name;format;friendly name" per session key; groups is multi-valued
        # (the session joins values with multiValuesSeparator, split again per value).
        self.conf.setdefault("samlSPMetaDataExportedAttributes", {})[name] = {
            "uid": f"1;uid;{BASIC}",
            "mail": f"1;email;{BASIC}",
            "given_name": f"0;givenName;{BASIC}",
            "family_name": f"0;sn;{BASIC}",
            "cn": f"0;displayName;{BASIC}",
            "groups": f"0;groups;{BASIC}",
        }
        self.save()

    def save(self) -> None:
        """Write the configuration as the next ``lmConf-N.json`` and wait until the portal
        serves it (its SAML metadata carries the revision in OrganizationName)."""
        self.conf["cfgNum"] += 1
        revision = f"gateway-tests-r{self.conf['cfgNum']}"
        self.conf["samlOrganizationName"] = revision
        self.conf["cfgDate"] = str(int(time.time()))
        path = self.directory / "conf" / f"lmConf-{self.conf['cfgNum']}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.conf, indent=1))
        tmp.rename(path)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if revision in httpx.get(self.saml_metadata_url, timeout=5).text:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"LemonLDAP::NG did not load {path.name}: {self.log_tail()}")


def _configuration(base_url: str, directory: Path, client_id: str, client_secret: str,
                   oidc_keys: KeyPair, saml_keys: KeyPair) -> dict[str, Any]:
    """lmConf-1.json: ``lemonldap/lmConf-base.json`` plus what depends on this run.

    What the base holds, and why: the Demo backend, with macros that split ``cn`` into
    ``given_name`` / ``family_name`` (what a real deployment maps from its directory);
    claims released by scope, the OIDC Core way (``oidcServiceIgnoreScopeForClaims`` 0); one
    confidential RP ``gateway`` with RS256 ID tokens, consent bypassed and PKCE required (the
    gateway always sends S256, so requiring it proves the provider checks it); the
    non-standard ``groups`` scope declared per RP in ``oidcRPMetaDataOptionsExtraClaims``
    (a top-level key despite its name); exported claims as "session key;type;array", with
    ``groups`` always an array; a SAML IdP with no SP yet.
    """
    var = directory / "var"

    def storage(name: str) -> dict[str, str]:
        (var / name / "lock").mkdir(parents=True)
        return {"Directory": str(var / name), "LockDirectory": str(var / name / "lock")}

    conf: dict[str, Any] = json.loads((FILES / "lmConf-base.json").read_text())
    conf.update({
        "cfgNum": 1,
        "cfgDate": str(int(time.time())),
        "portal": base_url + "/",
        # The SSO cookie's domain: the portal's host (the cookie jar accepts an IP that is
        # exactly the request host).
        "domain": "127.0.0.1",
        "globalStorageOptions": {
            **storage("sessions"),
            "generateModule": "Lemonldap::NG::Common::Apache::Session::Generate::SHA256",
        },
        "persistentStorageOptions": storage("psessions"),
        "localSessionStorageOptions": {
            "cache_root": str(var / "cache"), "cache_depth": 3, "default_expires_in": 600,
            "directory_umask": "007", "namespace": "lemonldap-ng-sessions",
        },
        "oidcServiceMetaDataIssuer": base_url,
        "oidcServicePrivateKeySig": oidc_keys.key_pem,
        "oidcServicePublicKeySig": _public_pem(oidc_keys),
        "samlServicePrivateKeySig": saml_keys.key_pem,
        "samlServicePublicKeySig": saml_keys.cert_pem,
        "samlOrganizationName": "gateway-tests-r1",
        "samlOrganizationURL": base_url,
    })
    conf["oidcRPMetaDataOptions"]["gateway"].update({
        "oidcRPMetaDataOptionsClientID": client_id,
        "oidcRPMetaDataOptionsClientSecret": client_secret,
    })
    return conf


@pytest.fixture(scope="session")
def lemonldap() -> Iterator[LemonLdap]:
    """Start a LemonLDAP::NG portal on a free port for the session; stop it afterwards."""
    plackup = shutil.which("plackup")
    if plackup is None or not PORTAL_PSGI.exists():
        pytest.fail(
            "LemonLDAP::NG's portal (apt: liblemonldap-ng-portal-perl, liblasso-perl and the "
            "modules scripts/setup.sh lists) is required: run scripts/setup.sh --test"
        )
    directory = Path(tempfile.mkdtemp(prefix="llng-"))
    try:
        yield from _serve(plackup, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _serve(plackup: str, directory: Path) -> Iterator[LemonLdap]:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    (directory / "conf").mkdir()
    client_secret = secrets.token_urlsafe(24)
    conf = _configuration(base_url, directory, "gateway", client_secret,
                          make_keypair("lemonldap-ng oidc test key"),
                          make_keypair("lemonldap-ng saml test idp"))
    (directory / "conf" / "lmConf-1.json").write_text(json.dumps(conf, indent=1))
    (directory / "lemonldap-ng.ini").write_text((FILES / "lemonldap-ng.ini").read_text().format(
        log_level=os.environ.get("LLNG_TEST_LOG_LEVEL", "notice"), conf=directory / "conf",
    ))
    env = dict(os.environ, LLNG_DEFAULTCONFFILE=str(directory / "lemonldap-ng.ini"))
    with (directory / "portal.log").open("w") as log:
        process = subprocess.Popen(
            [plackup, "-s", "HTTP::Server::PSGI", "--host", "127.0.0.1", "--port", str(port),
             "-E", "deployment", str(FILES / "portal.psgi")],
            env=env, cwd=directory, stdout=log, stderr=subprocess.STDOUT,
        )
        llng = LemonLdap(base_url, directory, conf, client_secret=client_secret)
        try:
            _wait_ready(llng, process)
            yield llng
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _wait_ready(llng: LemonLdap, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"LemonLDAP::NG exited: {llng.log_tail()}")
        try:
            probe = httpx.get(f"{llng.issuer}/.well-known/openid-configuration", timeout=2)
            if probe.status_code == 200 and probe.json().get("issuer") == llng.issuer:
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.2)
    pytest.fail(f"LemonLDAP::NG did not answer discovery within 30 s: {llng.log_tail()}")


# --- playing the browser at the portal -------------------------------------------------------

_FORM = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.I | re.S)
_INPUT = re.compile(r"<input\b[^>]*>", re.I)
_ATTR = re.compile(r"([\w-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")


def _attrs(tag: str) -> dict[str, str]:
    return {k.lower(): html.unescape(a or b) for k, a, b in _ATTR.findall(tag)}


def _forms(page: str, base: str) -> list[tuple[str, dict[str, str]]]:
    forms = []
    for head, body in _FORM.findall(page):
        action = _attrs(head).get("action") or base
        fields = {}
        for tag in _INPUT.findall(body):
            attrs = _attrs(tag)
            if "name" in attrs:
                fields[attrs["name"]] = attrs.get("value", "")
        forms.append((urljoin(base, action), fields))
    return forms


async def sign_in(
    http: httpx.AsyncClient, start_url: str, username: str, password: str | None = None
) -> httpx.Response:
    """Play the browser at the portal: follow ``start_url`` (an OIDC authorization or SAML
    SSO redirect), submit the login form as ``username``, and return the first answer that
    leaves the portal: the redirect to the gateway's callback (OIDC), or the auto-submitting
    page holding ``SAMLResponse`` (SAML); or the page where the portal stopped after the
    login (an error, see :func:`portal_error`). The portal's cookies stay in ``http``'s jar.
    """
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(start_url))
    url, method, data = start_url, "GET", None
    logged_in = False
    for _ in range(12):
        response = await http.request(method, url, data=data, follow_redirects=False)
        if response.is_redirect:
            url = urljoin(url, response.headers["location"])
            method, data = "GET", None
            if not url.startswith(origin + "/"):
                return response
            continue
        if response.status_code != 200:
            raise AssertionError(f"portal answered {response.status_code} at {url}")
        forms = _forms(response.text, str(response.url))
        if any("SAMLResponse" in fields for _, fields in forms):
            return response
        login = [(a, f) for a, f in forms if "user" in f and "password" in f]
        if logged_in:
            return response  # the portal stopped here: an error page (see portal_error)
        if not login:
            raise AssertionError(f"unexpected portal page at {url}: {response.text[:400]}")
        action, fields = login[0]
        fields.update(user=username, password=password or username)
        url, method, data, logged_in = action, "POST", fields, True
    raise AssertionError("too many redirects at the portal")


def saml_post_of(page: httpx.Response) -> tuple[str, dict[str, str]]:
    """The (ACS URL, fields) of the portal's auto-submitting SAML POST form."""
    for action, fields in _forms(page.text, str(page.url)):
        if "SAMLResponse" in fields:
            return action, fields
    raise AssertionError(f"no SAMLResponse form on the page (portal error {portal_error(page)})")


_ERROR = re.compile(r'id="errorcontent".*?trmsg="(\d+)"', re.S)


def portal_error(page: httpx.Response) -> int | None:
    """The portal's error code on ``page`` (Lemonldap::NG::Portal::Main::Constants, e.g.
    57 = PE_SAML_SIGNATURE_ERROR), or None when the page shows no error."""
    match = _ERROR.search(page.text)
    return int(match.group(1)) if match else None
