"""Legal holds over HTTP: place, list, read, extend and release (lifecycle/holds.py does the
work). Complaints staff and admins only; the token fixes the tenant, and another tenant's hold
is answered like a missing one."""

import uuid
from typing import Any

from aiohttp import web

from archive.errors import BadRequestError, FieldError, NotFoundError
from archive.ids import parse_uuid
from archive.models import Hold, Item, Role
from archive.service import Actor
from lifecycle import holds
from web.endpoint import Endpoint, json_answer, json_body, json_request, ref
from web.keys import ARCHIVE, principal
from web.views.items import record

MAKERS = frozenset({Role.COMPLAINTS, Role.ADMIN})
_PLACE_FIELDS = ("case_ref", "reason", "item_ids", "query")


def hold_json(hold: Hold, item_count: int) -> dict[str, Any]:
    """The public view of a hold."""
    return {
        "id": str(hold.id),
        "case_ref": hold.case_ref,
        "reason": hold.reason,
        "query": hold.query,
        "status": hold.status,
        "placed_by": hold.placed_by,
        "placed_at": hold.placed_at.isoformat(),
        "released_by": hold.released_by,
        "released_at": hold.released_at.isoformat() if hold.released_at else None,
        "release_reason": hold.release_reason,
        "item_count": item_count,
    }


def _member_json(item: Item) -> dict[str, Any]:
    return {"id": str(item.id), "channel": item.channel,
            "started_at": item.started_at.isoformat(), "status": item.status}


def _actor(request: web.Request) -> Actor:
    who = principal(request)
    return Actor(who.actor, who.role.value)



def _unknown(body: dict[str, Any], known: tuple[str, ...]) -> list[FieldError]:
    return [FieldError(k, "is not a known field") for k in sorted(set(body) - set(known))]


def _string(body: dict[str, Any], name: str, errors: list[FieldError]) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    errors.append(FieldError(name, "must be a string"))
    return None


def _ids(body: dict[str, Any], errors: list[FieldError]) -> list[uuid.UUID] | None:
    raw = body.get("item_ids")
    if raw is None:
        return None
    if not isinstance(raw, list):
        errors.append(FieldError("item_ids", "must be a list of item ids"))
        return None
    ids = [parse_uuid(v) if isinstance(v, str) else None for v in raw]
    errors += [FieldError(f"item_ids[{n}]", "is not an item id (a UUID)")
               for n, v in enumerate(ids) if v is None]
    return [v for v in ids if v is not None]


def _raise(title: str, errors: list[FieldError], checked: list[FieldError]) -> None:
    """Raise with the shape errors found here and those of the domain's checks on fields not
    already named, so one answer names every bad field."""
    named = {e.field.split("[")[0].split(".")[0] for e in errors}
    errors = errors + [e for e in checked if e.field.split("[")[0].split(".")[0] not in named]
    if errors:
        raise BadRequestError(title, errors=errors)


async def post_hold(request: web.Request) -> web.Response:
    body = await json_body(request)
    errors = _unknown(body, _PLACE_FIELDS)
    case_ref = _string(body, "case_ref", errors)
    reason = _string(body, "reason", errors)
    item_ids = _ids(body, errors)
    query = body.get("query")
    if query is not None and not isinstance(query, dict):
        errors.append(FieldError("query", "must be an object of search filters"))
        query = {}
    if "item_ids" in body and body["item_ids"] is not None and item_ids is None:
        item_ids = []  # malformed, already named: still counts as given
    _raise("the hold has errors", errors,
           holds.check_placement(case_ref, reason, item_ids, query))
    assert case_ref is not None and reason is not None
    placed = await holds.place_hold(
        request.app[ARCHIVE], tenant=principal(request).tenant, actor=_actor(request),
        case_ref=case_ref, reason=reason, item_ids=item_ids, query=query)
    return web.json_response(
        {**hold_json(placed.hold, placed.item_count),
         "already_destroyed": [str(i) for i in placed.already_destroyed]},
        status=201, headers={"Location": f"/v1/holds/{placed.hold.id}"})


def _limit(raw: str | None, default: int, errors: list[FieldError]) -> int:
    if raw is None or raw == "":
        return default
    if raw.isdigit() and 1 <= int(raw) <= holds.MAX_PAGE:
        return int(raw)
    errors.append(FieldError("limit", f"must be a whole number from 1 to {holds.MAX_PAGE}"))
    return default


def _query_params(request: web.Request, known: tuple[str, ...]) -> list[FieldError]:
    params = request.query
    return [FieldError(name, "is not a known parameter") for name in sorted(set(params))
            if name not in known] + [
        FieldError(name, "is given more than once") for name in sorted(set(params))
        if name in known and len(params.getall(name)) > 1]


