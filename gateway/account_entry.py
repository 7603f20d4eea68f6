"""The account cache's entries: what ``provisioning.py`` stores per employee and app.

An entry holds the LMS account (user id + digest of the last Profile sent, never a link or a
secret) and ``checked_at``, when the account itself was last looked at. Anything the store
hands back that is not such an entry reads as a cache miss.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from gateway.connectors.base import LmsAccount

# Longest value we accept back from the store for an account (ids are short; anything
# bigger is not ours).
_MAX_ENTRY = 2048


@dataclass(frozen=True, slots=True)
class Entry:
    """A cache entry: the account and when it was last checked (wall-clock seconds, shared
    by every replica)."""

    account: LmsAccount
    checked_at: float


def encode(account: LmsAccount, checked_at: float) -> bytes:
    return json.dumps(
        {"user_id": account.user_id, "profile_digest": account.profile_digest,
         "checked_at": round(checked_at, 3)},
        separators=(",", ":"),
    ).encode()


def decode(raw: bytes) -> Entry | None:
    """The cached entry, or None for anything malformed (treated as a cache miss). An entry
    without a usable ``checked_at`` (written by an older version) is due for a check."""
    if len(raw) > _MAX_ENTRY:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    user_id, digest = data.get("user_id"), data.get("profile_digest")
    if not isinstance(user_id, str) or not user_id or not isinstance(digest, str):
        return None
    checked_at = data.get("checked_at")
    if (isinstance(checked_at, bool) or not isinstance(checked_at, int | float)
            or not math.isfinite(checked_at)):
        checked_at = 0.0  # NaN would compare as "never due"
    return Entry(LmsAccount(user_id=user_id, profile_digest=digest), float(checked_at))
