"""The ``filter`` of ``GET /Users``: the one-person lookups IdPs actually send.

IdP provisioning engines filter to find one person before they create or update them
(Entra ID: ``userName eq "..."`` or ``externalId eq "..."``; Okta: ``userName eq "..."``).
The LMS is the system of record and can only be searched the way the app matches
accounts (``match_by``), so a filter becomes one :class:`Lookup`; every other filter (other
operators, ``and``/``or``/``not``, other attributes) is refused as ``invalidFilter`` (400),
never answered by listing the whole LMS. Parsing and value checks are scim2-models'
(``ScimFilter``), not ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from scim2_models import EnterpriseUser, Group, InvalidFilterException, ScimFilter, User
from scim2_models.path import AttrPath, CompareOperator, Comparison, LogicalExpr, ValuePath

from gateway.scim.errors import ScimError

LookupKind = Literal["id", "username", "email", "employee_number", "external_id",
                     "display_name"]

_ENTERPRISE = str(EnterpriseUser.__schema__).lower()
_CORE = str(User.__schema__).lower()
_GROUP = str(Group.__schema__).lower()
_MAX_FILTER = 1024


@dataclass(frozen=True, slots=True)
class Lookup:
    """One person, by one attribute (compared case-insensitively except ``id``)."""

    kind: LookupKind
    value: str


def parse_filter(text: str) -> Lookup:
    """The lookup ``text`` asks for; ScimError(400, invalidFilter) for anything else."""
    if len(text) > _MAX_FILTER:
        raise ScimError(400, "invalidFilter", "filter too long")
    try:
        parsed = ScimFilter[User[EnterpriseUser]](text)
    except InvalidFilterException as exc:
        raise ScimError(400, "invalidFilter", str(exc.detail or "invalid filter")) from None
    except (ValueError, TypeError):
        raise ScimError(400, "invalidFilter", "invalid filter") from None
    lookup = _lookup(parsed.ast)
    if lookup is None:
        raise ScimError(
            400,
            "invalidFilter",
            "supported filters: userName, externalId, id, emails.value, "
            'emails[type eq "work"].value or enterprise employeeNumber, with eq',
        )
    return lookup


def parse_group_filter(text: str) -> Lookup:
    """The one Group ``text`` asks for: ``displayName``, ``externalId`` or ``id`` with ``eq``
    (how Entra and Okta look a group up before creating it); 400 invalidFilter otherwise."""
    if len(text) > _MAX_FILTER:
        raise ScimError(400, "invalidFilter", "filter too long")
    try:
        parsed = ScimFilter[Group](text)
    except InvalidFilterException as exc:
        raise ScimError(400, "invalidFilter", str(exc.detail or "invalid filter")) from None
    except (ValueError, TypeError):
        raise ScimError(400, "invalidFilter", "invalid filter") from None
    node = parsed.ast
    kinds: dict[tuple[str, str, str | None], LookupKind] = {
        ("", "displayname", None): "display_name", ("", "externalid", None): "external_id",
        ("", "id", None): "id"}
    if (isinstance(node, Comparison) and node.op is CompareOperator.eq
            and isinstance(node.value, str) and node.value):
        path = node.attr_path
        uri = (path.uri or "").lower()
        kind = kinds.get(("" if uri == _GROUP else uri, path.attr.lower(),
                          path.sub_attr.lower() if path.sub_attr else None))
        if kind is not None:
            return Lookup(kind, node.value)
    raise ScimError(400, "invalidFilter",
                    "supported group filters: displayName, externalId or id, with eq")


def _lookup(node: Any) -> Lookup | None:
    if isinstance(node, Comparison):
        return _comparison(node.attr_path, node.op, node.value)
    if isinstance(node, ValuePath) and _name(node.attr_path) == ("", "emails", None):
        # emails[type eq "work" and value eq "x"] (how the parser reads
        # emails[type eq "work"].value eq "x"), or emails[value eq "x"].
        terms = node.val_filter.terms if isinstance(node.val_filter, LogicalExpr) else (
            node.val_filter,)
        if isinstance(node.val_filter, LogicalExpr) and node.val_filter.op.value != "and":
            return None
        value: str | None = None
        for term in terms:
            if not isinstance(term, Comparison) or term.op is not CompareOperator.eq:
                return None
            sub = _name(term.attr_path)
            if sub == ("", "type", None) and isinstance(term.value, str):
                if term.value.lower() != "work":
                    return None
            elif sub == ("", "value", None) and isinstance(term.value, str):
                value = term.value
            else:
                return None
        return Lookup("email", value) if value is not None else None
    return None


def _comparison(path: AttrPath, op: CompareOperator, value: Any) -> Lookup | None:
    if op is not CompareOperator.eq or not isinstance(value, str) or not value:
        return None
    name = _name(path)
    kinds: dict[tuple[str, str, str | None], LookupKind] = {
        ("", "id", None): "id",
        ("", "username", None): "username",
        ("", "externalid", None): "external_id",
        ("", "emails", "value"): "email",
        ("", "emails", None): "email",
        (_ENTERPRISE, "employeenumber", None): "employee_number",
    }
    kind = kinds.get(name)
    return Lookup(kind, value) if kind is not None else None


def _name(path: AttrPath) -> tuple[str, str, str | None]:
    """(schema, attribute, sub-attribute), lower-case; the core schema's URN counts as none."""
    uri = (path.uri or "").lower()
    return (
        "" if uri == _CORE else uri,
        path.attr.lower(),
        path.sub_attr.lower() if path.sub_attr else None,
    )
