"""The demo's configuration as files an admin can read, check and copy.

``gateway demo`` writes the configuration it runs as a TOML file (and then loads that file,
so the file is exactly what runs). Secrets stay references (``{ env = "NAME" }``) as in any
real configuration; the demo's values go to an adjacent ``.env`` file (mode 0600) that a
shell can source before ``gateway check-config``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import InlineTable, Table


@dataclass(frozen=True)
class DemoFiles:
    """Where the demo's configuration, its secrets and the SAML IdP's metadata are written."""

    config: Path
    env: Path
    saml_metadata: Path

    @classmethod
    def at(cls, config: str | os.PathLike[str]) -> DemoFiles:
        """The files for a configuration at ``config``; the others go beside it."""
        path = Path(config).absolute()
        stem = path.stem if path.suffix == ".toml" else path.name
        return cls(path, path.with_name(f"{stem}.env"), path.with_name(f"{stem}-saml-idp.xml"))

    def check_commands(self) -> list[str]:
        """Shell lines that check the written configuration with the demo's secrets."""
        return [
            f"set -a; . {shlex.quote(str(self.env))}; set +a",
            f"{gateway_command()} check-config --config {shlex.quote(str(self.config))}",
        ]


def gateway_command() -> str:
    """How to run this gateway from a shell: ``gateway`` when it is on PATH, else this
    interpreter's ``-m gateway`` (e.g. a virtualenv that is not activated)."""
    return "gateway" if shutil.which("gateway") else f"{shlex.quote(sys.executable)} -m gateway"


def write_demo_files(
    files: DemoFiles, config: dict[str, Any], secrets: dict[str, str], saml_metadata: bytes
) -> None:
    """Write the TOML configuration, the ``.env`` with the secrets' values, and the metadata."""
    files.config.parent.mkdir(parents=True, exist_ok=True)
    _replace_file(files.saml_metadata, saml_metadata)
    document = tomlkit.document()
    for line in [
        "The configuration of a running `gateway demo`: written by the demo, which then loads",
        "it. Every key is documented in config/gateway.example.toml.",
        "Secrets are references to environment variables, as they must be in any real",
        f"configuration; the demo's values are in {files.env.name} beside this file.",
        "Check this file (the URLs point at the demo's servers on 127.0.0.1):",
        *(f"  {line}" for line in files.check_commands()),
        "or without the secrets:",
        f"  {gateway_command()} check-config --no-secrets --config "
        f"{shlex.quote(str(files.config))}",
    ]:
        document.add(tomlkit.comment(line))
    document.add(tomlkit.nl())
    for key, value in _without_none(config).items():
        document.add(key, _item(value))
    _replace_file(files.config, tomlkit.dumps(document).encode("utf-8"))
    env = "# Secrets of the demo's configuration (source it: set -a; . FILE; set +a)\n" + "".join(
        f"{name}={shlex.quote(value)}\n" for name, value in secrets.items())
    # 0600 from the start: the file holds the demo's (random) signing key and client secret.
    _replace_file(files.env, env.encode("utf-8"), mode=0o600)


def _replace_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``path`` whole, never through a link: ``--config`` may name a shared directory
    where someone planted ``<stem>.env`` as a symlink to a file of ours, which a plain open
    would truncate and overwrite. A new file (O_EXCL | O_NOFOLLOW, ``mode`` from the start)
    is renamed over the path, which replaces a link itself, never its target."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _without_none(value: Any) -> Any:
    """TOML has no null: a key set to None means "the default", i.e. the key left out."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


def _item(value: Any) -> Any:
    """Tables for sections; a secret reference inline (``{ env = "NAME" }``) as in the
    example configuration."""
    if not isinstance(value, dict):
        return value
    if set(value) in ({"env"}, {"file"}):
        inline: InlineTable = tomlkit.inline_table()
        inline.update(value)
        return inline
    table: Table = tomlkit.table()
    for key, item in value.items():
        table.add(key, _item(item))
    return table
