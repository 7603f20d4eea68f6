"""The ``gateway`` command as an admin uses it: check-config's full report, linting without
secrets, ``--config`` everywhere, help texts, ``--version``, one clear line for a busy port."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from gateway.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {
    "GATEWAY_SIGNING_KEY": "k" * 40,
    "OKTA_CLIENT_SECRET": "okta-secret-never-printed",
    "SKYPREP_API_KEY": "skyprep-key-never-printed",
}

VALID = """\
[gateway]
public_url = "https://learn.example.com"
signing_key = { env = "GATEWAY_SIGNING_KEY" }

[idp.okta]
type = "oidc"
issuer = "https://idp.example.com"
client_id = "gateway"
client_secret = { env = "OKTA_CLIENT_SECRET" }

[app.academy]
connector = "skyprep"
idps = ["okta"]

[app.academy.skyprep]
api_key = { env = "SKYPREP_API_KEY" }
acct_key = "acme.skyprepapp.com"
"""


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    yield


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return str(path)


def run_cli(*args: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m gateway ARGS`` as a shell would run it (what the admin sees)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PATH": os.environ["PATH"], **(environ or {})},
    )  # fmt: skip


def test_three_problems_including_a_type_error_are_all_reported(
    tmp_path: Path, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    text = VALID.replace('issuer = "https://', 'issuer = "http://')  # a cross-field rule
    text += '\n[app.academy.budget]\ncalls_per_minute = "lots"\n'  # a type error
    text += '\n[portal.intranet]\ntoken_sha256 = "' + "0" * 64 + '"\napps = ["nope"]\n'
    assert main(["check-config", write(tmp_path, text)]) == 1
    err = capsys.readouterr().err
    assert "3 problems" in err
    assert "app.academy.budget.calls_per_minute: Input should be a valid integer" in err
    assert "idp.okta.issuer: must be an absolute https:// URL" in err
    assert "portal.intranet.apps: unknown app 'nope'" in err


def test_a_broken_section_is_not_reported_as_missing_elsewhere(
    tmp_path: Path, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # The IdP has a type error; the app that names it must not say "unknown IdP" as well,
    # and the (valid) app is still cross-checked.
    text = VALID.replace('client_id = "gateway"', "client_id = 7")
    text = text.replace('acct_key = "acme.skyprepapp.com"', 'acct_key = "a"\n'
                        'api_url = "http://api.skyprep.io"')  # fmt: skip
    assert main(["check-config", "--config", write(tmp_path, text)]) == 1
    err = capsys.readouterr().err
    assert "idp.okta.client_id: Input should be a valid string" in err
    assert "app.academy.skyprep.api_url: must be an absolute https:// URL" in err
    assert "unknown IdP" not in err
    assert "2 problems" in err


def test_a_toml_syntax_error_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, VALID.replace('client_id = "gateway"', "client_id = gateway"))
    assert main(["check-config", path]) == 1
    err = capsys.readouterr().err
    assert f"{path}:8:13: not valid TOML: Invalid value (line 8, column 13)" in err


def test_missing_secrets_fail_the_check_and_say_how_to_lint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OKTA_CLIENT_SECRET", SECRETS["OKTA_CLIENT_SECRET"])
    for name in ("GATEWAY_SIGNING_KEY", "SKYPREP_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert main(["check-config", write(tmp_path, VALID)]) == 1
    out, err = capsys.readouterr()
    assert "gateway.signing_key: environment variable GATEWAY_SIGNING_KEY is not set" in err
    assert "app.academy.skyprep.api_key: environment variable SKYPREP_API_KEY" in err
    assert "--no-secrets" in err
    assert SECRETS["OKTA_CLIENT_SECRET"] not in out + err


def test_lint_without_secrets_lists_them_as_not_checked_and_passes(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    # Only one secret is present: it is checked; the others are "not checked", by name only.
    result = run_cli(
        "check-config", "--no-secrets", "--config", path,
        environ={"OKTA_CLIENT_SECRET": SECRETS["OKTA_CLIENT_SECRET"]},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "  not checked: gateway.signing_key: environment variable GATEWAY_SIGNING_KEY is not set",
        "  not checked: app.academy.skyprep.api_key: environment variable SKYPREP_API_KEY "
        "is not set",
        f"{path}: OK (2 secret(s) not checked)",
    ]
    assert SECRETS["OKTA_CLIENT_SECRET"] not in result.stdout + result.stderr


def test_lint_without_secrets_still_reports_every_other_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    secret_file = tmp_path / "missing-secret"
    text = VALID.replace('{ env = "OKTA_CLIENT_SECRET" }', f'{{ file = "{secret_file}" }}')
    text = text.replace('{ env = "SKYPREP_API_KEY" }', '"a-literal-key"')  # never allowed
    assert main(["check-config", "--no-secrets", write(tmp_path, text)]) == 1
    out, err = capsys.readouterr()
    assert f"not checked: idp.okta.client_secret: secret file {secret_file}" in out
    assert "app.academy.skyprep.api_key: secrets may not be written in the file" in err
    assert "a-literal-key" not in out + err


def test_config_option_and_positional_path_are_the_same(
    tmp_path: Path, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, VALID)
    assert main(["check-config", path]) == 0
    assert main(["check-config", "--config", path]) == 0
    assert capsys.readouterr().out == f"{path}: OK\n{path}: OK\n"
    with pytest.raises(SystemExit) as exit_info:
        main(["check-config", "--config", path, str(tmp_path / "other.toml")])
    assert exit_info.value.code == 2
    assert "give the configuration file once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve"])
    assert "the configuration file is required (--config PATH)" in capsys.readouterr().err


def test_version_comes_from_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"gateway {metadata.version('gateway')}\n"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


def test_every_option_of_every_command_explains_itself() -> None:
    commands = _subcommands()
    assert {"serve", "check-config", "check-connectors", "demo"} <= set(commands)
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("serve", ["--config PATH", "(default: 0.0.0.0)", "(default: 8000)", "(default: 1)"]),
        ("check-config", ["--config PATH", "--no-secrets", "'not checked'"]),
        ("check-connectors", ["--config PATH", "same as --config PATH"]),
        ("demo", ["--write-config PATH", "(default: 8000)", "the next 7 ports"]),
    ],
)
def test_help_shows_descriptions_and_defaults(
    command: str, shown: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal
    for fragment in shown:
        assert fragment in text
    assert "default: None" not in text


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path, busy_port: int) -> None:
    result = run_cli(
        "serve", "--config", write(tmp_path, VALID), "--host", "127.0.0.1",
        "--port", str(busy_port), environ=SECRETS,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == f"port {busy_port} is in use; pass --port\n"


def test_serve_names_a_busy_operator_port(tmp_path: Path, busy_port: int) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        public = free.getsockname()[1]
    text = VALID + f"\n[operator]\nport = {busy_port}\n"
    result = run_cli(
        "serve", write(tmp_path, text), "--host", "127.0.0.1", "--port", str(public),
        environ=SECRETS,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == f"port {busy_port} is in use; pass [operator] port\n"


def test_demo_on_a_busy_port_says_so_in_one_line(busy_port: int) -> None:
    result = run_cli("demo", "--port", str(busy_port))
    assert result.returncode == 2
    assert result.stderr == (
        f"port {busy_port} is in use; pass --port (the demo uses {busy_port}-{busy_port + 7})\n"
    )
