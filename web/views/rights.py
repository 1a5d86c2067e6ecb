"""Data-subject rights over HTTP (roles ``privacy`` and ``admin``): rectification and its
history, erasure of one item or of every match of an identifier, anonymisation, subject access.
The rules live in ``archive.rights``; this module reads requests and shapes answers."""

import uuid
from typing import Any

from aiohttp import web

from archive import rights
from archive.errors import BadRequestError, FieldError, NotFoundError
from archive.exports import SUBJECT_ACCESS, create_export
from archive.ids import parse_uuid
from archive.models import Role
from archive.service import Actor
from web.endpoint import Endpoint, json_answer, json_body, json_request, ref
from web.keys import ARCHIVE, principal
from web.views.items import item_json, readable_item, record

PRIVACY = frozenset({Role.PRIVACY, Role.ADMIN})
# Complaints staff may see that an item was corrected, and what it said before.
HISTORY_READERS = frozenset({Role.PRIVACY, Role.ADMIN, Role.COMPLAINTS})


def _actor(request: web.Request) -> Actor:
    who = principal(request)
    return Actor(who.actor, who.role.value)


def _item_id(request: web.Request) -> uuid.UUID:
    item_id = parse_uuid(request.match_info["item_id"])
    if item_id is None:
        raise NotFoundError(f"no item {request.match_info['item_id']!r}")
    return item_id



def _check_reason(body: dict[str, Any], what: str) -> None:
    """A body of ``reason`` and an optional ``request_ref``, and nothing else."""
    errors = rights.reason_errors(body) + [
        FieldError(str(n), "is not a known field")
        for n in sorted(set(body) - {"reason", "request_ref"})]
    if errors:
        raise BadRequestError(f"the {what} request has errors", errors=errors)


async def _answer_item(request: web.Request, item_id: uuid.UUID) -> dict[str, Any]:
    archive = request.app[ARCHIVE]
    item = await archive.get(principal(request).tenant, item_id)
    return item_json(item, await archive.active_holds(item.tenant, item.id))


async def patch_item(request: web.Request) -> web.Response:
    """Correct metadata: ``{"reason", "fields": {...}, "request_ref"?}``."""
    change = rights.parse_rectification(await json_body(request))
    item = await rights.rectify(request.app[ARCHIVE], principal(request).tenant,
                                _item_id(request), change, _actor(request))
    return web.json_response(await _answer_item(request, item.id))


async def get_history(request: web.Request) -> web.Response:
    item = await readable_item(request)
    versions = await rights.history(request.app[ARCHIVE], item)
    await record(request, "item.history", item.id, {"versions": len(versions)})
    return web.json_response({"versions": versions})


async def delete_item(request: web.Request) -> web.Response:
    """Erase one item: ``{"reason"}`` in the body, or ``?reason=`` for clients that cannot send
    a DELETE body (``request_ref`` likewise)."""
    body = await json_body(request, optional=True)
    for name in ("reason", "request_ref"):
        if name in request.query and name not in body:
            body[name] = request.query[name]
    _check_reason(body, "erasure")
    record_ = await rights.erase(request.app[ARCHIVE], principal(request).tenant,
                                 _item_id(request), _actor(request), body.get("request_ref"))
    return web.json_response(rights.destruction_json(record_))


async def post_erasure(request: web.Request) -> web.Response:
    body = await json_body(request)
    identifier = rights.parse_identifier(body)
    result = await rights.erase_matching(request.app[ARCHIVE], principal(request).tenant,
                                         identifier, _actor(request), body.get("request_ref"))
    return web.json_response({
        "erased": [rights.destruction_json(r) for r in result.erased],
        "held": [{"item_id": str(i), "case_refs": refs} for i, refs in result.held]})


async def post_anonymise(request: web.Request) -> web.Response:
    body = await json_body(request)
    _check_reason(body, "anonymisation")
    item, record_ = await rights.anonymise(request.app[ARCHIVE], principal(request).tenant,
                                           _item_id(request), _actor(request),
                                           body.get("request_ref"))
    holds = await request.app[ARCHIVE].active_holds(item.tenant, item.id)
    return web.json_response({
        "item": item_json(item, holds),
        "destruction": rights.destruction_json(record_) if record_ else None})


