"""``gateway check-config``'s full report: every problem of a file at once, type errors included.

:func:`gateway.config.parse_settings` stops after pydantic's shape errors: settings without
the right shape cannot be built, so the cross-field rules never ran and a file with a type
error in one app and a trust problem in another showed only the first. Here, when the whole
file does not validate, each section (``[gateway]``, ``[store]``... and every ``[idp.x]``,
``[app.y]``, ``[portal.z]`` on its own) is validated separately, the valid ones are put
together, and :func:`gateway.config_rules.check_rules` runs on them, told which sections were left
out so that nothing is reported about a stand-in and no name that exists is "unknown".

Lint mode (``lint_secrets``) validates with secrets that are not available: each secret
whose environment variable or file is missing becomes an
:class:`~gateway.settings.UncheckedSecret` and is listed, by key path and by the variable or
file it names (never a value), as "not checked" instead of being a problem.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gateway.config import _adapter, _describe, toml_problem
from gateway.config_rules import check_rules
from gateway.settings import GatewaySettings, Secret, Settings, UncheckedSecret

# Built on first use (schema generation is not import-time work), one per Settings field.
_SECTION_ADAPTERS: dict[str, TypeAdapter[Any]] = {}

# Wording of the secret problems that only the environment can fix (settings._resolve_secret).
_SECRET_MISSING = ("environment variable ", "cannot read secret file ")


@dataclass(frozen=True)
class Report:
    """What ``check-config`` prints: problems (each ``key.path: reason``) and, in lint mode,
    the secrets that were not checked (``key.path: environment variable X is not set``)."""

    problems: list[str]
    unchecked: list[str]

    @property
    def secret_problems(self) -> bool:
        """Whether some problem is only a secret missing from this environment."""
        return any(
            any(marker in problem for marker in _SECRET_MISSING) for problem in self.problems
        )


def check_file(path: str, environ: Mapping[str, str], *, lint_secrets: bool = False) -> Report:
    """Read ``path`` and report every problem (see the module docstring)."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        return Report([f"{path}: cannot read: {exc.strerror}"], [])
    except tomllib.TOMLDecodeError as exc:
        return Report([toml_problem(path, exc)], [])
    return check_data(data, environ, lint_secrets=lint_secrets)


def check_data(
    data: dict[str, Any], environ: Mapping[str, str], *, lint_secrets: bool = False
) -> Report:
    """Report every problem of already-parsed TOML data."""
    context = {"environ": dict(environ), "lint_secrets": lint_secrets}
    shape: list[str] = []
    invalid: list[str] = []
    settings: Settings | None
    try:
        settings = _adapter().validate_python(data, context=context)
    except ValidationError as exc:
        shape = sorted({_describe(err) for err in exc.errors()})
        settings, invalid = _valid_parts(data, context)
    rules = check_rules(settings, invalid) if settings is not None else []
    unchecked = [f"{key}: {secret.source}" for key, secret in _unchecked(settings, "")]
    return Report(list(dict.fromkeys([*shape, *rules])), unchecked)


def _section_adapter(name: str, hint: Any) -> TypeAdapter[Any]:
    if name not in _SECTION_ADAPTERS:
        _SECTION_ADAPTERS[name] = TypeAdapter(hint)
    return _SECTION_ADAPTERS[name]


def _valid_parts(
    data: dict[str, Any], context: dict[str, Any]
) -> tuple[Settings | None, list[str]]:
    """Settings made of the sections that validate on their own, and the key paths of those
    that do not (stand-ins or left out)."""
    hints = typing.get_type_hints(Settings, include_extras=True)
    parts: dict[str, Any] = {}
    invalid: list[str] = []
    for field in dataclasses.fields(Settings):
        name = field.name
        if name not in data:
            continue  # a default, or pydantic has reported it missing
        hint = hints[name]
        adapter = _section_adapter(name, hint)
        raw = data[name]
        if typing.get_origin(hint) is dict and isinstance(raw, dict):
            # Entry by entry: one bad app must not hide the others from the rules.
            parts[name] = {}
            for key, value in raw.items():
                try:
                    parts[name].update(adapter.validate_python({key: value}, context=context))
                except ValidationError:
                    invalid.append(f"{name}.{key}")
            continue
        try:
            parts[name] = adapter.validate_python(raw, context=context)
        except ValidationError:
            invalid.append(name)
    if "gateway" in invalid or "gateway" not in parts:
        # Other sections' rules depend on dev_mode; the rest of [gateway] is a stand-in whose
        # problems check_rules leaves out.
        raw_gateway = data.get("gateway")
        dev = isinstance(raw_gateway, dict) and raw_gateway.get("dev_mode") is True
        parts["gateway"] = GatewaySettings(
            public_url="https://gateway.invalid", signing_key=Secret("-" * 32), dev_mode=dev
        )
        invalid.append("gateway")
    for required in ("idp", "app"):
        if not isinstance(parts.get(required), dict):
            parts[required] = {}
            invalid.append(required)
    try:
        return Settings(**parts), invalid
    except ValidationError:  # a section this code does not know how to stand in for
        return None, invalid


def _unchecked(value: object, path: str) -> Iterator[tuple[str, UncheckedSecret]]:
    """Every UncheckedSecret in ``value`` with its key path."""
    if isinstance(value, UncheckedSecret):
        yield path, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            child = f"{path}.{field.name}" if path else field.name
            yield from _unchecked(getattr(value, field.name), child)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _unchecked(item, f"{path}.{key}" if path else str(key))
