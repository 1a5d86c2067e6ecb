"""``GET /v1/items``: search the caller's tenant, newest first, a page at a time."""

import dataclasses
import uuid
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from archive.errors import BadRequestError, FieldError, ForbiddenError
from archive.models import Channel, Role
from archive.search import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    SEARCHABLE_STATUSES,
    Page,
    active_holds_of,
    parse_query,
    search,
)
from web.endpoint import READERS, Endpoint, json_answer, ref
from web.keys import DATABASE, principal
from web.views.items import item_json, record

_PAGING = ("limit", "cursor")
# Filters that find a person rather than how calls were handled: not for quality monitors,
# who find calls through samples (the issue: no free search by caller number, email or name).
NOT_FOR_QUALITY = ("caller_number", "email", "name", "postcode")


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT:
        return int(raw)
    raise ValueError(f"must be a whole number from 1 to {MAX_LIMIT}")


async def find(request: web.Request, params: MultiMapping[str]
               ) -> tuple[Page, dict[uuid.UUID, list[str]]]:
    """Run the caller's search (the query string's filters, ``limit`` and ``cursor``) within
    their role's limits, audit it, and return the page with each item's active holds. The API
    and the staff pages both search through here."""
    who = principal(request)
    if who.role == Role.QUALITY:
        refused = [name for name in NOT_FOR_QUALITY if name in params]
        if refused:
            raise ForbiddenError(
                f"quality monitors may not search by {', '.join(refused)}; find calls to "
                "review with a sample (POST /v1/samples)",
                errors=[FieldError(name, "may not be used by a quality monitor")
                        for name in refused])
    errors = [FieldError(name, "is given more than once")
              for name in sorted(set(params)) if len(params.getall(name)) > 1]
    limit = DEFAULT_LIMIT
    try:
        limit = _limit(params.get("limit"))
    except ValueError as exc:
        errors.append(FieldError("limit", str(exc)))
    filters = {k: v for k, v in params.items() if k not in _PAGING}
    try:
        query = parse_query(filters)
    except BadRequestError as exc:
        errors += exc.errors
        query = None
    if errors or query is None:
        raise BadRequestError("the search has errors", errors=errors)
    if who.role == Role.QUALITY:
        if query.channel == Channel.CHAT:
            raise ForbiddenError("quality monitors may search calls only")
        query = dataclasses.replace(query, channel=Channel.CALL)
    page = await search(request.app[DATABASE], who.tenant, query, limit=limit,
                        cursor=params.get("cursor") or None)
    holds = await active_holds_of(request.app[DATABASE], who.tenant, [i.id for i in page.items])
    used = sorted({k for k, v in filters.items() if v.strip()})
    await record(request, "item.search", None, {"filters": used, "count": len(page.items)})
    return page, holds


async def list_items(request: web.Request) -> web.Response:
    page, holds = await find(request, request.query)
    role = principal(request).role
    return web.json_response({"items": [item_json(i, holds[i.id], role) for i in page.items],
                              "next_cursor": page.next_cursor})


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_STR = {"type": "string"}
_PARAMETERS = [
    _param("caller_number", _STR, "Any notation; matched as E.164 on the caller or called "
           "number (not for quality monitors)"),
    _param("email", {"type": "string", "maxLength": 320},
           "Customer email, case ignored (not for quality monitors)"),
    _param("postcode", _STR, "UK postcode, spacing and case ignored (not for quality monitors)"),
    _param("name", {"type": "string", "maxLength": 200},
           "Customer name, case ignored, exact (not for quality monitors)"),
    _param("agent_id", {"type": "string", "maxLength": 100}, "Agent id"),
    _param("service", {"type": "string", "maxLength": 100}, "Service"),
    _param("channel", {"enum": [c.value for c in Channel]},
           "call or chat (quality monitors: calls only)"),
    _param("from", {"type": "string", "format": "date-time"},
           "started_at at or after: ISO 8601 with offset, or a date (midnight UTC)"),
    _param("to", {"type": "string", "format": "date-time"},
           "started_at before (exclusive): ISO 8601 with offset, or a date (midnight UTC)"),
    _param("status", {"enum": list(SEARCHABLE_STATUSES), "default": "active"}, "Item status"),
    _param("held", {"type": "boolean"}, "Under at least one active legal hold, or under none"),
    _param("case_ref", {"type": "string", "maxLength": 100},
           "Under an active legal hold with this case reference"),
    _param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                     "default": DEFAULT_LIMIT}, "Items per page"),
    _param("cursor", _STR, "next_cursor of the previous page"),
    {"name": "X-Purpose", "in": "header", "required": False,
     "description": "Why the search is made; recorded in the audit log",
     "schema": {"type": "string", "maxLength": 200}},
]

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/v1/items", list_items, "list_items",
             "Search items, newest first", READERS,
             {"parameters": _PARAMETERS,
              "responses": {"200": json_answer(ref("ItemPage"), "A page of matching items"),
                            "400": {"$ref": "#/components/responses/BadRequest"}}}),
]
SCHEMAS: dict[str, Any] = {
    "ItemPage": {
        "type": "object", "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": ref("Item")},
            "next_cursor": {"type": ["string", "null"],
                            "description": "Pass as cursor for the next page; null on the last"},
        },
    },
}
