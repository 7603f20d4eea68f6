"""SCIM bearer credentials: one or more per IdP, stored only as ``sha256:<hex>`` hashes.

A credential is 256 bits of randomness, so an unsalted SHA-256 is enough to make the
configured value useless to whoever reads the file. Every configured hash is compared in
constant time, without stopping at the first match, so timing tells nothing about which
IdP (if any) a guess came close to.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

from gateway.errors import Forbidden, Unauthorized
from gateway.settings import OidcIdpSettings, SamlIdpSettings

_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{16,512}$")


def hash_token(token: str) -> str:
    """The line a configuration stores for ``token``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random credential and its hash line."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def authenticate(
    authorization: str | None,
    idps: Mapping[str, OidcIdpSettings | SamlIdpSettings],
    app: str,
) -> str:
    """The IdP whose SCIM credential ``Authorization: Bearer ...`` presents.

    Missing, malformed or unknown: Unauthorized (401). A credential of an IdP whose SCIM
    client is not scoped to ``app``: Forbidden (403), checked before the app's existence so
    app names cannot be probed without a credential.
    """
    scheme, _, credential = (authorization or "").strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not _TOKEN.match(credential):
        raise Unauthorized("scim: missing or malformed bearer credential")
    presented = hash_token(credential).encode()
    matched: str | None = None
    for name, idp in idps.items():
        for configured in idp.scim.token_hashes if idp.scim is not None else ():
            if hmac.compare_digest(presented, configured.encode()):
                matched = name
    if matched is None:
        raise Unauthorized("scim: unknown bearer credential")
    scim = idps[matched].scim
    if scim is None or app not in scim.apps:
        raise Forbidden(f"scim: IdP {matched} may not provision app {app[:64]!r}")
    return matched
