"""A minimal TOML writer for the generated gateway config (tables, strings, numbers,
booleans, lists of scalars): enough for ``demo_config`` data, with no extra dependency."""

from __future__ import annotations

import json
from typing import Any


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string uses the same escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """``data`` as TOML text."""
    lines: list[str] = []
    tables = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{json.dumps(key)} = {_value(value)}")
    out = ""
    if prefix and (lines or not tables):
        out += "[" + ".".join(json.dumps(p) for p in prefix) + "]\n"
    out += "".join(line + "\n" for line in lines)
    for key, value in tables:
        out += "\n" + dumps(value, (*prefix, key))
    return out
