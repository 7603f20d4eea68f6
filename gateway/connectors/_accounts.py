"""Rules every connector applies to LMS accounts and LMS ids, whatever the vendor.

* **Privileged accounts** (DESIGN.md, trust model): just-in-time provisioning matches
  existing LMS accounts by e-mail, username or employee number. When the account it matched
  has a role above what the app's mapping grants this employee (an LMS admin, owner,
  manager, ...), signing the browser in would hand an IdP identity the LMS's admin rights, so
  the sign-in is refused unless the app sets ``adopt_privileged_accounts``. Which role values
  are privileged is vendor knowledge and lives in each connector; this module holds the
  refusal (error + operator log line) so all three behave alike.
* **Ids that go into LMS URLs**: an id is put into a path or query only after it passed a
  strict check. ``str.isdigit`` is not such a check: it accepts other scripts' digits
  (``'١٢٣'``) and ``int()`` then quietly turns them into ASCII ones.
"""

from __future__ import annotations

import logging
import re

from gateway.errors import PrivilegedAccount
from gateway.observability import log_event
from gateway.settings import AppSettings

log = logging.getLogger("gateway.lms")

# ASCII digits only, at most 20 (a 64-bit id has 20). ``re`` with a ``str`` pattern treats
# ``[0-9]`` as the ASCII range; ``\d`` would accept every Unicode decimal digit.
_NUMERIC_ID = re.compile(r"[0-9]{1,20}")
# What of an LMS-supplied role value may reach a log line or an error reason.
_UNSAFE = re.compile(r"[^A-Za-z0-9 _,:=.-]")


def numeric_id(value: object) -> str | None:
    """``value`` as an ASCII-digit id string, or None when it is not one.

    Accepts non-negative ints (JSON numbers from an LMS) and strings of ASCII digits;
    refuses bools, negative numbers, floats, other scripts' digits, signs and whitespace.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value) if value >= 0 else ""
    elif isinstance(value, str):
        text = value
    else:
        return None
    return text if _NUMERIC_ID.fullmatch(text) else None


def refuse_privileged(app_name: str, app: AppSettings, *, lms_user_id: str, why: str) -> None:
    """Refuse adopting an existing privileged LMS account, unless the app allows it.

    Called only for accounts the gateway found (never for one it just created). Logs one
    WARNING for operators with the app and LMS user id (no e-mail: the log is not the place
    for personal data) and raises :class:`PrivilegedAccount` before any link is minted or
    anything in the LMS is changed.
    """
    if app.adopt_privileged_accounts:
        return
    why = _UNSAFE.sub("?", why)[:80]
    lms_user_id = _UNSAFE.sub("?", lms_user_id)[:64]
    log_event(
        log,
        logging.WARNING,
        "privileged LMS account not adopted by single sign-on",
        app=app_name,
        lms_user_id=lms_user_id,
        role=why,
    )
    raise PrivilegedAccount(
        f"app {app_name}: existing LMS user {lms_user_id} has role {why}; "
        "adopt_privileged_accounts is off"
    )
