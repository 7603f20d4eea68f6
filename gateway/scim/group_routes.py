"""``/scim/v2/{app}/Groups``: thin glue over :class:`GroupService` (see ``groups.py`` for
what a Group is here). Mounted through ``routes.py``'s operation table, so credentials,
the budget class, error bodies and metrics are the Users endpoints' own.

PATCH is read the way Entra ID and Okta send it: ``add`` of ``members`` (with a path, or
without one and ``{"members": [...]}`` as the value), ``remove`` with
``members[value eq "<id>"]`` (``or`` of several ids too) or with ``members`` and a value
list (Entra), ``replace`` of ``members`` (the whole membership). Changes of ``displayName``
or ``externalId`` are accepted and ignored: the LMS group's name belongs to the LMS, and a
Group's identity to the ``group_map``. scim2-models validates the request; this module
only turns its operations into member steps.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from scim2_models import Context, Group, GroupMember, ListResponse, Meta, PatchOp
from scim2_models.path import CompareOperator, Comparison, LogicalExpr
from starlette.requests import Request
from starlette.responses import Response

from gateway.connectors.base import LmsUser
from gateway.errors import NotFound
from gateway.scim.bodies import int_param, read_body, scim_json
from gateway.scim.errors import ScimError
from gateway.scim.filters import parse_group_filter
from gateway.scim.groups import GroupRef, GroupService
from gateway.scim.resources import MAX_PAGE, dump
from gateway.scim.service import ScimService

Work = Callable[[Request, ScimService, str, str], Awaitable[Response]]
_GROUP_ID = re.compile(r"^[A-Za-z0-9._~-]{1,512}$")


def group_resource(ref: GroupRef, base: str, members: list[LmsUser] | None) -> Group:
    """The SCIM Group for ``ref`` (``members`` None: not read, left out)."""
    return Group(
        id=ref.id,
        display_name=ref.display_name or None,
        external_id=ref.external_id,
        members=[GroupMember(value=u.user_id, ref=f"{base}/Users/{u.user_id}", type="User",
                             display=" ".join(p for p in (u.first_name, u.last_name) if p)
                             or None)
                 for u in members] if members else None,
        meta=Meta(resource_type="Group", location=f"{base}/Groups/{ref.id}"),
    )


def _ref(request: Request, groups: GroupService) -> GroupRef:
    group_id: str = request.path_params["id"]
    if not _GROUP_ID.match(group_id):
        raise NotFound("scim: malformed group id")
    return groups.by_id(group_id)


def _wants_members(request: Request) -> bool:
    def names(param: str) -> set[str] | None:
        raw = request.query_params.get(param)
        if raw is None:
            return None
        return {n.strip().lower().rpartition(":")[2] for n in raw.split(",")}

    excluded = names("excludedAttributes") or set()
    only = names("attributes")
    return "members" not in excluded and (only is None or "members" in only)


def _member_ids(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    ids = []
    for item in items:
        raw = item.get("value") if isinstance(item, dict) else None
        if not isinstance(raw, str) or not raw:
            raise ScimError(400, "invalidValue", "each member needs a value (a user id)")
        ids.append(raw)
    return ids


def _filter_ids(node: Any) -> list[str]:
    """``value eq "a"`` or ``value eq "a" or value eq "b"``: the ids it names."""
    if isinstance(node, LogicalExpr) and node.op.value == "or":
        return [i for term in node.terms for i in _filter_ids(term)]
    if (isinstance(node, Comparison) and node.op is CompareOperator.eq
            and node.attr_path.attr.lower() == "value" and isinstance(node.value, str)):
        return [node.value]
    raise ScimError(400, "invalidFilter", 'members filters: value eq "<user id>" (or ors)')


def member_steps(patch: PatchOp[Group]) -> list[tuple[str, list[str]]]:
    """The PATCH as ("add" | "remove" | "set", user ids) steps, in order."""
    steps: list[tuple[str, list[str]]] = []
    for operation in patch.operations or []:
        kind = operation.op.value
        path = operation.path
        if path is None:
            if kind == "remove" or not isinstance(operation.value, dict):
                raise ScimError(400, "noTarget" if kind == "remove" else "invalidValue",
                                "an operation without a path needs an object value")
            members = next((v for k, v in operation.value.items()
                            if k.lower() == "members"), None)
            if members is not None:
                steps.append(("add" if kind == "add" else "set", _member_ids(members)))
            continue  # displayName, externalId: ignored (module docstring)
        parts = [p.lower() for p in path.parts]
        if parts in (["displayname"], ["externalid"]):
            continue
        if parts != ["members"]:
            raise ScimError(400, "invalidPath", "Groups take changes of members only")
        if path.value_filter is not None:
            if kind != "remove":
                raise ScimError(400, "invalidPath", "only remove takes a members filter")
            steps.append(("remove", _filter_ids(path.value_filter)))
        elif kind == "add":
            steps.append(("add", _member_ids(operation.value or [])))
        elif kind == "replace":
            steps.append(("set", _member_ids(operation.value or [])))
        elif operation.value is not None:
            steps.append(("remove", _member_ids(operation.value)))  # Entra's remove + value
        else:
            steps.append(("set", []))  # remove every member
    return steps


async def _list(request: Request, service: ScimService, idp: str, base: str) -> Response:
    groups = GroupService(service)
    filters = request.query_params.getlist("filter")
    if len(filters) > 1:
        raise ScimError(400, "invalidFilter", "filter may be given once")
    refs = groups.mapped()
    if filters:
        lookup = parse_group_filter(filters[0])
        if lookup.kind == "id":
            try:
                refs = [groups.by_id(lookup.value)] if _GROUP_ID.match(lookup.value) else []
            except NotFound:
                refs = []
        else:
            ref = (groups.named(lookup.value, None) if lookup.kind == "display_name"
                   else groups.named(None, lookup.value))
            refs = [ref] if ref.lms_group is not None else []
    start = max(1, int_param(request, "startIndex", 1))
    count = min(max(0, int_param(request, "count", MAX_PAGE)), MAX_PAGE)
    page = refs[start - 1:start - 1 + count]
    body = ListResponse[Group](
        total_results=len(refs), start_index=start, items_per_page=len(page),
        resources=[group_resource(r, base, None) for r in page] or None)
    return scim_json(dump(body, Context.SEARCH_RESPONSE))


async def _create(request: Request, service: ScimService, idp: str, base: str) -> Response:
    groups = GroupService(service)
    resource = Group.model_validate(await read_body(request),
                                    scim_ctx=Context.RESOURCE_CREATION_REQUEST)
    if not resource.display_name:
        raise ScimError(400, "invalidValue", "displayName is required")
    ref = groups.named(resource.display_name, resource.external_id)
    groups.check_trusted(idp, ref)
    # The LMS group exists already (the map names it): "creating" it is adopting it, so a
    # retried or repeated POST answers the same Group instead of 409.
    ids = [str(m.value) for m in resource.members or [] if m.value]
    await groups.apply(idp, ref, [("add", ids)] if ids else [])
    return scim_json(dump(group_resource(ref, base, None), Context.RESOURCE_CREATION_RESPONSE),
                     201, {"Location": f"{base}/Groups/{ref.id}"})


async def _get(request: Request, service: ScimService, idp: str, base: str) -> Response:
    groups = GroupService(service)
    ref = _ref(request, groups)
    members = await groups.members(idp, ref) if _wants_members(request) else None
    return scim_json(dump(group_resource(ref, base, members), Context.RESOURCE_QUERY_RESPONSE))


async def _put(request: Request, service: ScimService, idp: str, base: str) -> Response:
    groups = GroupService(service)
    ref = _ref(request, groups)
    resource = Group.model_validate(await read_body(request),
                                    scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    ids = [str(m.value) for m in resource.members or [] if m.value]
    await groups.apply(idp, ref, [("set", ids)])
    return scim_json(dump(group_resource(ref, base, None),
                          Context.RESOURCE_REPLACEMENT_RESPONSE))


async def _patch(request: Request, service: ScimService, idp: str, base: str) -> Response:
    groups = GroupService(service)
    ref = _ref(request, groups)
    patch = PatchOp[Group].model_validate(await read_body(request),
                                          scim_ctx=Context.RESOURCE_PATCH_REQUEST)
    await groups.apply(idp, ref, member_steps(patch))
    # 204: Entra and Okta accept it, and it spares a member listing per PATCH.
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


async def _delete(request: Request, service: ScimService, idp: str, base: str) -> Response:
    _ref(request, GroupService(service))  # 404 for ids that name no Group
    # The LMS group and its memberships stay (groups.py): nothing to change.
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


OPS: dict[tuple[str, str], tuple[str, Work]] = {
    ("groups", "GET"): ("group-list", _list),
    ("groups", "POST"): ("group-create", _create),
    ("group", "GET"): ("group-get", _get),
    ("group", "PUT"): ("group-replace", _put),
    ("group", "PATCH"): ("group-patch", _patch),
    ("group", "DELETE"): ("group-delete", _delete),
}
