"""Evaluation forms, reviews of calls and the quality summary over HTTP (archive/reviews.py
does the work). Forms are written by admins and read by quality monitors and admins; reviews
and the summary are for quality monitors and admins. Reviews are of calls only: a chat is
refused (403), as every quality read of a chat is; another tenant's item is a missing one
(404)."""

from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from archive import reviews
from archive.errors import BadRequestError, FieldError, ForbiddenError, NotFoundError
from archive.models import Channel, Item, Role
from archive.search import parse_query
from web.endpoint import ADMINS, Endpoint, json_answer, json_body, json_request, ref
from web.keys import ARCHIVE, DATABASE, principal
from web.views.items import readable_item, record

MONITORS = frozenset({Role.QUALITY, Role.ADMIN})


# -- forms -------------------------------------------------------------------------------------

def _form_location(name: str, version: int) -> str:
    return f"/v1/forms/{quote(name, safe='')}/versions/{version}"


async def post_form(request: web.Request) -> web.Response:
    who = principal(request)
    form = reviews.parse_form(await json_body(request))
    row = await reviews.save_form(request.app[DATABASE], tenant=who.tenant, actor=who.actor,
                                  role=who.role.value, now=request.app[ARCHIVE].clock.now(),
                                  form=form)
    return web.json_response(reviews.form_json(row), status=201,
                             headers={"Location": _form_location(row.name, row.version)})


async def list_forms(request: web.Request) -> web.Response:
    forms = await reviews.current_forms(request.app[DATABASE], principal(request).tenant)
    return web.json_response({"forms": [reviews.form_json(f) for f in forms]})


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if reviews.name_errors(name):
        raise NotFoundError(f"no form {name!r}")
    return name


async def get_form(request: web.Request) -> web.Response:
    versions = await reviews.form_versions(request.app[DATABASE], principal(request).tenant,
                                           _name(request))
    return web.json_response({
        **reviews.form_json(versions[-1]),
        "versions": [{"version": f.version, "id": str(f.id), "created_by": f.created_by,
                      "created_at": f.created_at.isoformat()} for f in versions]})


async def get_form_version(request: web.Request) -> web.Response:
    name, raw = _name(request), request.match_info["version"]
    if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000:
        raise NotFoundError(f"no version {raw!r} of form {name!r}")
    form = await reviews.form_version(request.app[DATABASE], principal(request).tenant, name,
                                      int(raw))
    return web.json_response(reviews.form_json(form))


# -- reviews -----------------------------------------------------------------------------------

async def review_call(request: web.Request) -> Item:
    """The path's item, if the caller may read it (404 for another tenant's, 403 for a chat
    to a quality monitor) and it is a call (reviews are of calls only: 403 for an admin)."""
    item = await readable_item(request)
    if item.channel != Channel.CALL.value:
        raise ForbiddenError("reviews are of calls only")
    return item


def _review_args(request: web.Request) -> dict[str, Any]:
    who = principal(request)
    return {"tenant": who.tenant, "actor": who.actor, "role": who.role.value,
            "now": request.app[ARCHIVE].clock.now()}


async def post_review(request: web.Request) -> web.Response:
    item = await review_call(request)
    reviews.check_reviewable(item)
    body = await json_body(request)
    view = await reviews.create_review(request.app[DATABASE], item_id=item.id, body=body,
                                       **_review_args(request))
    return web.json_response(view.json(), status=201,
                             headers={"Location": f"/v1/items/{item.id}/reviews/mine"})


async def put_my_review(request: web.Request) -> web.Response:
    item = await review_call(request)
    reviews.check_reviewable(item)
    body = await json_body(request)
    view = await reviews.edit_review(request.app[DATABASE], item_id=item.id, body=body,
                                     **_review_args(request))
    return web.json_response(view.json())


async def list_reviews(request: web.Request) -> web.Response:
    item = await review_call(request)
    found = await reviews.item_reviews(request.app[DATABASE], item.tenant, item.id)
    await record(request, "review.list", item.id, {"count": len(found)})
    return web.json_response({"item_id": str(item.id), "reviews": [r.json() for r in found]})


async def my_history(request: web.Request) -> web.Response:
    item = await review_call(request)
    history = await reviews.my_history(request.app[DATABASE], item.tenant,
                                       principal(request).actor, item.id)
    await record(request, "review.history", item.id,
                 {"review_id": str(history.review.id), "versions": len(history.versions)})
    return web.json_response(history.json())