async def post_subject_access(request: web.Request) -> web.Response:
    subject = rights.parse_subject(await json_body(request))
    archive = request.app[ARCHIVE]
    who = principal(request)
    items = await rights.find_subject(archive, who.tenant, subject)
    export_json: dict[str, Any] | None = None
    if items:
        export = await create_export(archive, tenant=who.tenant, actor=_actor(request),
                                     kind=SUBJECT_ACCESS, purpose=subject.purpose,
                                     item_ids=[i.id for i in items])
        export_json = {"id": str(export.id), "item_count": len(export.item_ids),
                       "download": f"/v1/exports/{export.id}/bundle.zip"}
    await record(request, "subject.access", None, {
        "identifiers": subject.given(), "items": len(items),
        "export_id": export_json["id"] if export_json else None})
    answers = [item_json(item, await archive.active_holds(item.tenant, item.id))
               for item in items]
    return web.json_response({"items": answers, "export": export_json},
                             status=201 if export_json else 200)


# -- OpenAPI ------------------------------------------------------------------------------------

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_REASON = {"type": "string", "minLength": 1, "maxLength": rights.MAX_REASON,
           "description": "Why (required)."}
_REQUEST_REF = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$",
                "description": "The data subject request's reference in the council's case "
                               "system; recorded in the audit log"}
_ITEM_ID = {"name": "item_id", "in": "path", "required": True,
            "schema": {"type": "string", "format": "uuid"}}
_PROBLEMS = {"400": {"$ref": "#/components/responses/BadRequest"},
             "404": {"$ref": "#/components/responses/NotFound"},
             "409": {"description": "Under legal hold (the detail names the case references), "
                                    "already destroyed or anonymised, or changed meanwhile",
                     "content": {"application/problem+json": {"schema": ref("Problem")}}},
             "503": {"$ref": "#/components/responses/Unavailable"}}



SCHEMAS: dict[str, Any] = {
    "CorrectableFields": {
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "description": "Normalised as ingest does; null (or \"\") clears a field.",
        "properties": {
            "caller_number": {**_NSTR, "description": "Any notation; stored E.164"},
            "called_number": {**_NSTR, "description": "Any notation; stored E.164"},
            "customer_name": {**_NSTR, "maxLength": 200},
            "customer_email": {**_NSTR, "format": "email", "description": "Lower-cased"},
            "customer_postcode": {**_NSTR, "description": "A UK postcode"},
            "agent_id": {**_NSTR, "maxLength": 100},
            "agent_extension": {**_NSTR, "maxLength": 32},
            "service": {**_NSTR, "maxLength": 100},
            "queue": {**_NSTR, "maxLength": 100},
            "direction": {"enum": ["inbound", "outbound", "internal", None]},
            "tags": {"type": ["array", "null"], "items": {"type": "string", "maxLength": 50},
                     "maxItems": 50},
            "special_category": {"type": "boolean"},
        },
    },
    "Rectification": {
        "type": "object", "required": ["reason", "fields"], "additionalProperties": False,
        "properties": {"reason": _REASON, "fields": ref("CorrectableFields"),
                       "request_ref": _REQUEST_REF},
    },
    "ItemHistory": {
        "type": "object", "required": ["versions"],
        "properties": {"versions": {"type": "array", "items": {
            "type": "object", "required": ["version", "fields"],
            "description": "Oldest first; the last is the item as it stands (current: true).",
            "properties": {
                "version": {"type": "integer", "minimum": 1},
                "current": {"type": "boolean"},
                "fields": {"type": "object"},
                "reason": {**_NSTR, "description": "Why this version was replaced"},
                "replaced_by": _NSTR,
                "replaced_at": {"type": ["string", "null"], "format": "date-time"}}}}},
    },
    "RightsRequest": {
        "type": "object", "required": ["reason"], "additionalProperties": False,
        "properties": {"reason": {**_REASON, "description": "Why (required; not stored: it "
                                                            "often names the person)"},
                       "request_ref": _REQUEST_REF},
    },
    "Destruction": {
        "type": "object",
        "required": ["id", "item_id", "channel", "reason", "destroyed_at", "actor"],
        "description": "Proof of destruction; holds no personal data.",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "item_id": {"type": "string", "format": "uuid"},
            "channel": {"enum": ["call", "chat"]},
            "reason": {"enum": ["retention", "erasure", "anonymisation"]},
            "destroyed_at": {"type": "string", "format": "date-time"},
            "stored_sha256": {**_NSTR, "description": "SHA-256 of the content destroyed"},
            "actor": _STR},
    },
    "ErasureRequest": {
        "type": "object", "required": ["reason"], "additionalProperties": False,
        "description": "Exactly one of caller_number and email.",
        "properties": {
            "caller_number": {"type": "string", "description":
                              "Any notation; matches the caller or the called number"},
            "email": {"type": "string", "format": "email"},
            "reason": _REASON, "request_ref": _REQUEST_REF},
    },
    "ErasureResult": {
        "type": "object", "required": ["erased", "held"],
        "properties": {
            "erased": {"type": "array", "items": ref("Destruction")},
            "held": {"type": "array", "items": {
                "type": "object", "required": ["item_id", "case_refs"],
                "properties": {"item_id": {"type": "string", "format": "uuid"},
                               "case_refs": {"type": "array", "items": _STR}}}}},
    },
    "Anonymised": {
        "type": "object", "required": ["item", "destruction"],
        "properties": {
            "item": ref("Item"),
            "destruction": {"oneOf": [ref("Destruction"), {"type": "null"}],
                            "description": "A call's destroyed audio; null for a chat"}},
    },
    "SubjectAccessRequest": {
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "description": "At least one identifier; an item matching any of them is found.",
        "properties": {
            "caller_number": {"type": "string", "description": "Any notation"},
            "email": {"type": "string", "format": "email"},
            "name": {"type": "string", "description": "Case-insensitive, exact"},
            "postcode": {"type": "string", "description": "Any spacing and case"},
            "purpose": {"type": "string", "maxLength": rights.MAX_REASON,
                        "description": "Recorded with the export"}},
    },
    "SubjectAccess": {
        "type": "object", "required": ["items", "export"],
        "properties": {
            "items": {"type": "array", "items": ref("Item")},
            "export": {"oneOf": [{"type": "null"}, {
                "type": "object", "required": ["id", "item_count", "download"],
                "properties": {"id": {"type": "string", "format": "uuid"},
                               "item_count": {"type": "integer"},
                               "download": {"type": "string",
                                            "description": "GET it for the signed ZIP"}}}]}},
    },
}

