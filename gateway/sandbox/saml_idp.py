"""A development SAML 2.0 identity provider for ``gateway demo`` (and tests).

* ``GET /metadata``: IdP metadata (signing certificate, HTTP-Redirect SSO endpoint).
* ``GET /sso``: an AuthnRequest over the HTTP-Redirect binding (``SAMLRequest`` deflated and
  base64, ``RelayState``); the request must come from the configured SP (``Issuer``) and, when
  it names one, ask for the configured ACS. Request signatures are not checked (the demo IdP
  does not want signed requests, as its metadata says). Shows "Choose a demo employee".
* ``POST /sso``: the choice; answers a page that POSTs a ``SAMLResponse`` (one assertion,
  signed RSA-SHA256 with the IdP's key; attributes listed in :mod:`._saml_build`) and the
  ``RelayState`` to the ACS, by a nonce'd script or by its visible Continue button.
* ``GET /idp-initiated``: the same without an AuthnRequest (no ``InResponseTo``), with the
  configured ``idp_initiated_relay_state``; linked from the home page when that is set.

Anyone who can open it can be anyone in :mod:`gateway.sandbox.employees`, which is why the
constructor refuses to build it unless ``demo_mode=True``; ``gateway serve`` never does.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
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
from gateway.sandbox._saml_build import (
    BINDING_POST,
    SigningKey,
    metadata_xml,
    parse_authn_request,
    signed_response,
)
from gateway.sandbox.employees import find_employee

PENDING_TTL = 600.0
MAX_SAML_REQUEST_CHARS = 16_384  # base64 text in the query string
MAX_INFLATED_BYTES = 65_536
# SAML Bindings 3.4.3 caps RelayState at 80 bytes; we accept longer (a return path may be).
MAX_RELAY_STATE = 2048


@dataclass(frozen=True, slots=True)
class _Pending:
    request_id: str | None
    relay_state: str | None


def inflate_redirect_payload(value: str) -> bytes:
    """Base64-decode and raw-inflate an HTTP-Redirect ``SAMLRequest``, bounded in size."""
    if len(value) > MAX_SAML_REQUEST_CHARS:
        raise BadRequest("SAMLRequest is too large")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("SAMLRequest is not valid base64") from exc
    inflater = zlib.decompressobj(-15)
    try:
        xml = inflater.decompress(raw, MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise BadRequest("SAMLRequest is not DEFLATE-compressed") from exc
    if inflater.unconsumed_tail:
        raise BadRequest("SAMLRequest inflates beyond the size limit")
    return xml


class DemoSamlIdp:
    """A development SAML IdP served by :attr:`app` (endpoints at the app's root).

    ``sso_url_base`` is the URL where :attr:`app` is reachable; the SSO endpoint is
    ``sso_url_base + "/sso"``. ``email_domain`` (if set) is the domain it issues every demo
    employee's address in. Raises ``RuntimeError`` unless ``demo_mode`` is True.
    """

    def __init__(
        self,
        entity_id: str,
        sso_url_base: str,
        sp_entity_id: str,
        sp_acs_url: str,
        *,
        demo_mode: bool,
        idp_initiated_relay_state: str | None = None,
        email_domain: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        require_demo_mode(demo_mode, "DemoSamlIdp")
        if not is_absolute_http_url(sso_url_base) or not is_absolute_http_url(sp_acs_url):
            raise ValueError("sso_url_base and sp_acs_url must be absolute http(s) URLs")
        self.entity_id = entity_id
        self.sso_url = sso_url_base.rstrip("/") + "/sso"
        self.sp_entity_id = sp_entity_id
        self.sp_acs_url = sp_acs_url
        self.idp_initiated_relay_state = idp_initiated_relay_state
        # The domain this IdP issues its employees' addresses in (None: the directory's).
        self.email_domain = email_domain
        self._clock = clock
        self._key = SigningKey.generate("gateway demo SAML IdP", self._now())
        self._metadata = metadata_xml(entity_id, self.sso_url, self._key)
        self._pending: TtlMap[_Pending] = TtlMap(PENDING_TTL, clock=clock)
        self.app = Starlette(
            routes=[
                Route("/", self._home),
                Route("/metadata", self._metadata_endpoint),
                Route("/sso", self._sso, methods=["GET"]),
                Route("/sso", self._choose, methods=["POST"]),
                Route("/idp-initiated", self._idp_initiated, methods=["GET"]),
            ],
            exception_handlers={GatewayError: gateway_error_handler},
        )

    @property
    def certificate_pem(self) -> str:
        """The IdP's signing certificate (PEM), for the demo config to trust."""
        return self._key.cert_pem.decode("ascii")

    @property
    def metadata(self) -> bytes:
        """The IdP metadata XML (what ``/metadata`` serves)."""
        return self._metadata

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), tz=dt.UTC)

    async def _home(self, request: Request) -> Response:
        links = [("IdP metadata", "/metadata")]
        if self.idp_initiated_relay_state is not None:
            links.append(("Start an IdP-initiated sign-in to the demo app", "/idp-initiated"))
        return render("idp_home.html", heading="Demo SAML identity provider", links=links)

    async def _metadata_endpoint(self, request: Request) -> Response:
        return Response(self._metadata, media_type="application/samlmetadata+xml")

    async def _sso(self, request: Request) -> Response:
        params = single_values(
            list(request.query_params.multi_items()),
            ("SAMLRequest", "RelayState", "SigAlg", "Signature"),
        )
        if "SAMLRequest" not in params:
            raise BadRequest("SAMLRequest is missing")
        relay_state = params.get("RelayState")
        if relay_state is not None and len(relay_state) > MAX_RELAY_STATE:
            raise BadRequest("RelayState is too long")
        try:
            authn = parse_authn_request(inflate_redirect_payload(params["SAMLRequest"]))
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        if authn.issuer != self.sp_entity_id:
            raise BadRequest("the AuthnRequest comes from an unknown service provider")
        if authn.acs_url is not None and authn.acs_url != self.sp_acs_url:
            raise BadRequest("the AuthnRequest asks for an unregistered AssertionConsumerService")
        if authn.protocol_binding not in (None, BINDING_POST):
            raise BadRequest("only the HTTP-POST binding is supported for responses")
        txn = self._pending.add(_Pending(authn.id, relay_state))
        return self._choose_page(txn)

    async def _idp_initiated(self, request: Request) -> Response:
        if self.idp_initiated_relay_state is None:
            raise BadRequest("IdP-initiated sign-in is not configured")
        return self._choose_page(self._pending.add(_Pending(None, self.idp_initiated_relay_state)))

    def _choose_page(self, txn: str) -> Response:
        return choose_page(
            action="/sso", txn=txn, audience=self.sp_entity_id, protocol="SAML 2.0",
            cancel=False, email_domain=self.email_domain,
        )

    async def _choose(self, request: Request) -> Response:
        form = await read_form(request, ("txn", "sub"))
        pending = self._pending.pop(form.get("txn", ""))
        if pending is None:
            raise BadRequest("this sign-in request has expired or was already used")
        employee = find_employee(form.get("sub", ""))
        if employee is None:
            raise BadRequest("unknown demo employee")
        employee = employee.at_domain(self.email_domain)
        xml = signed_response(
            issuer=self.entity_id,
            key=self._key,
            employee=employee,
            acs_url=self.sp_acs_url,
            audience=self.sp_entity_id,
            in_response_to=pending.request_id,
            now=self._now(),
        )
        return render(
            "saml_post.html",
            acs_url=self.sp_acs_url,
            saml_response=base64.b64encode(xml).decode("ascii"),
            relay_state=pending.relay_state,
            display_name=employee.display_name,
            audience=self.sp_entity_id,
        )