# -- summary -----------------------------------------------------------------------------------

_SUMMARY_PARAMS = ("from", "to", "service")


async def summarise(request: web.Request, *, start: datetime, end: datetime,
                    service: str | None) -> reviews.Summary:
    """The tenant's quality summary, audited as ``quality.summary`` (API and page alike)."""
    result = await reviews.summary(request.app[DATABASE], principal(request).tenant,
                                   start=start, end=end, service=service)
    await record(request, "quality.summary", None, {
        "agents": len(result.agents), "calls": sum(a.calls_handled for a in result.agents),
        "reviews": sum(a.reviews for a in result.agents),
        "calibration": len(result.calibration)})
    return result


async def get_summary(request: web.Request) -> web.Response:
    params = request.query
    errors = [FieldError(n, "is not a known parameter") for n in sorted(set(params))
              if n not in _SUMMARY_PARAMS]
    errors += [FieldError(n, "is given more than once") for n in sorted(set(params))
               if n in _SUMMARY_PARAMS and len(params.getall(n)) > 1]
    errors += [FieldError(n, "is required") for n in ("from", "to")
               if not params.get(n, "").strip()]
    query = None
    try:
        query = parse_query({n: params[n] for n in _SUMMARY_PARAMS if n in params})
    except BadRequestError as exc:
        named = {e.field for e in errors}
        errors += [e for e in exc.errors if e.field not in named]
    if errors or query is None or query.from_ is None or query.to is None:
        raise BadRequestError("the summary parameters have errors", errors=errors)
    result = await summarise(request, start=query.from_, end=query.to, service=query.service)
    return web.json_response(result.json())


# -- OpenAPI -----------------------------------------------------------------------------------

_BAD = {"$ref": "#/components/responses/BadRequest"}
_NOT_FOUND = {"$ref": "#/components/responses/NotFound"}
_PROBLEM = {"application/problem+json": {"schema": ref("Problem")}}
_ITEM = {"name": "item_id", "in": "path", "required": True,
         "schema": {"type": "string", "format": "uuid"}}
_NAME = {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "minLength": 1, "maxLength": reviews.MAX_NAME}}
_CHATS = {"description": "A chat (reviews are of calls only), or a role that may not",
          "content": _PROBLEM}


