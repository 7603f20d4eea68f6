"""Access rules and attribute mapping: ``Identity x App -> Profile | AccessDenied``.

Denials carry an operator reason (which rule failed) but the employee's page says only that
the account may not use the app: the rules themselves are not revealed.
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
    if not sep or not local or not domain or any(c.isspace() for c in email):
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
    groups = set(identity.groups)
    if app.required_groups and not groups.intersection(app.required_groups):
        raise AccessDenied(f"app {app_name}: employee is in none of the required groups")

    lms_groups = tuple(
        dict.fromkeys(app.group_map[g] for g in identity.groups if g in app.group_map)
    )
    role = next((r for g, r in app.role_map.items() if g in groups), app.default_role)
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
    if app.username == "employee_number":
        if not identity.employee_number:
            raise AccessDenied(f"app {app_name}: the IdP sent no employee number")
        return identity.employee_number
    return identity.subject
