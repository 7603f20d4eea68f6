"""Configuration: every problem reported at once, with key paths; secrets only from env/files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_settings, parse_settings
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
KEY = "k" * 40
ENV = {
    "GATEWAY_SIGNING_KEY": KEY,
    "OKTA_CLIENT_SECRET": "s",
    "SKYPREP_API_KEY": "a",
    "DAMSTRA_ACCESS_KEY": "d",
    "LITMOS_API_KEY": "l",
}


def minimal() -> dict:
    return {
        "gateway": {
            "public_url": "https://learn.example.com",
            "signing_key": {"env": "GATEWAY_SIGNING_KEY"},
        },
        "idp": {"okta": {"type": "oidc", "issuer": "https://idp.example.com", "client_id": "c"}},
        "app": {
            "training": {
                "connector": "skyprep",
                "idps": ["okta"],
                "skyprep": {
                    "api_key": {"env": "SKYPREP_API_KEY"},
                    "acct_key": "acme.skyprepapp.com",
                },
            }
        },
    }


def problems_of(data: dict, env: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, ENV if env is None else env)
    return info.value.problems


def test_example_config_is_valid() -> None:
    settings = load_settings(str(ROOT / "config" / "gateway.example.toml"), ENV)
    assert set(settings.app) == {"training", "safety", "compliance"}
    assert settings.gateway.signing_key.reveal() == KEY


def test_minimal_config_has_documented_defaults() -> None:
    settings = parse_settings(minimal(), ENV)
    assert settings.gateway.session_lifetime_seconds == 8 * 3600
    assert settings.gateway.cookie_secure is True
    assert settings.store.backend == "memory"
    assert settings.app["training"].budget.calls_per_minute == 100


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    data = minimal()
    data["gateway"]["colour"] = "blue"  # unknown key
    data["idp"]["okta"]["issuer"] = "http://idp.example.com"  # http outside dev mode
    data["idp"]["okta"]["algorithms"] = ["HS256", "none"]
    data["app"]["training"]["idps"] = ["nope"]
    del data["app"]["training"]["skyprep"]["acct_key"]
    problems = problems_of(data)
    joined = "\n".join(problems)
    assert "gateway.colour: unknown key" in joined
    assert "app.training.skyprep.acct_key: missing required key" in joined
    # shape errors are reported first; cross-field rules run once the shape is right
    data["app"]["training"]["skyprep"]["acct_key"] = "acme.skyprepapp.com"
    del data["gateway"]["colour"]
    joined = "\n".join(problems_of(data))
    assert "idp.okta.issuer: must be an absolute https:// URL" in joined
    assert "idp.okta.algorithms: HS256, none not allowed" in joined
    assert "app.training.idps: unknown IdP 'nope'" in joined


def test_literal_secrets_are_refused() -> None:
    data = minimal()
    data["gateway"]["signing_key"] = KEY
    (problem,) = problems_of(data)
    assert problem.startswith("gateway.signing_key: secrets may not be written in the file")
    assert KEY not in problem


def test_missing_secret_env_and_file(tmp_path: Path) -> None:
    data = minimal()
    data["app"]["training"]["skyprep"]["api_key"] = {"file": str(tmp_path / "absent")}
    problems = problems_of(data, {})
    assert any(
        p.startswith("gateway.signing_key: environment variable GATEWAY_SIGNING_KEY")
        for p in problems
    )
    assert any(
        p.startswith("app.training.skyprep.api_key: cannot read secret file") for p in problems
    )


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    data = minimal()
    data["app"]["training"]["skyprep"]["api_key"] = {"file": str(secret)}
    settings = parse_settings(data, ENV)
    assert settings.app["training"].skyprep.api_key.reveal() == "from-a-file"
    assert "from-a-file" not in repr(settings)


def test_insecure_cookies_need_dev_mode_and_short_keys_refused() -> None:
    data = minimal()
    data["gateway"]["cookie_secure"] = False
    problems = problems_of(data, {**ENV, "GATEWAY_SIGNING_KEY": "short"})
    assert "gateway.cookie_secure: may be false only with gateway.dev_mode = true" in problems
    assert "gateway.signing_key: must be at least 32 characters of random data" in problems


def test_connector_section_must_match() -> None:
    data = minimal()
    data["app"]["training"]["connector"] = "litmos"
    problems = problems_of(data)
    assert "app.training.litmos: missing (connector = 'litmos')" in problems
    assert "app.training.skyprep: not used by connector 'litmos'" in problems


def test_saml_metadata_source_rules(tmp_path: Path) -> None:
    data = minimal()
    data["idp"]["adfs"] = {"type": "saml", "sp_entity_id": "https://learn.example.com/sp"}
    problems = problems_of(data)
    assert any(p.startswith("idp.adfs: set exactly one of metadata_file") for p in problems)
    data["idp"]["adfs"]["metadata_file"] = str(tmp_path / "missing.xml")
    assert any("idp.adfs.metadata_file: no such file" in p for p in problems_of(data))


def test_check_config_command_exits_non_zero_and_lists_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\npublic_url = "ftp://x"\nsigning_key = "literal"\nnope = 1\n')
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(bad)],
        capture_output=True,
        text=True,
        env={},
        timeout=60,
    )
    assert result.returncode == 1
    assert "gateway.nope: unknown key" in result.stderr
    assert "gateway.signing_key: secrets may not be written" in result.stderr
    assert "idp: missing required key" in result.stderr
    assert "literal" not in result.stderr


def test_invalid_toml_is_one_clear_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\n")
    with pytest.raises(ConfigError) as info:
        load_settings(str(bad), ENV)
    assert "not valid TOML" in info.value.problems[0]


def test_serve_refuses_several_workers_on_the_memory_store() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(ROOT / "config" / "gateway.example.toml"),
            "--workers",
            "2",
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert result.returncode == 1
    assert "--workers > 1 needs the redis store" in result.stderr


def test_default_target_must_be_a_deep_link_form() -> None:
    data = minimal()
    data["app"]["training"]["default_target"] = "https://evil.example/"
    assert "app.training.default_target: must look like kind:id (e.g. course:1234)" in problems_of(
        data
    )
