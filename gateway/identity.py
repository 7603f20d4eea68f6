"""The two dataclasses that cross the gateway's boundaries.

``Identity`` is what an IdP told us, normalised: both front doors (``auth/oidc.py`` and
``auth/saml.py``) produce it and nothing downstream sees raw claims or SAML XML.

``Profile`` is what the LMS account should look like for one app, computed from an Identity
by ``policy.py``. Connectors only ever take Profiles.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified employee, as asserted by one IdP."""

    idp: str
    subject: str
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    display_name: str | None = None
    employee_number: str | None = None
    groups: tuple[str, ...] = ()
    # OIDC ``sid`` or SAML ``SessionIndex``; only used to end the IdP session on logout.
    idp_session: str | None = None
    authenticated_at: int | None = None

    @property
    def key(self) -> str:
        """Stable key for this employee across sign-ins: IdP name plus its subject."""
        return f"{self.idp}\x1f{self.subject}"

    @property
    def key_digest(self) -> str:
        """The employee in store key names and budget shares: a hash, so the store never
        holds raw subjects or e-mail addresses and hostile subjects cannot shape keys."""
        return hashlib.sha256(self.key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Profile:
    """The LMS account an app wants for an employee. Connectors take nothing else."""

    email: str
    first_name: str
    last_name: str
    username: str
    employee_number: str | None = None
    groups: tuple[str, ...] = ()
    role: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    def digest(self) -> str:
        """A short fingerprint of the profile, so a cache can tell when an update is due."""
        # A shallow field dict encodes exactly as ``asdict`` would (every field is a string,
        # None or a tuple of them), without its deep copy (~13 us per call).
        fields_ = {name: getattr(self, name) for name in _PROFILE_FIELDS}
        encoded = json.dumps(fields_, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(encoded.encode()).hexdigest()[:32]


_PROFILE_FIELDS = tuple(f.name for f in fields(Profile))
IDENTITY_FIELDS = tuple(f.name for f in fields(Identity))


def identity_dict(identity: Identity) -> dict[str, Any]:
    """``dataclasses.asdict(identity)`` without the deep copy: every field is a string, an
    int, None or a tuple of strings, so a shallow dict serialises the same."""
    return {name: getattr(identity, name) for name in IDENTITY_FIELDS}
