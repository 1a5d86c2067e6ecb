"""``GET /v1/lifecycle/preview``: what the purge would destroy in the caller's tenant by a date,
what legal holds keep, what is overdue now, and (with ``weeks``) a weekly forecast. Admins only.
"""

from datetime import datetime
from typing import Any

from aiohttp import web

from archive.errors import BadRequestError, FieldError
from archive.models import Channel
from archive.search import parse_query
from lifecycle.preview import MAX_WEEKS, PreviewRow, forecast, preview
from web.endpoint import ADMINS, Endpoint, json_answer, ref
from web.keys import ARCHIVE, DATABASE, principal

_PARAMETERS = ("until", "weeks")


def _until(raw: str) -> datetime:
    """A date (midnight UTC) or ISO 8601 with an offset: the search's ``from`` parser."""
    try:
        moment = parse_query({"from": raw}).from_
    except BadRequestError as exc:
        raise ValueError(exc.errors[0].message if exc.errors else "is not a date") from None
    if moment is None:
        raise ValueError("must not be empty")
    return moment


def _weeks(raw: str) -> int:
    text = raw.strip()
    if text.isdigit() and 1 <= int(text) <= MAX_WEEKS:
        return int(text)
    raise ValueError(f"must be a whole number from 1 to {MAX_WEEKS}")


async def get_preview(request: web.Request) -> web.Response:
    who = principal(request)
    now = request.app[ARCHIVE].clock.now()
    params = request.query
    errors = [FieldError(k, "is not a known parameter")
              for k in sorted(set(params) - set(_PARAMETERS))]
    errors += [FieldError(k, "is given more than once")
               for k in sorted(set(params)) if len(params.getall(k)) > 1]
    until, weeks = now, None
    try:
        if "until" in params:
            until = _until(params["until"])
    except ValueError as exc:
        errors.append(FieldError("until", str(exc)))
    try:
        if "weeks" in params:
            weeks = _weeks(params["weeks"])
    except ValueError as exc:
        errors.append(FieldError("weeks", str(exc)))
    if errors:
        raise BadRequestError("the preview request has errors", errors=errors)
    db = request.app[DATABASE]
    rows = {r.channel: r for r in await preview(db, until=until, now=now, tenant=who.tenant)}
    channels = [rows.get(c.value, PreviewRow(who.tenant, c.value, 0, 0, 0, None)).json()
                for c in Channel]
    answer: dict[str, Any] = {"tenant": who.tenant, "until": until.isoformat(),
                              "now": now.isoformat(), "channels": channels}
    if weeks is not None:
        answer["forecast"] = [w.json() for w in
                              await forecast(db, tenant=who.tenant, now=now, weeks=weeks)]
    return web.json_response(answer)


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_TIME = {"type": "string", "format": "date-time"}
_COUNT = {"type": "integer", "minimum": 0}

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/v1/lifecycle/preview", get_preview, "get_lifecycle_preview",
             "Preview what the purge would destroy by a date, and what holds keep", ADMINS,
             {"parameters": [
                 _param("until", {"type": "string", "format": "date-time"},
                        "By when: ISO 8601 with offset, or a date (midnight UTC); default now"),
                 _param("weeks", {"type": "integer", "minimum": 1, "maximum": MAX_WEEKS},
                        "Also forecast this many weeks ahead, week by week")],
              "responses": {
                  "200": json_answer(ref("LifecyclePreview"), "Counts per channel"),
                  "400": {"$ref": "#/components/responses/BadRequest"}}}),
]

SCHEMAS: dict[str, Any] = {
    "LifecyclePreview": {
        "type": "object", "required": ["tenant", "until", "now", "channels"],
        "properties": {
            "tenant": {"type": "string"}, "until": _TIME, "now": _TIME,
            "channels": {"type": "array", "items": {
                "type": "object",
                "required": ["channel", "would_destroy", "kept_by_holds", "overdue",
                             "oldest_overdue"],
                "properties": {
                    "channel": {"enum": [c.value for c in Channel]},
                    "would_destroy": {**_COUNT, "description":
                                      "Active, window ended by until, under no active hold"},
                    "kept_by_holds": {**_COUNT, "description":
                                      "Active, window ended by until, kept only by holds"},
                    "overdue": {**_COUNT, "description":
                                "Window ended by now, unheld: the next pass's work"},
                    "oldest_overdue": {"type": ["string", "null"], "format": "date-time",
                                       "description": "The earliest retain_until overdue"},
                }}},
            "forecast": {"type": "array", "description": "With weeks=N: one entry a week",
                         "items": {"type": "object", "properties": {
                             "start": _TIME, "end": _TIME, "would_destroy": _COUNT,
                             "kept_by_holds": _COUNT}}},
        },
    },
}
