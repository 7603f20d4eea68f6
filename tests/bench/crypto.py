"""The floor: what the unavoidable cryptography of one sign-in costs, timed in this process.

* OIDC: one RS256 ID-token signature check with joserfc (``jws.deserialize_compact``, what
  ``gateway/auth/jwks.py`` calls), 2048-bit key, a token shaped like the demo IdP's.
* SAML: one assertion signature check through the gateway's own code path
  (``gateway.auth.saml_signature.verify_signature``: shape checks, certificate load, xmlsec
  verify) on a response from the demo IdP's builder. For context also the whole of
  ``validate_response`` (decode, parse, schema, every check), which is what the ACS runs.

Times are medians of batches (robust to a noisy shared machine), in seconds.
"""

from __future__ import annotations

import base64
import datetime as dt
import statistics
import time
from collections.abc import Callable

from joserfc import jws, jwt
from joserfc.jwk import RSAKey
from lxml import etree

from gateway.auth.saml_checks import Expectations, validate_response
from gateway.auth.saml_signature import verify_signature
from gateway.auth.saml_xml import DS, SAML
from gateway.sandbox._oauth import employee_claims
from gateway.sandbox._saml_build import SigningKey, signed_response
from gateway.sandbox.employees import EMPLOYEES


def _median_seconds(fn: Callable[[], object], budget: float) -> float:
    """Median per-call time over batches of calls, spending about ``budget`` seconds."""
    fn()
    started = time.perf_counter()
    fn()
    one = max(time.perf_counter() - started, 1e-6)
    batch = max(1, int(0.02 / one))
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while time.perf_counter() < deadline or len(times) < 5:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) / batch)
    return statistics.median(times)


def id_token_check(budget: float) -> float:
    key = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, private=True, auto_kid=True)
    public = RSAKey.import_key(key.as_dict(private=False))
    now = int(time.time())
    claims = {
        "iss": "https://idp.example",
        "aud": "gateway",
        "iat": now,
        "exp": now + 300,
        "nonce": "n" * 43,
        **employee_claims(EMPLOYEES[0]),
    }
    token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
    return _median_seconds(
        lambda: jws.deserialize_compact(token, public, algorithms=["RS256"]), budget
    )


def saml_checks(budget: float) -> tuple[float, float]:
    """(signature check alone, whole validate_response) per response."""
    now = dt.datetime.now(dt.UTC)
    key = SigningKey.generate("bench IdP", now)
    acs, sp = "https://gw.example/auth/x/acs", "https://gw.example/auth/x/metadata"
    xml = signed_response(
        issuer="https://idp.example",
        key=key,
        employee=EMPLOYEES[1],
        acs_url=acs,
        audience=sp,
        in_response_to="_req1",
        now=now,
    )
    cert = key.cert_pem.decode()
    root = etree.fromstring(xml)
    signature = root.find(f"{SAML}Assertion/{DS}Signature")
    assert signature is not None
    sig_time = _median_seconds(lambda: verify_signature(signature, (cert,), False, "bench"), budget)
    expectations = Expectations(
        idp_entity_id="https://idp.example",
        idp_certificates=(cert,),
        sp_entity_id=sp,
        acs_url=acs,
        signed="assertion",
        allow_sha1=False,
        clock_skew=60,
        max_bytes=256_000,
    )
    encoded = base64.b64encode(xml).decode()
    whole = _median_seconds(lambda: validate_response(encoded, expectations, time.time()), budget)
    return sig_time, whole


def floor(budget: float = 1.0) -> dict[str, float]:
    """The crypto floor figures, in milliseconds."""
    sig, whole = saml_checks(budget)
    return {
        "oidc_id_token_rs256_verify_ms": id_token_check(budget) * 1e3,
        "saml_signature_verify_ms": sig * 1e3,
        "saml_validate_response_ms": whole * 1e3,
    }