ENDPOINTS: list[Endpoint] = [
    Endpoint("PATCH", "/v1/items/{item_id}", patch_item, "rectify_item",
             "Correct an item's metadata, keeping the earlier version", PRIVACY,
             {"parameters": [_ITEM_ID], "requestBody": json_request("Rectification"),
              "responses": {"200": json_answer(ref("Item"), "The corrected item"),
                            **_PROBLEMS}}),
    Endpoint("GET", "/v1/items/{item_id}/history", get_history, "item_history",
             "List an item's versions", HISTORY_READERS,
             {"parameters": [_ITEM_ID],
              "responses": {"200": json_answer(ref("ItemHistory"), "Oldest first"),
                            "404": {"$ref": "#/components/responses/NotFound"}}}),
    Endpoint("DELETE", "/v1/items/{item_id}", delete_item, "erase_item",
             "Erase an item now (crypto-shred)", PRIVACY,
             {"parameters": [
                 _ITEM_ID,
                 {"name": "reason", "in": "query", "required": False, "schema": _REASON,
                  "description": "For clients that cannot send a DELETE body"},
                 {"name": "request_ref", "in": "query", "required": False,
                  "schema": _REQUEST_REF}],
              "requestBody": {"required": False, "content": {
                  "application/json": {"schema": ref("RightsRequest")}}},
              "responses": {"200": json_answer(ref("Destruction"), "Destroyed"),
                            **_PROBLEMS}}),
    Endpoint("POST", "/v1/erasure", post_erasure, "erase_subject",
             "Erase every unheld item matching a phone number or email", PRIVACY,
             {"requestBody": json_request("ErasureRequest"),
              "responses": {"200": json_answer(ref("ErasureResult"),
                                               "What was erased and what is held"),
                            "400": {"$ref": "#/components/responses/BadRequest"},
                            "503": {"$ref": "#/components/responses/Unavailable"}}}),
    Endpoint("POST", "/v1/items/{item_id}/anonymise", post_anonymise, "anonymise_item",
             "Anonymise an item (chat: redact the transcript; call: destroy the audio)",
             PRIVACY,
             {"parameters": [_ITEM_ID], "requestBody": json_request("RightsRequest"),
              "responses": {"200": json_answer(ref("Anonymised"), "Anonymised"),
                            **_PROBLEMS}}),
    Endpoint("POST", "/v1/subject-access", post_subject_access, "subject_access",
             "Find a data subject's items and export them", PRIVACY,
             {"requestBody": json_request("SubjectAccessRequest"),
              "responses": {
                  "201": json_answer(ref("SubjectAccess"), "Items found; export created"),
                  "200": json_answer(ref("SubjectAccess"),
                                     "Nothing found: no items and no export"),
                  "400": {"$ref": "#/components/responses/BadRequest"},
                  "503": {"$ref": "#/components/responses/Unavailable"}}}),
]
