"""Deeply nested JSON from an IdP or an LMS (review finding 3): ``json.loads`` raises
RecursionError, not ValueError, about 1 000 levels deep, which slipped past every
``except ValueError`` as a 500. Hostile answers are faked with httpx.MockTransport (an
attack no real IdP or LMS here sends); the browser and SCIM entry points are tested over
HTTP in tests/test_review_findings.py."""

from __future__ import annotations

import httpx
import pytest

from gateway import jsonsafe
from gateway.auth.jwks import JwksCache, request_json
from gateway.connectors._http import json_body
from gateway.errors import ConnectorError

DEEP = 100_000
HOSTILE = [
    "[" * DEEP + "]" * DEEP,
    '{"a":' * DEEP + "1" + "}" * DEEP,
    "[" * DEEP,  # unclosed: still recursion before the syntax error
    '{"keys":' + "[" * DEEP + "]" * DEEP + "}",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_deep_nesting_is_a_value_error_not_a_recursion_error(raw: str) -> None:
    with pytest.raises(ValueError):
        jsonsafe.loads(raw)
    with pytest.raises(ValueError):
        jsonsafe.loads(raw.encode())


def test_ordinary_json_decodes_and_a_depth_bound_refuses_only_deeper_input() -> None:
    body = {"schemas": ["x"], "name": {"givenName": "A"}, "emails": [{"value": "a@b.c"}]}
    assert jsonsafe.loads(b'{"schemas":["x"],"name":{"givenName":"A"},'
                          b'"emails":[{"value":"a@b.c"}]}', max_depth=3) == body
    with pytest.raises(jsonsafe.JsonRejected):
        jsonsafe.loads("[[[[1]]]]", max_depth=3)
    assert jsonsafe.loads("[[[1]]]", max_depth=3) == [[[1]]]
    assert jsonsafe.loads('"plain"', max_depth=0) == "plain"
    with pytest.raises(jsonsafe.JsonRejected):
        jsonsafe.loads(b"\xff\xfe\x00not json")


def _client(body: str) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body.encode(),
                              headers={"Content-Type": "application/json"})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


@pytest.mark.parametrize("raw", HOSTILE)
async def test_idp_answer_nested_deep_is_no_json_not_a_500(raw: str) -> None:
    """Discovery, token, userinfo and JWKS answers all go through request_json: a hostile
    IdP's answer is "not JSON" (the callers' IdpUnavailable / unusable keys), no crash."""
    async with _client(raw) as http:
        answer = await request_json(http, "GET", "https://idp.example/x", what="test")
        assert (answer.status, answer.body) == (200, None)
        cache = JwksCache(http, idp="hostile", min_refresh=60)
        cache.uri = "https://idp.example/jwks"
        assert await cache.load() is False


@pytest.mark.parametrize("raw", HOSTILE)
def test_lms_answer_nested_deep_is_a_connector_error(raw: str) -> None:
    """Every connector decodes LMS answers with json_body: a hostile LMS's answer is a
    ConnectorError (the "training system answered something we cannot use" page)."""
    response = httpx.Response(200, content=raw.encode())
    with pytest.raises(ConnectorError):
        json_body(response, "get_user")