def _q(name: str, schema: dict[str, Any], description: str, *,
       required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/v1/forms", post_form, "post_form",
             "Save an evaluation form: version 1 of a new name, or the next version", ADMINS,
             {"requestBody": json_request("FormRequest"),
              "responses": {
                  "201": {**json_answer(ref("Form"), "The version written"),
                          "headers": {"Location": {"schema": {"type": "string"},
                                      "description": "/v1/forms/{name}/versions/{n}"}}},
                  "400": _BAD,
                  "409": {"description": "Saved by someone else at the same moment",
                          "content": _PROBLEM}}}),
    Endpoint("GET", "/v1/forms", list_forms, "list_forms",
             "List the current version of each evaluation form", MONITORS,
             {"responses": {"200": json_answer(ref("FormList"), "Current forms, by name")}}),
    Endpoint("GET", "/v1/forms/{name}", get_form, "get_form",
             "Read the current version of a form, with the list of its versions", MONITORS,
             {"parameters": [_NAME],
              "responses": {"200": json_answer(ref("FormDetail"), "The current version"),
                            "404": _NOT_FOUND}}),
    Endpoint("GET", "/v1/forms/{name}/versions/{version}", get_form_version,
             "get_form_version", "Read one version of a form", MONITORS,
             {"parameters": [_NAME, {"name": "version", "in": "path", "required": True,
                                     "schema": {"type": "integer", "minimum": 1}}],
              "responses": {"200": json_answer(ref("Form"), "That version"),
                            "404": _NOT_FOUND}}),
    Endpoint("POST", "/v1/items/{item_id}/reviews", post_review, "post_review",
             "Review a call against a form (one review per reviewer per item)", MONITORS,
             {"parameters": [_ITEM], "requestBody": json_request("ReviewRequest"),
              "responses": {
                  "201": {**json_answer(ref("Review"), "The review"),
                          "headers": {"Location": {"schema": {"type": "string"},
                                      "description": "/v1/items/{id}/reviews/mine"}}},
                  "400": _BAD, "403": _CHATS, "404": _NOT_FOUND,
                  "409": {"description": "The caller already reviewed this call (edit it with "
                                         "PUT .../reviews/mine), or the call was destroyed",
                          "content": _PROBLEM}}}),
    Endpoint("PUT", "/v1/items/{item_id}/reviews/mine", put_my_review, "put_my_review",
             "Edit the caller's own review of a call (the version replaced is kept)", MONITORS,
             {"parameters": [_ITEM], "requestBody": json_request("ReviewEdit"),
              "responses": {"200": json_answer(ref("Review"), "The review as edited"),
                            "400": _BAD, "403": _CHATS,
                            "404": {"description": "No such call, or the caller has no "
                                                   "review of it", "content": _PROBLEM},
                            "409": {"description": "The call was destroyed",
                                    "content": _PROBLEM}}}),
    Endpoint("GET", "/v1/items/{item_id}/reviews", list_reviews, "list_reviews",
             "List the reviews of a call", MONITORS,
             {"parameters": [_ITEM],
              "responses": {"200": json_answer(ref("ReviewList"), "Its reviews, oldest first"),
                            "403": _CHATS, "404": _NOT_FOUND}}),
    Endpoint("GET", "/v1/items/{item_id}/reviews/mine/history", my_history, "my_review_history",
             "Every version of the caller's own review of a call", MONITORS,
             {"parameters": [_ITEM],
              "responses": {"200": json_answer(ref("ReviewHistory"), "Oldest first"),
                            "403": _CHATS, "404": _NOT_FOUND}}),
    Endpoint("GET", "/v1/quality/summary", get_summary, "quality_summary",
             "Per-agent quality figures and calibration over a time range", MONITORS,
             {"parameters": [
                 _q("from", {"type": "string", "format": "date-time"},
                    "started_at at or after: ISO 8601 with offset, or a date (midnight UTC)",
                    required=True),
                 _q("to", {"type": "string", "format": "date-time"},
                    "started_at before (exclusive): ISO 8601 with offset, or a date",
                    required=True),
                 _q("service", {"type": "string", "maxLength": 100}, "Only this service")],
              "responses": {"200": json_answer(ref("QualitySummary"), "The figures"),
                            "400": _BAD}}),
]

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_NNUM = {"type": ["number", "null"]}
_CRITERION = {
    "type": "object", "required": ["key", "label", "weight", "max_score"],
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string", "pattern": "^[a-z0-9_-]{1,40}$",
                "description": "Unique within the form; the key of its score in a review"},
        "label": {"type": "string", "minLength": 1, "maxLength": reviews.MAX_LABEL},
        "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": reviews.MAX_WEIGHT},
        "max_score": {"type": "integer", "minimum": 1, "maximum": reviews.MAX_MAX_SCORE},
    },
}
_FORM_PROPERTIES: dict[str, Any] = {
    "id": {**_UUID, "description": "The id of this version (a review's form_id)"},
    "name": _STR, "version": {"type": "integer", "minimum": 1},
    "criteria": {"type": "array", "items": _CRITERION},
    "created_by": _STR, "created_at": _TIME,
}
_FORM_REF = {"type": "object", "required": ["id", "name", "version"],
             "properties": {"id": _UUID, "name": _STR, "version": {"type": "integer"}}}
_SCORES = {"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
           "description": "Criterion key to score, 0 to the criterion's max_score; every "
                          "criterion of the form"}
_REVIEW_FIELDS: dict[str, Any] = {
    "form": {"type": "string", "description": "A form's name: its current version is used"},
    "form_id": {**_UUID, "description": "A form version's id (instead of form)"},
    "scores": _SCORES,
    "notes": {"type": ["string", "null"], "maxLength": reviews.MAX_NOTES,
              "description": "Never written to the audit log"},
    "training_need": {"type": "boolean", "default": False},
}
_REVIEW_PROPERTIES: dict[str, Any] = {
    "id": _UUID, "item_id": _UUID,
    "reviewer": {**_STR, "description": "The token that wrote it (token:<id>)"},
    "form": _FORM_REF, "scores": _SCORES,
    "score": {"type": "number", "minimum": 0, "maximum": 100,
              "description": "100 * sum(weight * score / max_score) / sum(weight), "
                             "to 2 decimals"},
    "notes": _NSTR, "training_need": {"type": "boolean"},
    "version": {"type": "integer", "minimum": 1}, "created_at": _TIME, "updated_at": _TIME,
}

