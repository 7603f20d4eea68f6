"""The demo identity providers (gateway/sandbox): OIDC code flow with PKCE and SAML SSO.

Both are driven in-process through ``httpx.ASGITransport``: a browser's requests, parsed
from the HTML pages the IdPs answer, exactly as a person clicking through would send them.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import zlib
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import xmlsec
from joserfc import jwt
from joserfc.jwk import KeySet
from lxml import etree
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings

from gateway.sandbox.employees import EMPLOYEES, find_employee
from gateway.sandbox.oidc_idp import DemoClient, DemoOidcProvider
from gateway.sandbox.saml_idp import DemoSamlIdp

ISSUER = "http://op.test"
CLIENT_ID = "gateway"
SECRET = "s3cret-" + "x" * 20
REDIRECT = "http://gw.test/auth/demo/callback"
SAML_IDP = "http://idp.test/metadata"
SP_ENTITY = "http://gw.test/auth/demo-saml/metadata"
ACS = "http://gw.test/auth/demo-saml/acs"
NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
}


class _Form(HTMLParser):
    """The first form of a page: its action and fields, and the choose-employee buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.buttons: dict[str, str] = {}  # e-mail -> sub

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = a.get("action")
        elif tag == "input" and a.get("type") == "hidden":
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "button" and a.get("name") == "sub":
            self.buttons[a["data-email"]] = a["value"]


def parse_form(html: str) -> _Form:
    form = _Form()
    form.feed(html)
    return form


# ----------------------------------------------------------------------------- OIDC


@pytest.fixture
async def op() -> AsyncIterator[tuple[DemoOidcProvider, httpx.AsyncClient]]:
    provider = DemoOidcProvider(
        ISSUER, {CLIENT_ID: DemoClient(SECRET, (REDIRECT,), ("http://gw.test/bye",))},
        demo_mode=True,
    )
    transport = httpx.ASGITransport(app=provider.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield provider, client


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


async def authorize(client: httpx.AsyncClient, challenge: str, email: str,
                    **extra: str) -> dict[str, list[str]]:
    """Open /authorize, pick the employee with ``email``; the callback's query parameters."""
    params = {
        "client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code",
        "scope": "openid email profile", "state": "st-1", "nonce": "n-1",
        "code_challenge": challenge, "code_challenge_method": "S256", **extra,
    }
    page = await client.get("/authorize", params=params)
    assert page.status_code == 200, page.text
    assert "Choose a demo employee" in page.text
    form = parse_form(page.text)
    picked = await client.post(form.action or "", data={**form.fields,
                                                        "sub": form.buttons[email]})
    assert picked.status_code == 303
    location = picked.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return parse_qs(urlsplit(location).query)


async def exchange(client: httpx.AsyncClient, code: str, verifier: str,
                   redirect_uri: str = REDIRECT, basic: bool = True) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": verifier}
    if basic:
        return await client.post("/token", data=data, auth=(CLIENT_ID, SECRET))
    return await client.post("/token", data={**data, "client_id": CLIENT_ID,
                                             "client_secret": SECRET})


def test_oidc_refuses_to_run_outside_demo_mode() -> None:
    with pytest.raises(RuntimeError, match="demo mode"):
        DemoOidcProvider(ISSUER, {CLIENT_ID: DemoClient(SECRET, (REDIRECT,))}, demo_mode=False)


async def test_discovery_advertises_what_the_gateway_needs(op) -> None:
    _, client = op
    doc = (await client.get("/.well-known/openid-configuration")).json()
    assert doc["issuer"] == ISSUER
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["end_session_endpoint"] == f"{ISSUER}/logout"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "client_secret_post"}
    jwks = (await client.get(urlsplit(doc["jwks_uri"]).path)).json()
    assert [k["kid"] for k in jwks["keys"]] and all("d" not in k for k in jwks["keys"])


