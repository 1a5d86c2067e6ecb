"""Quality samples over HTTP: draw one, list them, read one (archive/sampling.py does the
work). Quality monitors and admins only; the token fixes the tenant, and another tenant's
sample is answered like a missing one."""

import uuid
from typing import Any

from aiohttp import web

from archive import sampling
from archive.errors import BadRequestError, FieldError, NotFoundError
from archive.ids import parse_uuid
from archive.models import Role
from archive.service import Actor
from web.endpoint import Endpoint, json_answer, json_body, json_request, ref
from web.keys import ARCHIVE, DATABASE, principal
from web.views.items import record

SAMPLERS = frozenset({Role.QUALITY, Role.ADMIN})
# Auditors read samples (inputs, seed, calls drawn) to check a draw; they do not draw.
SAMPLE_READERS = SAMPLERS | {Role.AUDITOR}


def _summary(sample: Any) -> dict[str, Any]:
    return {"id": str(sample.id), "seed": sample.seed, "inputs": sample.inputs,
            "count": len(sample.item_ids), "created_by": sample.created_by,
            "created_at": sample.created_at.isoformat()}


def drawn_json(drawn: sampling.Drawn) -> dict[str, Any]:
    """A sample with its calls, in draw order."""
    return {**_summary(drawn.sample),
            "items": [{"id": str(c.id), "agent_id": c.agent_id,
                       "started_at": c.started_at.isoformat(), "duration": c.duration,
                       "service": c.service, "status": c.status} for c in drawn.calls],
            "per_agent": drawn.per_agent}


async def post_sample(request: web.Request) -> web.Response:
    body = await json_body(request)
    who = principal(request)
    drawn = await sampling.draw(request.app[DATABASE], tenant=who.tenant,
                                actor=Actor(who.actor, who.role.value), raw=body,
                                now=request.app[ARCHIVE].clock.now())
    return web.json_response(drawn_json(drawn), status=201,
                             headers={"Location": f"/v1/samples/{drawn.sample.id}"})


def _params(request: web.Request) -> tuple[int, str | None]:
    params = request.query
    errors = [FieldError(name, "is not a known parameter") for name in sorted(set(params))
              if name not in ("limit", "cursor")]
    errors += [FieldError(name, "is given more than once") for name in sorted(set(params))
               if len(params.getall(name)) > 1]
    limit = sampling.DEFAULT_PAGE
    raw = params.get("limit")
    if raw:
        if raw.isdigit() and 1 <= int(raw) <= sampling.MAX_PAGE:
            limit = int(raw)
        else:
            errors.append(FieldError(
                "limit", f"must be a whole number from 1 to {sampling.MAX_PAGE}"))
    cursor = params.get("cursor") or None
    if cursor and parse_uuid(cursor) is None:
        errors.append(FieldError("cursor", "is not a cursor from a previous page"))
    if errors:
        raise BadRequestError("the parameters have errors", errors=errors)
    return limit, cursor


async def list_samples(request: web.Request) -> web.Response:
    limit, cursor = _params(request)
    page = await sampling.list_samples(request.app[DATABASE], principal(request).tenant,
                                       limit=limit, cursor=cursor)
    await record(request, "sample.list", None, {"count": len(page.samples)})
    return web.json_response({"samples": [_summary(s) for s in page.samples],
                              "next_cursor": page.next_cursor})


def _sample_id(request: web.Request) -> uuid.UUID:
    sample_id = parse_uuid(request.match_info["sample_id"])
    if sample_id is None:
        raise NotFoundError(f"no sample {request.match_info['sample_id']!r}")
    return sample_id


async def get_sample(request: web.Request) -> web.Response:
    sample_id = _sample_id(request)
    drawn = await sampling.get_sample(request.app[DATABASE], principal(request).tenant,
                                      sample_id)
    await record(request, "sample.view", None,
                 {"sample_id": str(sample_id), "count": len(drawn.calls)})
    return web.json_response(drawn_json(drawn))


# -- OpenAPI -----------------------------------------------------------------------------------