async def list_holds(request: web.Request) -> web.Response:
    params = request.query
    errors = _query_params(request, ("status", "case_ref", "limit", "cursor"))
    limit = _limit(params.get("limit"), holds.DEFAULT_HOLDS_PAGE, errors)
    status, case_ref = params.get("status") or None, params.get("case_ref") or None
    cursor = params.get("cursor") or None
    _raise("the hold filters have errors", errors,
           holds.check_list_filters(status, case_ref, limit, cursor))
    page = await holds.list_holds(request.app[ARCHIVE], principal(request).tenant,
                                  status=status, case_ref=case_ref, limit=limit, cursor=cursor)
    await record(request, "hold.list", None, {"count": len(page.holds)})
    return web.json_response({"holds": [hold_json(h, n) for h, n in page.holds],
                              "next_cursor": page.next_cursor})


def _hold_id(request: web.Request) -> uuid.UUID:
    hold_id = parse_uuid(request.match_info["hold_id"])
    if hold_id is None:
        raise NotFoundError(f"no hold {request.match_info['hold_id']!r}")
    return hold_id


async def get_hold(request: web.Request) -> web.Response:
    hold_id = _hold_id(request)
    errors = _query_params(request, ("limit", "cursor"))
    limit = _limit(request.query.get("limit"), holds.DEFAULT_ITEMS_PAGE, errors)
    if errors:
        raise BadRequestError("the parameters have errors", errors=errors)
    detail = await holds.get_hold(request.app[ARCHIVE], principal(request).tenant, hold_id,
                                  limit=limit, cursor=request.query.get("cursor") or None)
    await record(request, "hold.view", None,
                 {"hold_id": str(hold_id), "items": len(detail.items)})
    return web.json_response({**hold_json(detail.hold, detail.item_count),
                              "items": [_member_json(i) for i in detail.items],
                              "next_cursor": detail.next_cursor})


async def post_hold_items(request: web.Request) -> web.Response:
    hold_id = _hold_id(request)
    body = await json_body(request)
    errors = _unknown(body, ("item_ids",))
    item_ids = _ids(body, errors)
    if item_ids is None and not any(e.field == "item_ids" for e in errors):
        errors.append(FieldError("item_ids", "is required"))
    _raise("the items have errors", errors,
           holds.check_item_ids(item_ids) if item_ids is not None else [])
    assert item_ids is not None
    added = await holds.add_items(request.app[ARCHIVE], tenant=principal(request).tenant,
                                  actor=_actor(request), hold_id=hold_id, item_ids=item_ids)
    return web.json_response({
        "added": [str(i) for i in added.added],
        "already_held": [str(i) for i in added.already_held],
        "already_destroyed": [str(i) for i in added.already_destroyed],
        "item_count": added.item_count,
    })


async def post_release(request: web.Request) -> web.Response:
    hold_id = _hold_id(request)
    body = await json_body(request)
    errors = _unknown(body, ("reason",))
    reason = _string(body, "reason", errors)
    _raise("the release has errors", errors, holds.check_reason(reason))
    assert reason is not None
    released = await holds.release_hold(request.app[ARCHIVE], tenant=principal(request).tenant,
                                        actor=_actor(request), hold_id=hold_id, reason=reason)
    return web.json_response(hold_json(released.hold, released.item_count))


# -- OpenAPI -----------------------------------------------------------------------------------

_ID = {"name": "hold_id", "in": "path", "required": True,
       "schema": {"type": "string", "format": "uuid"}}
_BAD = {"$ref": "#/components/responses/BadRequest"}
_NOT_FOUND = {"$ref": "#/components/responses/NotFound"}
_RELEASED = {"description": "The hold was already released",
             "content": {"application/problem+json": {
                 "schema": {"$ref": "#/components/schemas/Problem"}}}}


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}



