"""SCIM settings: check-config's rules, the credential helper and ``gateway scim-token``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import parse_settings
from gateway.errors import ConfigError, Forbidden, Unauthorized
from gateway.sandbox.demo import SCIM_TOKENS, demo_config
from gateway.scim.credentials import authenticate, hash_token, new_token

ENV = {"GATEWAY_SIGNING_KEY": "k" * 40, "DEMO_OIDC_SECRET": "s", "DEMO_SKYPREP_KEY": "a",
       "DEMO_DAMSTRA_KEY": "b", "DEMO_LITMOS_KEY": "c"}


def config(tmp_path: Any) -> dict[str, Any]:
    metadata = tmp_path / "idp.xml"
    metadata.write_text("<x/>")
    urls = {k: f"http://127.0.0.1:{9000 + i}" for i, k in enumerate(
        ("gateway", "oidc", "skyprep", "damstra", "litmos", "portal"))}
    return demo_config(saml_metadata_file=str(metadata), **urls)


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, ENV)
    return caught.value.problems


def test_demo_config_with_scim_is_valid(tmp_path: Any) -> None:
    settings = parse_settings(config(tmp_path), ENV)
    scim = settings.idp["demo-oidc"].scim
    assert scim is not None and scim.apps == ("skyprep", "damstra", "litmos")


def test_every_scim_problem_is_reported(tmp_path: Any) -> None:
    data = copy.deepcopy(config(tmp_path))
    data["idp"]["demo-oidc"]["scim"]["apps"] = ["skyprep", "nope"]
    data["idp"]["demo-saml"]["scim"]["token_hashes"] = []
    data["app"]["skyprep"]["reactivate"] = True
    data["app"]["damstra"]["idps"] = ["demo-oidc"]
    found = problems(data)
    assert "idp.demo-oidc.scim.apps: unknown app 'nope'" in found
    assert any(p.startswith("idp.demo-saml.scim.token_hashes") for p in found)
    assert any(p.startswith("app.skyprep.reactivate: must be false") for p in found)
    assert "idp.demo-saml.scim.apps: app 'damstra' does not accept IdP 'demo-saml'" in found
    data["idp"]["demo-oidc"]["scim"]["token_hashes"] = ["md5:abc"]
    assert any("token_hashes" in p for p in problems(data))


def test_a_scim_idp_must_be_scoped_to_its_email_domains(tmp_path: Any) -> None:
    """Without domains its SCIM client could manage every account of the LMS tenant, also
    people another IdP vouches for through another app on the same tenant."""
    data = copy.deepcopy(config(tmp_path))
    data["idp"]["demo-oidc"]["email_domains"] = []
    assert any(p.startswith("idp.demo-oidc.email_domains: required for SCIM provisioning")
               for p in problems(data))


def test_authenticate(tmp_path: Any) -> None:
    idps = parse_settings(config(tmp_path), ENV).idp
    assert authenticate(f"Bearer {SCIM_TOKENS['demo-saml']}", idps, "litmos") == "demo-saml"
    for bad in (None, "", "Basic abc", f"Bearer {SCIM_TOKENS['demo-saml']}x", "Bearer a b"):
        with pytest.raises(Unauthorized):
            authenticate(bad, idps, "litmos")
    with pytest.raises(Forbidden):
        authenticate(f"Bearer {SCIM_TOKENS['demo-oidc']}", idps, "other-app")


def test_scim_token_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scim-token"]) == 0
    out = capsys.readouterr().out
    token = out.split("stored): ")[1].split()[0]
    assert f'token_hashes = ["{hash_token(token)}"]' in out
    first, second = new_token(), new_token()
    assert first[0] != second[0] and first[1].startswith("sha256:")
