"""JSON from a party we do not trust (a browser, a SCIM client, an IdP, an LMS).

``json.loads`` raises RecursionError, not ValueError, on input nested about a thousand deep,
and a body that fits any of our size caps can be nested that deep. Callers catch ValueError
and turn it into a 4xx (or IdpUnavailable / ConnectorError); a RecursionError slipped past
them as a 500. :func:`loads` is the one decoder for such input: every failure is a
:class:`JsonRejected`, which *is* a ValueError, so existing ``except ValueError`` handlers
keep working unchanged.
"""

from __future__ import annotations

import json
from typing import Any

# Deepest nesting a request body may have when the caller asks for a depth check. SCIM and
# the embed sign-in script send a few levels; anything deeper is hostile or broken.
BODY_DEPTH = 32


class JsonRejected(ValueError):
    """The input is not JSON, not decodable text, or nested too deep."""


def loads(raw: str | bytes | bytearray, *, max_depth: int | None = None) -> Any:
    """The decoded value of ``raw``; JsonRejected when it is not JSON (bad syntax, bad
    encoding) or is nested deeper than the decoder can go or than ``max_depth`` (objects and
    arrays; a scalar is depth 0)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise JsonRejected("JSON nested too deep") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise JsonRejected(f"not JSON: {type(exc).__name__}") from None
    if max_depth is not None and _deeper_than(value, max_depth):
        raise JsonRejected(f"JSON nested deeper than {max_depth}")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    # Iterative, so checking hostile input cannot itself recurse too deep.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