@pytest.mark.parametrize("basic", [True, False], ids=["client_secret_basic", "client_secret_post"])
async def test_code_flow_gives_a_verifiable_id_token_and_userinfo(op, basic: bool) -> None:
    _, client = op
    employee = EMPLOYEES[1]
    verifier, challenge = pkce()
    callback = await authorize(client, challenge, employee.email)
    assert callback["state"] == ["st-1"] and callback["iss"] == [ISSUER]
    answer = await exchange(client, callback["code"][0], verifier, basic=basic)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    tokens = answer.json()
    keys = KeySet.import_key_set((await client.get("/jwks")).json())
    token = jwt.decode(tokens["id_token"], keys, algorithms=["RS256"])
    claims = token.claims
    assert token.header["kid"] == keys.keys[0].kid
    assert claims["iss"] == ISSUER and claims["aud"] == CLIENT_ID and claims["azp"] == CLIENT_ID
    assert claims["sub"] == employee.sub and claims["nonce"] == "n-1"
    assert claims["exp"] > claims["iat"]
    assert (claims["email"], claims["given_name"], claims["family_name"]) == (
        employee.email, employee.given_name, employee.family_name)
    assert claims["groups"] == list(employee.groups)
    assert claims["employee_number"] == employee.employee_number
    info = await client.get("/userinfo",
                            headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.json()["sub"] == employee.sub and info.json()["email"] == employee.email
    assert (await client.get("/userinfo", headers={"Authorization": "Bearer nope"})
            ).status_code == 401


async def test_code_is_single_use(op) -> None:
    _, client = op
    verifier, challenge = pkce()
    code = (await authorize(client, challenge, EMPLOYEES[0].email))["code"][0]
    assert (await exchange(client, code, verifier)).status_code == 200
    again = await exchange(client, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_wrong_pkce_verifier_is_refused(op) -> None:
    _, client = op
    _, challenge = pkce()
    code = (await authorize(client, challenge, EMPLOYEES[0].email))["code"][0]
    answer = await exchange(client, code, pkce()[0])
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    assert "id_token" not in answer.json()


async def test_wrong_redirect_uri_at_token_endpoint_is_refused(op) -> None:
    _, client = op
    verifier, challenge = pkce()
    code = (await authorize(client, challenge, EMPLOYEES[0].email))["code"][0]
    answer = await exchange(client, code, verifier, redirect_uri=REDIRECT + "x")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


async def test_code_expires_after_a_minute() -> None:
    now = [1_700_000_000.0]
    provider = DemoOidcProvider(ISSUER, {CLIENT_ID: DemoClient(SECRET, (REDIRECT,))},
                                demo_mode=True, clock=lambda: now[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=provider.app),
                                 base_url=ISSUER) as client:
        verifier, challenge = pkce()
        code = (await authorize(client, challenge, EMPLOYEES[0].email))["code"][0]
        now[0] += 61
        answer = await exchange(client, code, verifier)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


async def test_wrong_client_secret_is_refused(op) -> None:
    _, client = op
    verifier, challenge = pkce()
    code = (await authorize(client, challenge, EMPLOYEES[0].email))["code"][0]
    answer = await client.post("/token", auth=(CLIENT_ID, "wrong"), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier})
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


@pytest.mark.parametrize("override", [
    {"redirect_uri": "http://evil.test/cb"},
    {"redirect_uri": REDIRECT + "/"},
    {"client_id": "someone-else"},
])
async def test_unregistered_client_or_redirect_uri_never_redirects(op, override) -> None:
    _, client = op
    params = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "openid", "code_challenge": pkce()[1], "code_challenge_method": "S256",
              **override}
    answer = await client.get("/authorize", params=params)
    assert answer.status_code == 400 and "location" not in answer.headers
    assert "refused" in answer.text


@pytest.mark.parametrize("override,error", [
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge": ""}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "email"}, "invalid_scope"),
])
async def test_bad_authorization_requests_return_an_error_to_the_client(
        op, override, error) -> None:
    _, client = op
    params = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "openid", "state": "s", "code_challenge": pkce()[1],
              "code_challenge_method": "S256", **override}
    answer = await client.get("/authorize", params=params)
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["error"] == [error] and query["state"] == ["s"] and query["iss"] == [ISSUER]


async def test_cancel_returns_access_denied_and_choice_is_single_use(op) -> None:
    _, client = op
    params = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "openid", "state": "s", "code_challenge": pkce()[1],
              "code_challenge_method": "S256"}
    page = await client.get("/authorize", params=params)
    # no form-action: Chromium would apply it to the gateway's onward redirect to the LMS
    assert "form-action" not in page.headers["content-security-policy"]
    form = parse_form(page.text)
    answer = await client.post("/authorize", data={**form.fields, "action": "cancel"})
    assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == ["access_denied"]
    replay = await client.post("/authorize", data={**form.fields, "sub": EMPLOYEES[0].sub})
    assert replay.status_code == 400 and "location" not in replay.headers


async def test_logout_offers_only_a_registered_return_url(op) -> None:
    _, client = op
    ok = await client.get("/logout", params={"client_id": CLIENT_ID, "state": "z",
                                             "post_logout_redirect_uri": "http://gw.test/bye"})
    assert "You are signed out" in ok.text and 'href="http://gw.test/bye?state=z"' in ok.text
    evil = await client.get("/logout", params={"client_id": CLIENT_ID,
                                               "post_logout_redirect_uri": "http://evil.test"})
    assert evil.status_code == 200 and "evil.test" not in evil.text