SCHEMAS: dict[str, Any] = {
    "FormRequest": {
        "type": "object", "required": ["name", "criteria"], "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": reviews.MAX_NAME,
                     "description": "Printable, without /; saving a name again writes its "
                                    "next version"},
            "criteria": {"type": "array", "minItems": 1, "maxItems": reviews.MAX_CRITERIA,
                         "items": _CRITERION},
        },
    },
    "Form": {"type": "object", "required": list(_FORM_PROPERTIES),
             "properties": _FORM_PROPERTIES},
    "FormList": {"type": "object", "required": ["forms"],
                 "properties": {"forms": {"type": "array", "items": ref("Form")}}},
    "FormDetail": {
        "type": "object", "required": [*_FORM_PROPERTIES, "versions"],
        "properties": {**_FORM_PROPERTIES, "versions": {"type": "array", "items": {
            "type": "object", "required": ["version", "id", "created_by", "created_at"],
            "properties": {"version": {"type": "integer"}, "id": _UUID,
                           "created_by": _STR, "created_at": _TIME}}}},
    },
    "ReviewRequest": {
        "type": "object", "required": ["scores"], "additionalProperties": False,
        "description": "Exactly one of form and form_id.",
        "properties": _REVIEW_FIELDS,
    },
    "ReviewEdit": {
        "type": "object", "additionalProperties": False,
        "description": "Fields left out keep their values (notes: null clears them). A "
                       "changed form (form or form_id) needs scores for it.",
        "properties": _REVIEW_FIELDS,
    },
    "Review": {"type": "object", "required": list(_REVIEW_PROPERTIES),
               "properties": _REVIEW_PROPERTIES},
    "ReviewList": {"type": "object", "required": ["item_id", "reviews"],
                   "properties": {"item_id": _UUID,
                                  "reviews": {"type": "array", "items": ref("Review")}}},
    "ReviewHistory": {
        "type": "object", "required": ["id", "item_id", "reviewer", "versions"],
        "properties": {"id": _UUID, "item_id": _UUID, "reviewer": _STR, "versions": {
            "type": "array", "description": "Oldest first; the last is the current version",
            "items": {"type": "object", "properties": {
                "version": {"type": "integer"}, "form": _FORM_REF, "scores": _SCORES,
                "score": {"type": "number"}, "notes": _NSTR,
                "training_need": {"type": "boolean"},
                "written_at": {**_TIME, "description": "When this version was written"}}}}},
    },
    "QualitySummary": {
        "type": "object",
        "required": ["from", "to", "service", "agents", "calibration", "calibration_truncated"],
        "properties": {
            "from": _TIME, "to": _TIME, "service": _NSTR,
            "agents": {"type": "array", "description": "Agents with live calls in range, by id",
                       "items": {"type": "object", "properties": {
                           "agent_id": _STR,
                           "calls_handled": {"type": "integer"},
                           "calls_reviewed": {"type": "integer",
                                              "description": "Calls with at least one review"},
                           "reviews": {"type": "integer"},
                           "mean_score": {**_NNUM, "description": "Mean of review scores"},
                           "spread": {**_NNUM, "description": "Population standard deviation "
                                                              "of review scores; null below 2"},
                           "training_needs": {"type": "integer",
                                              "description": "Reviews flagging one"}}}},
            "calibration": {
                "type": "array",
                "description": f"Calls in range reviewed by two or more monitors, by start "
                               f"(at most {reviews.MAX_CALIBRATION})",
                "items": {"type": "object", "properties": {
                    "item_id": _UUID, "agent_id": _STR, "started_at": _TIME,
                    "reviews": {"type": "array", "items": {"type": "object", "properties": {
                        "reviewer": _STR, "score": {"type": "number"}, "form_id": _UUID}}},
                    "range": {"type": "number", "description": "max - min of the scores"},
                    "stddev": {"type": "number",
                               "description": "Population standard deviation"}}}},
            "calibration_truncated": {"type": "boolean"},
        },
    },
}
