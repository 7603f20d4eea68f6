"""Work moved off the per-sign-in path must give the same answers as before: the IdP gets
the same authorization URL, stored profile digests stay valid (no surprise LMS updates after
an upgrade), session cookies carry the same identity, and the per-client limit counts the
same address."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import httpx
import pytest

from gateway.auth.oidc import with_params
from gateway.identity import Identity, Profile, identity_dict
from gateway.limits import client_key

PARAMS = {
    "response_type": "code",
    "client_id": "gateway demo",
    "redirect_uri": "https://learn.example.com/auth/okta/callback?x=1&y=é",
    "scope": "openid email profile",
    "state": "s-_~.0",
    "code_challenge_method": "S256",
}


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://idp.example.com/oauth2/v1/authorize",
        "https://idp.example.com/authorize?tenant=acme&prompt=login",
        "https://IdP.Example.com:443/a%20b/authorize?x=1&x=2",
        "https://idp.example.com/authorize?scope=ignored",  # ours replaces the IdP's
        "http://127.0.0.1:8080/auth",
    ],
)
def test_authorization_url_is_what_httpx_built(endpoint: str) -> None:
    ours = httpx.URL(with_params(endpoint, PARAMS))
    theirs = httpx.URL(endpoint).copy_merge_params(PARAMS)
    assert ours.copy_with(query=None) == theirs.copy_with(query=None)
    assert sorted(ours.params.multi_items()) == sorted(theirs.params.multi_items())
    assert ours.params["scope"] == "openid email profile"


def test_a_bad_endpoint_is_still_refused_every_time() -> None:
    for _ in range(2):  # the parse is cached only when it succeeds
        with pytest.raises(httpx.InvalidURL):
            with_params("https://idp.example.com/auth\n", PARAMS)


def test_profile_digest_is_unchanged_so_stored_digests_stay_valid() -> None:
    profile = Profile(
        email="ana@example.com",
        first_name="Ana",
        last_name="Łopez",
        username="ana",
        employee_number="E1",
        groups=("Staff", "Safety"),
        role="learner",
        extra=(("dept", "ops"), ("site", "north")),
    )
    before = hashlib.sha256(
        json.dumps(asdict(profile), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:32]
    assert profile.digest() == before


def test_session_identity_serialises_as_before() -> None:
    identity = Identity(
        idp="okta", subject="00u1", email="ana@example.com", given_name="Ana",
        groups=("Staff",), authenticated_at=1_700_000_000,
    )
    assert identity_dict(identity) == asdict(identity)
    assert json.dumps(identity_dict(identity)) == json.dumps(asdict(identity))


def test_client_key_cache_counts_the_same_address() -> None:
    for _ in range(2):
        assert client_key("203.0.113.7") == "203.0.113.7"
        assert client_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
        assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
        assert client_key("not-an-ip").startswith("h-")
        assert client_key(None) == "unknown"