# ----------------------------------------------------------------------------- SAML


@pytest.fixture
async def idp() -> AsyncIterator[tuple[DemoSamlIdp, httpx.AsyncClient]]:
    provider = DemoSamlIdp(SAML_IDP, "http://idp.test", SP_ENTITY, ACS, demo_mode=True,
                           idp_initiated_relay_state="demo-app")
    transport = httpx.ASGITransport(app=provider.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://idp.test") as client:
        yield provider, client


def authn_request(request_id: str = "_req1", issuer: str = SP_ENTITY,
                  acs: str | None = ACS, extra: str = "") -> str:
    acs_attr = f' AssertionConsumerServiceURL="{acs}"' if acs else ""
    xml = (f'{extra}<samlp:AuthnRequest xmlns:samlp="{NS["samlp"]}" xmlns:saml="{NS["saml"]}" '
           f'ID="{request_id}" Version="2.0" IssueInstant="2024-01-01T00:00:00Z"'
           f'{acs_attr} ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
           f'<saml:Issuer>{issuer}</saml:Issuer></samlp:AuthnRequest>')
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = deflater.compress(xml.encode()) + deflater.flush()
    return base64.b64encode(raw).decode()


async def saml_sign_in(client: httpx.AsyncClient, email: str, request: str | None = None,
                       relay: str = "/login/skyprep") -> tuple[httpx.Response, _Form]:
    page = await client.get("/sso?" + urlencode(
        {"SAMLRequest": request or authn_request(), "RelayState": relay}))
    assert page.status_code == 200, page.text
    form = parse_form(page.text)
    post = await client.post(form.action or "", data={**form.fields,
                                                      "sub": form.buttons[email]})
    assert post.status_code == 200, post.text
    return post, parse_form(post.text)


def published_cert(metadata: bytes) -> str:
    root = etree.fromstring(metadata)
    (cert,) = root.xpath("//md:KeyDescriptor[@use='signing']//ds:X509Certificate/text()",
                         namespaces=NS)
    return str(cert)


def test_saml_refuses_to_run_outside_demo_mode() -> None:
    with pytest.raises(RuntimeError, match="demo mode"):
        DemoSamlIdp(SAML_IDP, "http://idp.test", SP_ENTITY, ACS, demo_mode=False)


async def test_metadata_publishes_signing_cert_and_redirect_sso(idp) -> None:
    provider, client = idp
    answer = await client.get("/metadata")
    root = etree.fromstring(answer.content)
    assert root.get("entityID") == SAML_IDP
    (sso,) = root.xpath("//md:SingleSignOnService", namespaces=NS)
    assert sso.get("Location") == "http://idp.test/sso"
    assert sso.get("Binding").endswith("HTTP-Redirect")
    assert published_cert(answer.content) in provider.certificate_pem.replace("\n", "")


async def test_sso_posts_a_signed_response_that_verifies_against_the_published_cert(idp) -> None:
    _, client = idp
    employee = find_employee("emp-1004")
    assert employee is not None
    post, form = await saml_sign_in(client, employee.email)
    assert form.action == ACS and form.fields["RelayState"] == "/login/skyprep"
    csp = post.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce and f'<script nonce="{nonce.group(1)}">' in post.text
    assert "form-action" not in csp and ">Continue</button>" in post.text

    xml = base64.b64decode(form.fields["SAMLResponse"])
    root = etree.fromstring(xml)
    assert root.get("Destination") == ACS and root.get("InResponseTo") == "_req1"
    (assertion,) = root.findall("saml:Assertion", NS)
    (signature,) = assertion.findall("ds:Signature", NS)
    ctx = xmlsec.SignatureContext()
    cert = "-----BEGIN CERTIFICATE-----\n" + published_cert(
        (await client.get("/metadata")).content) + "\n-----END CERTIFICATE-----\n"
    ctx.key = xmlsec.Key.from_memory(cert.encode(), xmlsec.constants.KeyDataFormatCertPem)
    xmlsec.tree.add_ids(assertion, ["ID"])
    ctx.verify(signature)  # raises when the signature does not verify
    (ref,) = signature.xpath("ds:SignedInfo/ds:Reference/@URI", namespaces=NS)
    assert ref == "#" + assertion.get("ID")
    assert signature.find("ds:SignedInfo/ds:SignatureMethod", NS).get("Algorithm").endswith(
        "rsa-sha256")

    data = assertion.find("saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData",
                          NS)
    assert data.get("Recipient") == ACS and data.get("InResponseTo") == "_req1"
    assert assertion.findtext("saml:Subject/saml:NameID", namespaces=NS) == employee.email
    assert assertion.findtext(".//saml:Audience", namespaces=NS) == SP_ENTITY
    attrs = {a.get("Name"): [v.text for v in a.findall("saml:AttributeValue", NS)]
             for a in assertion.findall(".//saml:Attribute", NS)}
    assert attrs["groups"] == list(employee.groups)
    assert attrs["sn"] == ["O'Connor"] and attrs["employeeNumber"] == ["1004"]

    # Tampering with what the signature covers breaks it.
    assertion.find("saml:Subject/saml:NameID", NS).text = "mallory@example.com"
    with pytest.raises(xmlsec.Error):
        ctx.verify(signature)


async def test_python3_saml_strict_accepts_the_response(idp) -> None:
    provider, client = idp
    employee = EMPLOYEES[2]
    _, form = await saml_sign_in(client, employee.email, authn_request("_abc123"))
    settings = OneLogin_Saml2_Settings({
        "strict": True,
        "sp": {"entityId": SP_ENTITY,
               "assertionConsumerService": {"url": ACS, "binding": NS["samlp"].replace(
                   "protocol", "bindings:HTTP-POST")},
               "NameIDFormat": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"},
        "idp": {"entityId": SAML_IDP,
                "singleSignOnService": {"url": "http://idp.test/sso", "binding": NS["samlp"]
                                        .replace("protocol", "bindings:HTTP-Redirect")},
                "x509cert": provider.certificate_pem},
        "security": {"wantAssertionsSigned": True, "wantMessagesSigned": False,
                     "wantNameId": True, "rejectDeprecatedAlgorithm": True,
                     "wantAttributeStatement": True},
    })
    request_data = {"https": "off", "http_host": "gw.test",
                    "script_name": "/auth/demo-saml/acs", "get_data": {},
                    "post_data": form.fields}
    response = OneLogin_Saml2_Response(settings, form.fields["SAMLResponse"])
    assert response.is_valid(request_data, request_id="_abc123", raise_exceptions=True)
    assert response.get_nameid() == employee.email
    assert response.get_attributes()["givenName"] == [employee.given_name]
    assert response.get_session_index()
    # The same response for a request it did not answer is refused.
    other = OneLogin_Saml2_Response(settings, form.fields["SAMLResponse"])
    assert not other.is_valid(request_data, request_id="_another")


@pytest.mark.parametrize("request_xml,reason", [
    (authn_request(issuer="http://evil.test/sp"), "unknown service provider"),
    (authn_request(issuer=SP_ENTITY + "x"), "unknown service provider"),
    (authn_request(acs="http://gw.test/auth/demo-saml/acs-evil"), "unregistered Assertion"),
    (authn_request(extra='<!DOCTYPE x [<!ENTITY e "boom">]>'), "must not carry a DTD"),
    (base64.b64encode(b"<not deflated/>").decode(), "not DEFLATE-compressed"),
    ("A" * 20_000, "too large"),
], ids=["wrong-issuer", "issuer-prefix", "wrong-acs", "dtd", "not-deflated", "huge"])
async def test_bad_authn_requests_are_refused(idp, request_xml, reason) -> None:
    _, client = idp
    answer = await client.get("/sso", params={"SAMLRequest": request_xml})
    assert answer.status_code == 400 and reason in answer.text
    assert "Choose a demo employee" not in answer.text


async def test_authn_request_without_acs_url_is_answered_at_the_configured_acs(idp) -> None:
    _, client = idp
    _, form = await saml_sign_in(client, EMPLOYEES[0].email, authn_request(acs=None))
    assert form.action == ACS


async def test_deflate_bomb_is_refused(idp) -> None:
    _, client = idp
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = deflater.compress(b"<a>" + b" " * 5_000_000 + b"</a>") + deflater.flush()
    answer = await client.get("/sso", params={"SAMLRequest": base64.b64encode(bomb).decode()})
    assert answer.status_code == 400 and "size limit" in answer.text


async def test_idp_initiated_response_has_no_in_response_to(idp) -> None:
    _, client = idp
    home = await client.get("/")
    assert 'href="/idp-initiated"' in home.text
    page = await client.get("/idp-initiated")
    form = parse_form(page.text)
    post = await client.post("/sso", data={**form.fields, "sub": EMPLOYEES[0].sub})
    fields = parse_form(post.text).fields
    root = etree.fromstring(base64.b64decode(fields["SAMLResponse"]))
    assert root.get("InResponseTo") is None and fields["RelayState"] == "demo-app"
    again = await client.post("/sso", data={**form.fields, "sub": EMPLOYEES[0].sub})
    assert again.status_code == 400
