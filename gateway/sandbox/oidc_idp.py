"""A development OpenID Provider for ``gateway demo`` and tests: pick an employee, be signed in.

It speaks enough OpenID Connect for the gateway's real OIDC client: discovery (with RFC 9207
``authorization_response_iss_parameter_supported``), JWKS (one RSA key made at start-up),
``/authorize`` (code flow only, PKCE S256 required, exact ``redirect_uri``), ``/token``
(``client_secret_basic`` or ``client_secret_post``; codes are single-use and expire after 60 s),
``/userinfo`` (bearer) and ``/logout`` (an end-session page).

Anyone who can open the page can be anyone in :mod:`gateway.sandbox.employees`, which is why
the constructor refuses to build it unless ``demo_mode=True``; ``gateway serve`` never does.

Every claim (email, names, ``groups``, ``employee_number``) is in the ID token and in userinfo
whatever the requested scopes are, so the gateway's "generic" claim preset finds them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway.errors import BadRequest, GatewayError
from gateway.sandbox._idp_common import (
    TtlMap,
    choose_page,
    gateway_error_handler,
    is_absolute_http_url,
    read_form,
    render,
    require_demo_mode,
    single_values,
)
from gateway.sandbox._oauth import (
    PKCE_CHALLENGE,
    DemoClient,
    OAuthError,
    authenticate_client,
    employee_claims,
    pkce_matches,
    with_query,
)
from gateway.sandbox.employees import DemoEmployee, find_employee

__all__ = ["DemoClient", "DemoOidcProvider", "employee_claims"]

CODE_TTL = 60.0
PENDING_TTL = 600.0
TOKEN_TTL = 300
_MAX_PARAM = 2048


@dataclass(frozen=True, slots=True)
class _Pending:
    client_id: str
    redirect_uri: str
    state: str | None
    nonce: str | None
    code_challenge: str
    scope: str


@dataclass(frozen=True, slots=True)
class _Grant:
    pending: _Pending
    employee: DemoEmployee
    auth_time: int
    sid: str


@dataclass(frozen=True, slots=True)
class _AccessToken:
    employee: DemoEmployee
    client_id: str


class DemoOidcProvider:
    """A development OpenID Provider served by :attr:`app` (endpoints at the app's root).

    ``issuer`` is the URL where :attr:`app` is reachable (e.g. ``http://127.0.0.1:9001``);
    endpoint URLs are ``issuer`` + ``/authorize``, ``/token``, ... Raises ``RuntimeError``
    unless ``demo_mode`` is True.
    """

    def __init__(
        self,
        issuer: str,
        clients: dict[str, DemoClient],
        *,
        demo_mode: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        require_demo_mode(demo_mode, "DemoOidcProvider")
        if not is_absolute_http_url(issuer) or urlsplit(issuer).query:
            raise ValueError("issuer must be an absolute http(s) URL without query")
        for client_id, client in clients.items():
            bad = [u for u in client.redirect_uris if not is_absolute_http_url(u)]
            if not client.redirect_uris or bad:
                raise ValueError(f"client {client_id}: redirect_uris must be absolute URLs")
        self.issuer = issuer
        self.clients = dict(clients)
        self._clock = clock
        self._base = issuer.rstrip("/")
        self._key = RSAKey.generate_key(
            2048, parameters={"use": "sig", "alg": "RS256"}, private=True, auto_kid=True
        )
        self._pending: TtlMap[_Pending] = TtlMap(PENDING_TTL, clock=clock)
        self._codes: TtlMap[_Grant] = TtlMap(CODE_TTL, clock=clock)
        self._tokens: TtlMap[_AccessToken] = TtlMap(TOKEN_TTL, clock=clock)
        self.app = Starlette(
            routes=[
                Route("/", self._home),
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize, methods=["GET"]),
                Route("/authorize", self._choose, methods=["POST"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/userinfo", self._userinfo, methods=["GET", "POST"]),
                Route("/logout", self._logout, methods=["GET"]),
            ],
            exception_handlers={GatewayError: gateway_error_handler},
        )

    # -- keys ---------------------------------------------------------------------------

    @property
    def kid(self) -> str:
        """The ``kid`` of the signing key."""
        assert self._key.kid is not None
        return self._key.kid

    def jwks(self) -> dict[str, Any]:
        """The public JWKS (what ``/jwks`` serves)."""
        return dict(KeySet([self._key]).as_dict(private=False))

    def discovery(self) -> dict[str, Any]:
        """The discovery document (what ``/.well-known/openid-configuration`` serves)."""
        b = self._base
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{b}/authorize",
            "token_endpoint": f"{b}/token",
            "userinfo_endpoint": f"{b}/userinfo",
            "jwks_uri": f"{b}/jwks",
            "end_session_endpoint": f"{b}/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": [
                "iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce", "sid",
                *employee_claims(_SAMPLE).keys(),
            ],
            "authorization_response_iss_parameter_supported": True,
        }

    # -- endpoints ----------------------------------------------------------------------

    async def _home(self, request: Request) -> Response:
        return render(
            "idp_home.html",
            heading="Demo OpenID provider",
            links=[("Discovery document", "/.well-known/openid-configuration"),
                   ("Signing keys (JWKS)", "/jwks")],
        )

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(self.discovery())

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse(self.jwks())

    async def _authorize(self, request: Request) -> Response:
        names = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce",
                 "code_challenge", "code_challenge_method", "prompt", "response_mode")
        params = single_values(list(request.query_params.multi_items()), names)
        if any(len(v) > _MAX_PARAM for v in params.values()):
            raise BadRequest("authorization request parameter too long")
        client_id = params.get("client_id", "")
        client = self.clients.get(client_id)
        if client is None:
            raise BadRequest("unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            # Never redirect to an unregistered URI, not even with an error.
            raise BadRequest("redirect_uri is not registered for this client")
        state = params.get("state")

        def fail(error: str, description: str) -> Response:
            out = {"error": error, "error_description": description, "iss": self.issuer}
            if state is not None:
                out["state"] = state
            return RedirectResponse(with_query(redirect_uri, out), status_code=303)

        if params.get("response_type") != "code":
            return fail("unsupported_response_type", "only response_type=code is supported")
        if params.get("response_mode", "query") != "query":
            return fail("invalid_request", "only response_mode=query is supported")
        if "openid" not in params.get("scope", "").split():
            return fail("invalid_scope", "scope must include openid")
        challenge = params.get("code_challenge", "")
        if params.get("code_challenge_method") != "S256" or not PKCE_CHALLENGE.match(challenge):
            return fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
        if params.get("prompt") == "none":
            return fail("login_required", "the demo provider keeps no session")
        txn = self._pending.add(_Pending(
            client_id=client_id, redirect_uri=redirect_uri, state=state,
            nonce=params.get("nonce"), code_challenge=challenge,
            scope=params.get("scope", ""),
        ))
        return choose_page(
            action="/authorize", txn=txn, audience=client_id, protocol="OpenID Connect",
        )

    async def _choose(self, request: Request) -> Response:
        form = await read_form(request, ("txn", "sub", "action"))
        pending = self._pending.pop(form.get("txn", ""))
        if pending is None:
            raise BadRequest("this sign-in request has expired or was already used")
        answer: dict[str, str]
        if form.get("action") == "cancel":
            answer = {"error": "access_denied", "error_description": "the user cancelled"}
        else:
            employee = find_employee(form.get("sub", ""))
            if employee is None:
                raise BadRequest("unknown demo employee")
            grant = _Grant(pending, employee, int(self._clock()), secrets.token_urlsafe(16))
            answer = {"code": self._codes.add(grant)}
        if pending.state is not None:
            answer["state"] = pending.state
        answer["iss"] = self.issuer
        return RedirectResponse(
            with_query(pending.redirect_uri, answer), status_code=303,
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    async def _token(self, request: Request) -> Response:
        try:
            return await self._token_inner(request)
        except OAuthError as exc:
            return JSONResponse(
                {"error": exc.error, "error_description": exc.description},
                status_code=exc.status,
                headers={"Cache-Control": "no-store", **exc.headers},
            )
        except BadRequest as exc:
            return JSONResponse({"error": "invalid_request", "error_description": exc.reason},
                                status_code=400, headers={"Cache-Control": "no-store"})

    async def _token_inner(self, request: Request) -> Response:
        form = await read_form(request, ("grant_type", "code", "redirect_uri",
                                         "code_verifier", "client_id", "client_secret"))
        client_id = authenticate_client(self.clients, request, form)
        if form.get("grant_type") != "authorization_code":
            raise OAuthError("unsupported_grant_type", "only authorization_code is supported")
        # Taken out first: a code is single-use even when this attempt fails.
        grant = self._codes.pop(form.get("code", ""))
        if grant is None or grant.pending.client_id != client_id:
            raise OAuthError("invalid_grant", "the code is invalid, expired or already used")
        if form.get("redirect_uri") != grant.pending.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization")
        verifier = form.get("code_verifier", "")
        if not pkce_matches(verifier, grant.pending.code_challenge):
            raise OAuthError("invalid_grant", "PKCE verification failed")
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": client_id,
            "azp": client_id,
            "iat": now,
            "exp": now + TOKEN_TTL,
            "auth_time": grant.auth_time,
            "sid": grant.sid,
            **employee_claims(grant.employee),
        }
        if grant.pending.nonce is not None:
            claims["nonce"] = grant.pending.nonce
        id_token = jwt.encode({"alg": "RS256", "typ": "JWT", "kid": self.kid}, claims, self._key)
        access_token = self._tokens.add(_AccessToken(grant.employee, client_id))
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL,
                "id_token": id_token,
                "scope": grant.pending.scope,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    async def _userinfo(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        found = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if found is None:
            return JSONResponse(
                {"error": "invalid_token"}, status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return JSONResponse(employee_claims(found.employee), headers={"Cache-Control": "no-store"})

    async def _logout(self, request: Request) -> Response:
        params = single_values(
            list(request.query_params.multi_items()),
            ("id_token_hint", "post_logout_redirect_uri", "state", "client_id"),
        )
        client_id = params.get("client_id") or self._hint_audience(params.get("id_token_hint"))
        client = self.clients.get(client_id or "")
        target = params.get("post_logout_redirect_uri")
        return_url = None
        # Only a URI registered for an identified client is offered as the way back.
        if client is not None and target is not None and target in client.post_logout_redirect_uris:
            state = params.get("state")
            return_url = with_query(target, {"state": state}) if state is not None else target
        return render("signed_out.html", return_url=return_url)

    def _hint_audience(self, hint: str | None) -> str | None:
        """The client an ``id_token_hint`` we issued names (expired hints are fine here)."""
        if not hint:
            return None
        try:
            token = jwt.decode(hint, self._key, algorithms=["RS256"])
        except (JoseError, ValueError):
            return None
        aud = token.claims.get("aud")
        return aud if isinstance(aud, str) and token.claims.get("iss") == self.issuer else None


_SAMPLE = DemoEmployee("s", "s@example.com", "S", "S", "0", ())