_BAD = {"$ref": "#/components/responses/BadRequest"}
_NOT_FOUND = {"$ref": "#/components/responses/NotFound"}


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/v1/samples", post_sample, "post_sample",
             "Draw a fair, reproducible sample of calls for quality review", SAMPLERS,
             {"requestBody": json_request("SampleRequest"),
              "responses": {
                  "201": {**json_answer(ref("SampleDrawn"), "The sample drawn and stored"),
                          "headers": {"Location": {"schema": {"type": "string"},
                                                   "description": "/v1/samples/{id}"}}},
                  "400": _BAD}}),
    Endpoint("GET", "/v1/samples", list_samples, "list_samples",
             "List samples, newest first", SAMPLE_READERS,
             {"parameters": [
                 _param("limit", {"type": "integer", "minimum": 1,
                                  "maximum": sampling.MAX_PAGE,
                                  "default": sampling.DEFAULT_PAGE}, "Samples per page"),
                 _param("cursor", {"type": "string"}, "next_cursor of the previous page")],
              "responses": {"200": json_answer(ref("SampleList"), "A page of samples"),
                            "400": _BAD}}),
    Endpoint("GET", "/v1/samples/{sample_id}", get_sample, "get_sample",
             "Read a sample and its calls", SAMPLE_READERS,
             {"parameters": [{"name": "sample_id", "in": "path", "required": True,
                              "schema": {"type": "string", "format": "uuid"}}],
              "responses": {"200": json_answer(ref("SampleDrawn"), "The sample"),
                            "404": _NOT_FOUND}}),
]

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_WINDOW = ("ISO 8601 with a UTC offset, or a date (midnight UTC); on started_at")
_INPUTS: dict[str, Any] = {
    "from": {"type": "string", "format": "date-time",
             "description": f"Calls started at or after: {_WINDOW}"},
    "to": {"type": "string", "format": "date-time",
           "description": f"Calls started before (exclusive; after from): {_WINDOW}"},
    "size": {"type": "integer", "minimum": 1, "maximum": sampling.MAX_SIZE,
             "description": "Calls in all, shared evenly across agents (water-filling); "
                            "exactly one of size and per_agent"},
    "per_agent": {"type": "integer", "minimum": 1, "maximum": sampling.MAX_PER_AGENT,
                  "description": "Calls per agent (all of an agent's calls when fewer); the "
                                 f"total may not exceed {sampling.MAX_SIZE:,}"},
    "service": {"type": "string", "maxLength": sampling.MAX_TEXT},
    "agent_ids": {"type": "array", "minItems": 1, "maxItems": sampling.MAX_AGENT_IDS,
                  "items": {"type": "string", "maxLength": sampling.MAX_TEXT}},
    "min_duration": {"type": "number", "minimum": 0, "description": "Seconds"},
    "exclude_reviewed": {"type": "boolean", "default": True,
                         "description": "Leave out calls that have any review"},
    "exclude_held": {"type": "boolean", "default": True,
                     "description": "Leave out calls under an active legal hold"},
    "seed": {"type": "string", "minLength": 1, "maxLength": sampling.MAX_SEED,
             "description": "Fixes the draw; generated (and returned) when absent"},
}
_SUMMARY: dict[str, Any] = {
    "id": {"type": "string", "format": "uuid"},
    "seed": _STR,
    "inputs": {"type": "object",
               "description": "The normalised inputs, seed included: post them again to "
                              "re-draw"},
    "count": {"type": "integer"},
    "created_by": _STR,
    "created_at": {"type": "string", "format": "date-time"},
}

SCHEMAS: dict[str, Any] = {
    "SampleRequest": {"type": "object", "required": ["from", "to"],
                      "additionalProperties": False, "properties": _INPUTS},
    "SampleSummary": {"type": "object", "required": list(_SUMMARY), "properties": _SUMMARY},
    "SampleDrawn": {
        "type": "object", "required": [*_SUMMARY, "items", "per_agent"],
        "properties": {
            **_SUMMARY,
            "items": {"type": "array", "description": "The calls in draw order: by agent, "
                                                      "then by rank",
                      "items": {"type": "object",
                                "required": ["id", "agent_id", "started_at", "duration",
                                             "service", "status"],
                                "properties": {
                                    "id": {"type": "string", "format": "uuid"},
                                    "agent_id": _NSTR,
                                    "started_at": {"type": "string", "format": "date-time"},
                                    "duration": {"type": ["number", "null"]},
                                    "service": _NSTR,
                                    "status": {**_STR, "description": "active, or how the "
                                                                      "call was destroyed "
                                                                      "since"}}}},
            "per_agent": {"type": "object", "additionalProperties": {"type": "integer"},
                          "description": "Calls drawn per agent id"},
        },
    },
    "SampleList": {
        "type": "object", "required": ["samples", "next_cursor"],
        "properties": {"samples": {"type": "array", "items": ref("SampleSummary")},
                       "next_cursor": {**_NSTR, "description": "null on the last page"}},
    },
}
