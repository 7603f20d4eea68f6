"""Load the TOML configuration into :class:`gateway.settings.Settings`.

Config is data, then load, then validate: every problem is collected (pydantic's shape
errors, then the cross-field rules below) and reported at once as ``key.path: reason`` lines
in one :class:`gateway.errors.ConfigError`. The cross-field rules live in
``config_rules.py``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gateway.config_rules import check_rules
from gateway.errors import ConfigError
from gateway.settings import Settings

_ADAPTER: TypeAdapter[Settings] | None = None

_MESSAGES = {
    "Unexpected keyword argument": "unknown key",
    "Extra inputs are not permitted": "unknown key",
    "Field required": "missing required key",
    "Missing required argument": "missing required key",
}


def _adapter() -> TypeAdapter[Settings]:
    global _ADAPTER  # built lazily: schema generation costs ~50 ms and is not import-time work
    if _ADAPTER is None:
        _ADAPTER = TypeAdapter(Settings)
    return _ADAPTER


def load_settings(path: str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` and return validated settings, or raise ConfigError with every problem."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([toml_problem(path, exc)]) from None
    return parse_settings(data, environ if environ is not None else os.environ)


def toml_problem(path: str, exc: tomllib.TOMLDecodeError) -> str:
    """``path:LINE:COLUMN: not valid TOML: reason`` (editors jump to that place)."""
    # tomllib (3.11) puts the place only in the message: "Invalid value (at line 3, column 9)".
    found = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(exc))
    if found is None:
        return f"{path}: not valid TOML: {exc}"
    reason, line, column = found.groups()
    return f"{path}:{line}:{column}: not valid TOML: {reason} (line {line}, column {column})"


def parse_settings(data: dict[str, Any], environ: Mapping[str, str]) -> Settings:
    """Validate already-parsed TOML data (see :func:`load_settings`)."""
    try:
        settings = _adapter().validate_python(data, context={"environ": dict(environ)})
    except ValidationError:
        # Shape errors: the full report also cross-checks the sections that are valid.
        from gateway.config_report import check_data

        raise ConfigError(check_data(data, environ).problems) from None
    problems = check_rules(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def _describe(error: Mapping[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    # Discriminated unions put the tag into the location (idp.x.oidc.issuer): drop it.
    if len(loc) > 2 and loc[0] == "idp" and loc[2] in ("oidc", "saml"):
        del loc[2]
    if loc and loc[-1] == "[key]":
        loc[-1] = "(name)"
    message = str(error["msg"])
    message = _MESSAGES.get(message, message)
    message = message.removeprefix("Value error, ")
    return f"{'.'.join(loc) or '(top level)'}: {message}"
