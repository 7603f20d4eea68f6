"""Access rules and attribute mapping: ``Identity x App -> Profile | AccessDenied``.

Denials carry an operator reason (which rule failed) but the employee's page says only that
the account may not use the app: the rules themselves are not revealed.

Groups and roles are scoped by IdP (the trust model in the README): an IdP's groups count
(``required_groups``, ``group_map``) only when the app trusts it for groups (``group_idps``),
and its groups grant a role from ``role_map`` only when it is trusted for roles
(``role_idps``); anyone else gets ``default_role``. Without those keys the app's IdP is
trusted when it has exactly one (``config_rules.check_rules`` makes apps with several name them).
"""

from __future__ import annotations

from gateway.errors import AccessDenied
from gateway.identity import Identity, Profile
from gateway.settings import AppSettings


def normalise_email(email: str | None) -> str | None:
    """Trim and lower-case the domain (domains are case-insensitive; local parts may not be)."""
    if not email:
        return None
    email = email.strip()
    local, sep, domain = email.rpartition("@")
    if not sep or not local or not domain or "@" in local:
        # One "@" only: a quoted local part holding another "@" could be read by an LMS as a
        # different address than the domain we checked.
        return None
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in email):
        return None
    return f"{local}@{domain.lower()}"


def profile_for(app_name: str, app: AppSettings, identity: Identity) -> Profile:
    """Apply ``app``'s access rules to ``identity`` and map it to the LMS profile."""
    if identity.idp not in app.idps:
        raise AccessDenied(f"app {app_name}: IdP {identity.idp} is not allowed")
    email = normalise_email(identity.email)
    if email is None:
        raise AccessDenied(f"app {app_name}: the IdP sent no usable e-mail address")
    domain = email.rpartition("@")[2]
    if app.allowed_email_domains and domain not in app.allowed_email_domains:
        raise AccessDenied(f"app {app_name}: e-mail domain {domain} is not allowed")
    # Group names are the IdP's own: another IdP may use the same names for other people.
    trusted = identity.groups if identity.idp in group_idps(app) else ()
    groups = set(trusted)
    if app.required_groups and not groups.intersection(app.required_groups):
        raise AccessDenied(f"app {app_name}: employee is in none of the required groups")

    lms_groups = tuple(dict.fromkeys(app.group_map[g] for g in trusted if g in app.group_map))
    role = app.default_role
    if identity.idp in role_idps(app):
        granted = set(identity.groups)
        role = next((r for g, r in app.role_map.items() if g in granted), app.default_role)
    first, last = _names(identity, email)
    username = _username(app_name, app, identity, email)
    return Profile(
        email=email,
        first_name=first,
        last_name=last,
        username=username,
        employee_number=identity.employee_number,
        groups=lms_groups,
        role=role,
    )


def group_idps(app: AppSettings) -> tuple[str, ...]:
    """The IdPs whose groups ``app`` reads: ``group_idps``, else its IdP if it has one."""
    if app.group_idps is not None:
        return app.group_idps
    return app.idps if len(app.idps) == 1 else ()


def role_idps(app: AppSettings) -> tuple[str, ...]:
    """The IdPs trusted to grant roles above ``default_role`` in ``app`` (see group_idps)."""
    if app.role_idps is not None:
        return app.role_idps
    return app.idps if len(app.idps) == 1 else ()


def _names(identity: Identity, email: str) -> tuple[str, str]:
    first = (identity.given_name or "").strip()
    last = (identity.family_name or "").strip()
    if not (first and last) and identity.display_name:
        parts = identity.display_name.strip().split(None, 1)
        first = first or (parts[0] if parts else "")
        last = last or (parts[1] if len(parts) > 1 else "")
    # LMSs require both names; the e-mail's local part is the least surprising stand-in.
    return first or email.partition("@")[0], last or "-"


def _username(app_name: str, app: AppSettings, identity: Identity, email: str) -> str:
    if app.username == "email":
        return email
    if len(app.idps) > 1:
        # check-config refuses this; kept as a guard: two IdPs can issue the same subject or
        # employee number for different people, so it cannot name one LMS account.
        raise AccessDenied(
            f"app {app_name}: username {app.username} is ambiguous with several IdPs"
        )
    if app.username == "employee_number":
        if not identity.employee_number:
            raise AccessDenied(f"app {app_name}: the IdP sent no employee number")
        return identity.employee_number
    return identity.subject
