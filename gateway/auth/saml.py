"""SAML 2.0 service provider: the SAML front door.

``begin`` sends the browser to the IdP with an AuthnRequest (HTTP-Redirect binding, signed
when ``sign_requests``) and stores the pending login under the request id; the RelayState is
an opaque random value mapped to that id. ``complete`` validates the SAMLResponse posted to
the ACS (``saml_checks``), enforces single use of the request and of the assertion id, accepts
a solicited response only from the browser that started the login (its binding cookie must be
present and match), and maps the verified assertion to an :class:`~gateway.identity.Identity`.
Unsolicited (IdP-initiated) responses are never signed in directly: the web layer holds them
in :attr:`SamlFrontDoor.confirmations` until the person at the browser confirms.

The SAMLResponse is never logged and never appears in an exception message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.auth.base import LoginRequest, Redirect, browser_matches, new_browser_token
from gateway.auth.confirm import EXPIRED, SignInConfirmations
from gateway.auth.saml_attributes import to_identity
from gateway.auth.saml_checks import Expectations, validate_response
from gateway.auth.saml_metadata import (
    IdpMetadata,
    build_sp_metadata,
    inline_metadata,
    load_file_metadata,
    parse_idp_metadata,
)
from gateway.errors import ConfigError, LoginStateError, ReplayDetected, TokenValidationError
from gateway.identity import Identity
from gateway.observability import Metrics, log_event
from gateway.settings import SamlIdpSettings
from gateway.store.base import Store

log = logging.getLogger(__name__)
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
_RETRY_SECONDS = 60.0


def _read(path: str | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read {what} {path}: {exc.strerror}"]) from None


def _instant(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SamlFrontDoor:
    """One ``[idp.<name>]`` with ``type = "saml"``; satisfies ``gateway.auth.base.FrontDoor``."""

    kind = "saml"

    def __init__(
        self,
        name: str,
        settings: SamlIdpSettings,
        http: httpx.AsyncClient,
        store: Store,
        acs_url: str,
        metadata_url: str,
        metrics: Metrics | None = None,
        *,
        dev_mode: bool = False,
        login_timeout: int = 600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.settings = settings
        self._http = http
        self._store = store
        self.acs_url = acs_url
        self.metadata_url = metadata_url
        self._metrics = metrics
        self._dev_mode = dev_mode
        self._login_timeout = login_timeout
        self._clock = clock
        self._sp_key = _read(settings.sp_key_file, "sp_key_file")
        self._sp_cert = _read(settings.sp_cert_file, "sp_cert_file")
        if settings.sign_requests and not self._sp_key:
            raise ConfigError([f"idp.{name}: sign_requests needs sp_key_file"])
        self._metadata: IdpMetadata | None = None
        # Why loading metadata last failed (an operator reason), for /readyz.
        self.last_error: str | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._sp_metadata = build_sp_metadata(settings, acs_url, self._sp_cert)
        # IdP-initiated sign-ins wait here for the employee's "Continue" (see auth/confirm.py).
        self.confirmations = SignInConfirmations(store, f"saml:{name}:confirm")

    @property
    def ready(self) -> bool:
        """True once IdP metadata has been loaded at least once."""
        return self._metadata is not None

    # -- metadata ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load IdP metadata; for a URL, keep refreshing it. Never raises."""
        s = self.settings
        try:
            if s.metadata_url:
                await self._fetch()
                self._refresh = asyncio.create_task(self._refresh_loop())
            elif s.metadata_file:
                self._metadata = load_file_metadata(s)
            else:
                self._metadata = inline_metadata(s)
        except Exception as exc:  # start() must not take the gateway down; readyz reports it
            self.last_error = getattr(exc, "reason", None) or type(exc).__name__ + ": " + str(exc)
            log_event(log, logging.ERROR, "saml metadata not loaded", idp=self.name,
                      reason=self.last_error)
            if s.metadata_url and self._refresh is None:
                self._refresh = asyncio.create_task(self._refresh_loop())

    async def _fetch(self) -> None:
        url = self.settings.metadata_url
        assert url is not None
        if not url.startswith("https://") and not self._dev_mode:
            raise ValueError("metadata_url must be https:// (dev_mode allows http)")
        response = await self._http.get(url, follow_redirects=False)
        response.raise_for_status()
        self._metadata = parse_idp_metadata(response.content, self.settings.entity_id,
                                            self._clock())
        log_event(log, logging.INFO, "saml metadata loaded", idp=self.name,
                  certificates=len(self._metadata.certificates))

    async def _refresh_loop(self) -> None:
        delay = float(self.settings.metadata_refresh_seconds) if self.ready else _RETRY_SECONDS
        while True:
            await asyncio.sleep(delay)
            try:
                await self._fetch()
                self.last_error = None
                delay = float(self.settings.metadata_refresh_seconds)
            except Exception as exc:  # keep the last good copy; try again sooner
                self.last_error = type(exc).__name__
                log_event(log, logging.WARNING, "saml metadata refresh failed; keeping last copy",
                          idp=self.name, reason=type(exc).__name__)
                delay = min(_RETRY_SECONDS, float(self.settings.metadata_refresh_seconds))

    async def aclose(self) -> None:
        """Stop the metadata refresh."""
        if self._refresh is not None:
            self._refresh.cancel()
            # The task only ever ends by cancellation; its outcome carries nothing to report.
            await asyncio.gather(self._refresh, return_exceptions=True)
            self._refresh = None

    def sp_metadata(self) -> bytes:
        """Our SP metadata XML (for ``GET /auth/{idp}/metadata``)."""
        return self._sp_metadata

    def _idp(self) -> IdpMetadata:
        if self._metadata is None:
            raise TokenValidationError(f"IdP {self.name}: metadata has not been loaded")
        return self._metadata

    # -- login ------------------------------------------------------------------------------

    def _key(self, kind: str, value: str) -> str:
        return f"saml:{self.name}:{kind}:{value}"

    async def begin(self, request: LoginRequest) -> Redirect:
        """Store a pending login and return the IdP redirect carrying the AuthnRequest."""
        idp = self._idp()
        request_id = "_" + secrets.token_hex(20)
        relay_state = secrets.token_urlsafe(24)
        browser_token, digest = new_browser_token()
        pending = {"app": request.app, "target": request.target, "return_to": request.return_to,
                   "browser": digest}
        ttl = float(self._login_timeout)
        await self._store.set(self._key("req", request_id), json.dumps(pending).encode(), ttl)
        await self._store.set(self._key("relay", relay_state), request_id.encode(), ttl)
        xml = (
            '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
            f'ID="{request_id}" Version="2.0" IssueInstant="{_instant(self._clock())}" '
            f"Destination={quoteattr(idp.sso_url)} "
            f"AssertionConsumerServiceURL={quoteattr(self.acs_url)} "
            'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
            f"<saml:Issuer>{escape(self.settings.sp_entity_id)}</saml:Issuer>"
            f'<samlp:NameIDPolicy Format={quoteattr(self.settings.name_id_format)} '
            'AllowCreate="true"/></samlp:AuthnRequest>'
        )
        deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
        encoded = base64.b64encode(deflater.compress(xml.encode()) + deflater.flush()).decode()
        query = "SAMLRequest=" + quote(encoded, safe="") + "&RelayState=" + quote(relay_state)
        if self.settings.sign_requests:
            query += "&SigAlg=" + quote(RSA_SHA256, safe="")
            query += "&Signature=" + quote(self._sign(query.encode()), safe="")
        separator = "&" if "?" in idp.sso_url else "?"
        return Redirect(url=idp.sso_url + separator + query, browser_token=browser_token)

    def _sign(self, data: bytes) -> str:
        assert self._sp_key is not None
        key = serialization.load_pem_private_key(self._sp_key.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError([f"idp.{self.name}: sp_key_file must hold an RSA key"])
        return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()

    async def complete(
        self,
        saml_response: str,
        relay_state: str | None,
        browser_token: str | None,
        resolve_unsolicited: Callable[[str | None], LoginRequest],
    ) -> tuple[Identity, LoginRequest]:
        """Validate a POSTed SAMLResponse; return who signed in and where they were going."""
        idp = self._idp()
        s = self.settings
        expectations = Expectations(
            idp_entity_id=idp.entity_id, idp_certificates=idp.certificates,
            sp_entity_id=s.sp_entity_id, acs_url=self.acs_url, signed=s.signed,
            allow_sha1=s.allow_sha1, clock_skew=s.clock_skew_seconds,
            max_bytes=s.max_response_bytes, sp_key_pem=self._sp_key,
            max_issue_instant_age=s.max_issue_instant_age_seconds,
            require_encrypted=s.require_encrypted_assertions,
            allow_legacy_cbc=s.allow_legacy_cbc_encryption,
        )
        now = self._clock()
        assertion = validate_response(saml_response, expectations, now)
        if assertion.in_response_to is None and not s.allow_idp_initiated:
            raise LoginStateError("unsolicited response refused (allow_idp_initiated is off)")
        # Remember the assertion id until it could no longer be accepted anyway.
        ttl = max(1.0, assertion.expires_at - now)
        if not await self._store.set_if_absent(
            self._key("assertion", assertion.assertion_id), b"1", ttl
        ):
            if self._metrics is not None:
                self._metrics.replay_rejections.labels(idp=self.name, kind="assertion").inc()
            raise ReplayDetected("assertion id was already used")
        if assertion.in_response_to is None:
            login = resolve_unsolicited(relay_state)
        else:
            login = await self._pending(assertion.in_response_to, relay_state, browser_token)
        identity = to_identity(self.name, assertion, s.preset, s.attributes)
        return identity, login

    async def _pending(
        self, request_id: str, relay_state: str | None, browser_token: str | None
    ) -> LoginRequest:
        raw = await self._store.pop(self._key("req", request_id))
        if raw is None:
            raise LoginStateError("InResponseTo names no pending request (unknown, used, expired)")
        if relay_state is None:
            raise LoginStateError("RelayState missing from the IdP's response")
        mapped = await self._store.pop(self._key("relay", relay_state))
        if mapped is None or mapped.decode() != request_id:
            raise LoginStateError("RelayState does not belong to this request")
        pending = json.loads(raw)
        # Login CSRF: a response for a pending request counts only in the browser that sent
        # the AuthnRequest. A missing cookie is refused like a foreign one (otherwise an
        # attacker's page could auto-post the attacker's own response); the request was
        # popped above, so the response cannot be tried again in any browser.
        if not browser_matches(pending["browser"], browser_token):
            reason = "binding cookie missing" if not browser_token else "another browser"
            raise LoginStateError(f"sign-in response from {reason}", public=EXPIRED)
        return LoginRequest(app=pending["app"], target=pending["target"],
                            return_to=pending["return_to"])

