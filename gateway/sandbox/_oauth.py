"""OAuth 2.0 pieces of the demo OpenID provider (:mod:`gateway.sandbox.oidc_idp`).

Demo and tests only; nothing here is used by ``gateway serve``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from starlette.requests import Request

from gateway.sandbox.employees import DemoEmployee

PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
PKCE_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


@dataclass(frozen=True, slots=True)
class DemoClient:
    """A registered relying party (the gateway). Redirect URIs are matched exactly."""

    secret: str
    redirect_uris: Sequence[str]
    post_logout_redirect_uris: Sequence[str] = ()

    def __post_init__(self) -> None:
        # A bare string would turn "uri in redirect_uris" into a substring match.
        for name in ("redirect_uris", "post_logout_redirect_uris"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"DemoClient.{name} must be a list of URIs, not a string")
            object.__setattr__(self, name, tuple(value))


class OAuthError(Exception):
    """An RFC 6749 error answered as JSON by the token and userinfo endpoints."""

    def __init__(self, error: str, description: str, status: int = 400,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}


def with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` appended to its (possibly existing) query."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def s256(verifier: str) -> str:
    """The PKCE S256 code challenge for ``verifier`` (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def pkce_matches(verifier: str, challenge: str) -> bool:
    """Whether ``verifier`` is well-formed (RFC 7636 4.1) and hashes to ``challenge``."""
    if not PKCE_VERIFIER.match(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)


def employee_claims(employee: DemoEmployee) -> dict[str, Any]:
    """The identity claims the demo OP releases for an employee (ID token and userinfo)."""
    return {
        "sub": employee.sub,
        "email": employee.email,
        "email_verified": True,
        "given_name": employee.given_name,
        "family_name": employee.family_name,
        "name": employee.display_name,
        "preferred_username": employee.email,
        "employee_number": employee.employee_number,
        "groups": list(employee.groups),
    }


def authenticate_client(
clients: dict[str, DemoClient], request: Request, form: dict[str, str]
) -> str:
    """The client id, after checking ``client_secret_basic`` or ``client_secret_post``."""
    header = request.headers.get("authorization")
    if header is not None:
        if "client_secret" in form:
            raise OAuthError("invalid_request", "use one client authentication method")
        scheme, _, value = header.partition(" ")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        raw_id, sep, raw_secret = decoded.partition(":")
        if scheme.lower() != "basic" or not sep:
            raise OAuthError("invalid_client", "client authentication failed", 401,
                              {"WWW-Authenticate": 'Basic realm="demo-op"'})
        # RFC 6749 2.3.1: both parts are form-urlencoded before base64.
        client_id, secret = unquote(raw_id.replace("+", " ")), unquote(
            raw_secret.replace("+", " "))
        if form.get("client_id", client_id) != client_id:
            raise OAuthError("invalid_request", "client_id does not match")
        challenge = {"WWW-Authenticate": 'Basic realm="demo-op"'}
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        challenge = {}
    client = clients.get(client_id)
    if client is None or not hmac.compare_digest(
        client.secret.encode("utf-8"), secret.encode("utf-8")
    ):
        raise OAuthError("invalid_client", "client authentication failed", 401, challenge)
    return client_id