_LIMIT = {"type": "integer", "minimum": 1, "maximum": holds.MAX_PAGE}

ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/v1/holds", post_hold, "post_hold",
             "Place a legal hold on items chosen by id or by a (live) search", MAKERS,
             {"requestBody": json_request("HoldRequest"),
              "responses": {
                  "201": {**json_answer(ref("HoldPlaced"), "The hold was placed"),
                          "headers": {"Location": {"schema": {"type": "string"},
                                                   "description": "/v1/holds/{id}"}}},
                  "400": _BAD}}),
    Endpoint("GET", "/v1/holds", list_holds, "list_holds",
             "List legal holds, newest first", MAKERS,
             {"parameters": [
                 _param("status", {"enum": list(holds.STATUSES)}, "Only active or released"),
                 _param("case_ref", {"type": "string", "maxLength": holds.MAX_CASE_REF},
                        "Only the holds of this case reference"),
                 _param("limit", {**_LIMIT, "default": holds.DEFAULT_HOLDS_PAGE},
                        "Holds per page"),
                 _param("cursor", {"type": "string"}, "next_cursor of the previous page")],
              "responses": {"200": json_answer(ref("HoldList"), "A page of holds"),
                            "400": _BAD}}),
    Endpoint("GET", "/v1/holds/{hold_id}", get_hold, "get_hold",
             "Read a legal hold and a page of its items", MAKERS,
             {"parameters": [
                 _ID,
                 _param("limit", {**_LIMIT, "default": holds.DEFAULT_ITEMS_PAGE},
                        "Items per page"),
                 _param("cursor", {"type": "string"}, "next_cursor of the previous page")],
              "responses": {"200": json_answer(ref("HoldDetail"), "The hold and its items"),
                            "400": _BAD, "404": _NOT_FOUND}}),
    Endpoint("POST", "/v1/holds/{hold_id}/items", post_hold_items, "post_hold_items",
             "Add items to an active legal hold", MAKERS,
             {"parameters": [_ID], "requestBody": json_request("HoldItemsRequest"),
              "responses": {"200": json_answer(ref("HoldItemsAdded"), "What was added"),
                            "400": _BAD, "404": _NOT_FOUND, "409": _RELEASED}}),
    Endpoint("POST", "/v1/holds/{hold_id}/release", post_release, "post_release",
             "Release a legal hold", MAKERS,
             {"parameters": [_ID], "requestBody": json_request("HoldRelease"),
              "responses": {"200": json_answer(ref("Hold"), "The released hold"),
                            "400": _BAD, "404": _NOT_FOUND, "409": _RELEASED}}),
]

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_IDS = {"type": "array", "items": _UUID}
_HOLD_PROPERTIES: dict[str, Any] = {
    "id": _UUID,
    "case_ref": _STR,
    "reason": _STR,
    "query": {"type": ["object", "null"],
              "description": "The search filters of a query hold, as asked; null for a hold "
                             "of listed items"},
    "status": {"enum": list(holds.STATUSES)},
    "placed_by": _STR,
    "placed_at": _TIME,
    "released_by": _NSTR,
    "released_at": {"type": ["string", "null"], "format": "date-time"},
    "release_reason": _NSTR,
    "item_count": {"type": "integer", "description": "Items the hold holds (or held)"},
}
_HOLD_REQUIRED = list(_HOLD_PROPERTIES)

SCHEMAS: dict[str, Any] = {
    "HoldRequest": {
        "type": "object", "required": ["case_ref", "reason"], "additionalProperties": False,
        "description": "Exactly one of item_ids and query.",
        "properties": {
            "case_ref": {"type": "string", "minLength": 1, "maxLength": holds.MAX_CASE_REF,
                         "description": "The complaint or case the hold is for"},
            "reason": {"type": "string", "minLength": 1, "maxLength": holds.MAX_REASON,
                       "description": "Why the items must be kept; never written to the "
                                      "audit log"},
            "item_ids": {**_IDS, "minItems": 1, "maxItems": holds.MAX_ITEM_IDS},
            "query": {"type": "object",
                      "description": "Search filters as the query parameters of GET /v1/items "
                                     "(caller_number, email, postcode, name, agent_id, "
                                     "service, channel, from, to); not status, held or "
                                     "case_ref. Live: matching items that arrive later are "
                                     "held too, until release."},
        },
    },
    "Hold": {"type": "object", "required": _HOLD_REQUIRED, "properties": _HOLD_PROPERTIES},
    "HoldPlaced": {
        "type": "object", "required": [*_HOLD_REQUIRED, "already_destroyed"],
        "properties": {**_HOLD_PROPERTIES, "already_destroyed": {
            **_IDS, "description": "Ids asked for that were already destroyed: not held"}},
    },
    "HoldList": {
        "type": "object", "required": ["holds", "next_cursor"],
        "properties": {"holds": {"type": "array", "items": ref("Hold")},
                       "next_cursor": {**_NSTR, "description": "null on the last page"}},
    },
    "HoldDetail": {
        "type": "object", "required": [*_HOLD_REQUIRED, "items", "next_cursor"],
        "properties": {
            **_HOLD_PROPERTIES,
            "items": {"type": "array", "description": "A page of the hold's items, by id",
                      "items": {"type": "object",
                                "required": ["id", "channel", "started_at", "status"],
                                "properties": {"id": _UUID, "channel": _STR,
                                               "started_at": _TIME, "status": _STR}}},
            "next_cursor": {**_NSTR, "description": "null on the last page"},
        },
    },
    "HoldItemsRequest": {
        "type": "object", "required": ["item_ids"], "additionalProperties": False,
        "properties": {"item_ids": {**_IDS, "minItems": 1, "maxItems": holds.MAX_ITEM_IDS}},
    },
    "HoldItemsAdded": {
        "type": "object", "required": ["added", "already_held", "already_destroyed",
                                       "item_count"],
        "properties": {"added": _IDS, "already_held": _IDS, "already_destroyed": _IDS,
                       "item_count": {"type": "integer"}},
    },
    "HoldRelease": {
        "type": "object", "required": ["reason"], "additionalProperties": False,
        "properties": {"reason": {"type": "string", "minLength": 1,
                                  "maxLength": holds.MAX_REASON}},
    },
}
