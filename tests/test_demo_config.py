"""``gateway demo`` as a newcomer runs it: it writes the configuration it runs as a TOML file
that passes ``gateway check-config`` with the secrets it prints where to find, and it prints
the portal's bearer token with API examples that work as printed."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import string
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RunningDemo:
    banner: list[str]
    config: Path
    env_file: Path


def _read_lines(stream: object, lines: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line.rstrip("\n"))


@pytest.fixture(scope="module")
def running_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    """``python -m gateway demo --port 0 --write-config DIR/demo.toml`` until its banner's
    portal examples are printed; SIGINT (Ctrl-C) at the end must stop it cleanly."""
    workdir = tmp_path_factory.mktemp("demo")
    config = workdir / "demo.toml"
    with open(workdir / "demo.log", "w") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "gateway", "demo", "--port", "0", "--write-config",
             str(config)],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
        )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(demo.stdout, lines), daemon=True).start()
    banner: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while not any("/embed?" in line for line in banner):
            assert demo.poll() is None, (workdir / "demo.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"no portal examples in 60 s: {banner}"
            try:
                banner.append(lines.get(timeout=0.5))
            except queue.Empty:
                continue
        yield RunningDemo(banner, config, workdir / "demo.env")
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            code = demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
            raise
    assert code == 0, (workdir / "demo.log").read_text()[-3000:]


def _shell_env() -> dict[str, str]:
    # Only what a fresh shell would have: none of the demo's secrets.
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}


def test_demo_prints_where_its_configuration_is_and_how_to_check_it(
    running_demo: RunningDemo,
) -> None:
    text = "\n".join(running_demo.banner)
    assert f"Configuration it runs: {running_demo.config}" in text
    start = running_demo.banner.index(
        next(line for line in running_demo.banner if line.startswith("  set -a; . "))
    )
    commands = [line.strip() for line in running_demo.banner[start : start + 2]]
    assert "check-config --config" in commands[1]
    # Verbatim, in a shell that has none of the demo's secrets.
    result = subprocess.run(
        ["bash", "-c", "\n".join(commands)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=_shell_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{running_demo.config}: OK\n"


def test_demo_configuration_holds_references_not_secret_values(
    running_demo: RunningDemo,
) -> None:
    toml = running_demo.config.read_text()
    assert 'signing_key = {env = "GATEWAY_SIGNING_KEY"}' in toml
    secrets = dict(
        line.split("=", 1)
        for line in running_demo.env_file.read_text().splitlines()
        if not line.startswith("#")
    )
    assert {"GATEWAY_SIGNING_KEY", "DEMO_OIDC_SECRET"} <= set(secrets)
    for value in secrets.values():
        assert shlex.split(value)[0] not in toml
    assert running_demo.env_file.stat().st_mode & 0o077 == 0  # only its owner may read it
    # Without any secret, it lints clean and lists each one as not checked.
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--no-secrets", str(running_demo.config)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=_shell_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "not checked: gateway.signing_key: environment variable GATEWAY_SIGNING_KEY" in (
        result.stdout
    )


def _curl(line: str, variables: dict[str, str]) -> httpx.Response:
    """Run a printed ``curl -H ... URL`` line as the shell would: its quoting, ``$VAR``s."""
    argv = [string.Template(arg).substitute(variables) for arg in shlex.split(line)]
    assert argv[0] == "curl"
    headers: dict[str, str] = {}
    args = iter(argv[1:])
    url = ""
    for arg in args:
        if arg == "-H":
            name, value = next(args).split(": ", 1)
            headers[name] = value
        else:
            url = arg
    return httpx.get(url, headers=headers, timeout=20)


def test_demo_prints_the_portal_token_and_examples_that_work(running_demo: RunningDemo) -> None:
    token_lines = [line for line in running_demo.banner if line.startswith("  TOKEN=")]
    assert token_lines == ["  TOKEN=demo-portal-token"]
    variables = {"TOKEN": token_lines[0].split("=", 1)[1]}
    curls = [line for line in running_demo.banner if line.startswith("  curl ")]
    assert len(curls) == 2
    schedules = _curl(curls[0], variables)
    assert schedules.status_code == 200, schedules.text
    names = [item["name"] for item in schedules.json()["lessonSchedules"]]
    assert "Site safety induction" in names
    embed = _curl(curls[1], variables)
    assert embed.status_code == 200, embed.text
    assert embed.json()["embedUrl"].startswith("http://127.0.0.1:")
    # The token is what authorises it: a wrong one is refused.
    assert _curl(curls[0], {"TOKEN": "wrong"}).status_code == 401
