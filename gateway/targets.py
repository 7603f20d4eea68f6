"""Return targets and deep links: untrusted input that decides where a browser goes next.

Two kinds of value arrive from browsers (``/login/{app}?target=``, ``return_to``, SAML
RelayState):

* a **return path**: where to continue inside the gateway or on an allow-listed host. Anything
  that could leave for another site (``//host``, ``/\\host``, ``https:host``, encoded,
  whitespace or control-character variants, ``javascript:``) is refused; callers fall back to
  a safe default.
* a **deep-link target** inside an LMS, of the form ``<kind>:<id>`` (``course:123``). Only that
  shape passes here; each connector then accepts only the kinds it knows.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import unquote, urlsplit

from gateway.errors import UnsafeTarget

# Length limits, checked before anything else (abuse limit: each value is stored with a
# pending login). A gateway return path (an /embed/... page) is far shorter than 512; a deep
# link is ``<kind>:<id>`` with a kind of at most 32 and an id of at most 64 characters.
MAX_RETURN_TO_LENGTH = 512
MAX_TARGET_LENGTH = 97
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f\\]|[\u2028\u2029\u200b\ufeff]")
_TARGET = re.compile(r"^[a-z][a-z_]{0,31}:[A-Za-z0-9_-]{1,64}$")


def check_return_to(
    value: str, *, own_host: str, allowed_hosts: Collection[str] = (), dev_mode: bool = False
) -> str:
    """Return ``value`` when it is a safe place to send the browser, else raise UnsafeTarget.

    Safe: a path on this gateway (``/embed/...``), or an absolute https URL whose host is
    ``own_host`` or in ``allowed_hosts`` exactly.
    """
    if not value or len(value) > MAX_RETURN_TO_LENGTH:
        raise UnsafeTarget("return target empty or too long")
    # Look through up to three layers of percent-encoding: a browser or a later hop may decode.
    layers = [value]
    for _ in range(3):
        decoded = unquote(layers[-1])
        if decoded == layers[-1]:
            break
        layers.append(decoded)
    for layer in layers:
        if _FORBIDDEN.search(layer):
            raise UnsafeTarget("return target contains whitespace, control or backslash characters")
        if layer.startswith("//"):
            raise UnsafeTarget("return target is scheme-relative")
    if value.startswith("/"):
        return value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise UnsafeTarget("return target is not a URL") from None
    schemes = ("https", "http") if dev_mode else ("https",)
    if parts.scheme not in schemes or not parts.netloc or not parts.hostname:
        raise UnsafeTarget("return target is neither a local path nor an https URL")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("return target carries credentials")
    netloc = parts.hostname.lower() + (f":{port}" if port else "")
    allowed = {own_host.lower(), *(h.lower() for h in allowed_hosts)}
    if netloc not in allowed:
        raise UnsafeTarget("return target host is not allowed")
    return value


def safe_return_to(
    value: str | None,
    *,
    own_host: str,
    allowed_hosts: Collection[str] = (),
    default: str = "/",
    dev_mode: bool = False,
) -> str:
    """Like :func:`check_return_to` but falls back to ``default`` instead of raising, except
    for a value over :data:`MAX_RETURN_TO_LENGTH`: that is refused (UnsafeTarget), since no
    link of ours is that long and the request should not start a sign-in at all."""
    if value is None:
        return default
    if len(value) > MAX_RETURN_TO_LENGTH:
        raise UnsafeTarget("return target too long")
    try:
        return check_return_to(
            value, own_host=own_host, allowed_hosts=allowed_hosts, dev_mode=dev_mode
        )
    except UnsafeTarget:
        return default


def check_target(value: str | None) -> str | None:
    """A deep-link target ``<kind>:<id>`` or None; any other shape raises UnsafeTarget."""
    if value is None or value == "":
        return None
    if len(value) > MAX_TARGET_LENGTH:
        raise UnsafeTarget("deep-link target too long")
    if not _TARGET.fullmatch(value):
        raise UnsafeTarget("deep-link target is not of the form kind:id")
    return value
