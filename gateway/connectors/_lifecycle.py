"""Rules the three connectors' account lifecycle (SCIM provisioning) share.

* **Which roles an app may manage**: SCIM manages accounts outside any sign-in, so there is
  no Profile to say which role the employee is granted. An existing account is manageable
  when every role it holds is a learner's or one the app's own mapping can grant
  (``role_map`` values, ``default_role``): those the gateway could have given it anyway.
  Anything else is refused with PrivilegedAccount unless the app adopts privileged accounts.
* **Paging arguments** are checked before any LMS call.
"""

from __future__ import annotations

from gateway.errors import BadRequest
from gateway.settings import AppSettings

# Largest page a connector asks its LMS for in one call (Litmos' documented maximum).
MAX_PAGE = 1000


def mappable_roles(app: AppSettings) -> set[str]:
    """The role values the app's mapping can grant (as configured, not normalised)."""
    roles = set(app.role_map.values())
    if app.default_role:
        roles.add(app.default_role)
    return roles


def check_page(start: int, count: int) -> int:
    """``count`` capped at :data:`MAX_PAGE`; BadRequest for a negative start or count."""
    if start < 0 or count < 0:
        raise BadRequest("paging: start and count must not be negative")
    return min(count, MAX_PAGE)
