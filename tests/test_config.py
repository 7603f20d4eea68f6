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
    # Shape errors do not hide the cross-field rules of the sections that are well formed.
    assert "idp.okta.issuer: must be an absolute https:// URL" in joined
    assert "idp.okta.algorithms: HS256, none not allowed" in joined
    # ...while nothing is said about a stand-in for a broken section (app.training here).
    assert "unknown IdP" not in joined
    assert len(problems) == 4
    data["app"]["training"]["skyprep"]["acct_key"] = "acme.skyprepapp.com"
    del data["gateway"]["colour"]
    joined = "\n".join(problems_of(data))
    assert "app.training.idps: unknown IdP 'nope'" in joined


def test_a_type_error_in_one_app_does_not_hide_another_apps_problems() -> None:
    data = minimal()
    data["app"]["training"]["budget"] = {"calls_per_minute": "lots"}
    data["app"]["safety"] = {**data["app"]["training"], "budget": {}, "idps": ["nope"]}
    data["portal"] = {"intranet": {"token_sha256": "0" * 64, "apps": ["training", "gone"]}}
    problems = problems_of(data)
    assert problems == [
        "app.training.budget.calls_per_minute: Input should be a valid integer, unable to "
        "parse string as an integer",
        "app.safety.idps: unknown IdP 'nope'",
        "portal.intranet.apps: unknown app 'gone'",  # training exists, though it is broken
    ]


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


def test_required_encryption_needs_the_decryption_key() -> None:
    data = minimal()
    data["idp"]["adfs"] = {
        "type": "saml",
        "sp_entity_id": "https://learn.example.com/sp",
        "require_encrypted_assertions": True,
    }
    assert any(
        p.startswith("idp.adfs.require_encrypted_assertions: needs sp_key_file")
        for p in problems_of(data)
    )


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


# --- the trust model: which IdP may vouch for whom ---------------------------------------------


def two_idp_app(**app: object) -> dict:
    data = minimal()
    data["idp"]["okta"]["email_domains"] = ["example.com"]
    data["idp"]["partner"] = {
        "type": "oidc",
        "issuer": "https://partner.example.net",
        "client_id": "c2",
        "email_domains": ["partner.example.net"],
    }
    data["app"]["training"]["idps"] = ["okta", "partner"]
    data["app"]["training"].update(app)
    return data


def test_an_app_with_disjoint_idp_domains_is_valid() -> None:
    settings = parse_settings(
        two_idp_app(
            required_groups=["Staff"],
            group_idps=["okta", "partner"],
            role_map={"Trainers": "instructor"},
            role_idps=["okta"],
        ),
        ENV,
    )
    assert settings.idp["partner"].email_domains == ("partner.example.net",)
    assert settings.app["training"].role_idps == ("okta",)


def test_every_idp_of_a_multi_idp_app_needs_its_own_email_domains() -> None:
    data = two_idp_app()
    del data["idp"]["partner"]["email_domains"]
    assert "app.training.idps: IdP 'partner' needs email_domains" in "\n".join(problems_of(data))
    data = two_idp_app()
    data["idp"]["partner"]["email_domains"] = ["partner.example.net", "example.com"]
    (problem,) = problems_of(data)
    assert problem.startswith(
        "app.training.idps: IdPs 'okta' and 'partner' both have e-mail domain 'example.com'"
    )
    assert "'training'" in problem


@pytest.mark.parametrize(
    "domain",
    ["Example.com", "@example.com", "*.example.com", "localhost", "example.com.", " example.com"],
)
def test_email_domains_must_be_plain_lower_case_domains(domain: str) -> None:
    data = minimal()
    data["idp"]["okta"]["email_domains"] = [domain]
    assert problems_of(data) == [
        f"idp.okta.email_domains: {domain!r} must be a lower-case domain (no @, no wildcard)"
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [("username", "subject"), ("username", "employee_number"), ("match_by", "employee_number")],
)
def test_identifiers_another_idp_could_issue_are_refused_with_several_idps(
    key: str, value: str
) -> None:
    (problem,) = problems_of(two_idp_app(**{key: value}))
    assert problem == (
        f"app.training.{key}: {value!r} is ambiguous for app 'training' with several IdPs "
        "(another IdP could issue the same value); use 'email'"
    )
    single = minimal()
    single["app"]["training"][key] = value
    parse_settings(single, ENV)  # one IdP: its own subjects are unambiguous


def test_group_and_role_rules_name_the_trusted_idps() -> None:
    problems = problems_of(
        two_idp_app(group_map={"Staff": "All staff"}, role_map={"Admins": "admin"})
    )
    assert sorted(problems) == [
        "app.training.group_idps: name the IdPs trusted to supply groups (required_groups, "
        "group_map) for an app with several IdPs",
        "app.training.role_idps: name the IdPs trusted to grant roles (role_map) for an app "
        "with several IdPs",
    ]
    problems = problems_of(two_idp_app(group_idps=["okta", "adfs"], role_idps=["nope"]))
    assert sorted(problems) == [
        "app.training.group_idps: 'adfs' is not one of the app's idps",
        "app.training.role_idps: 'nope' is not one of the app's idps",
    ]


def test_google_preset_needs_lower_case_hosted_domains() -> None:
    data = minimal()
    data["idp"]["okta"]["preset"] = "google"
    assert problems_of(data) == [
        "idp.okta.hosted_domains: required with preset = 'google' (the Workspace domains "
        "whose accounts may sign in; any other tenant would be accepted)"
    ]
    data["idp"]["okta"]["hosted_domains"] = ["Acme.example"]
    assert problems_of(data) == [
        "idp.okta.hosted_domains: 'Acme.example' must be a lower-case domain (no @, no wildcard)"
    ]
    data["idp"]["okta"]["hosted_domains"] = ["acme.example"]
    assert parse_settings(data, ENV).idp["okta"].hosted_domains == ("acme.example",)


def test_unverified_email_claims_need_email_domains() -> None:
    data = minimal()
    data["idp"]["okta"].update(preset="entra", email_from_unverified_claims=True)
    assert problems_of(data) == [
        "idp.okta.email_from_unverified_claims: needs email_domains (claims that are not "
        "verified addresses may only name people in the IdP's own domains)"
    ]
    data["idp"]["okta"]["email_domains"] = ["contoso.example"]
    parse_settings(data, ENV)


def test_trust_problems_are_reported_together() -> None:
    data = two_idp_app(username="subject", group_map={"Staff": "x"})
    del data["idp"]["partner"]["email_domains"]
    data["idp"]["okta"]["preset"] = "google"
    problems = problems_of(data)
    assert len(problems) == 4, problems
