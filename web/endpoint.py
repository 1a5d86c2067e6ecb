"""One route of the API: what the route table (web/routes.py) lists and OpenAPI documents."""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from archive.errors import BadRequestError, FieldError
from archive.models import Role

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Who may find and read items: complaints staff, quality monitors (calls only) and admins.
READERS = frozenset({Role.COMPLAINTS, Role.QUALITY, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    name: str
    summary: str
    roles: frozenset[Role] | None  # None: public, no token needed
    spec: dict[str, Any] = field(default_factory=dict)  # OpenAPI operation fields


def ref(name: str) -> dict[str, str]:
    """A reference to a schema of the OpenAPI document's components."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_answer(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An OpenAPI response with a JSON body."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_request(schema: str) -> dict[str, Any]:
    """An OpenAPI request body: a JSON object of the named schema."""
    return {"required": True, "content": {"application/json": {"schema": ref(schema)}}}


async def json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty body when ``optional``); 400 naming
    ``body`` otherwise."""
    raw = await request.read()
    if optional and not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(errors=[FieldError("body", f"is not valid JSON: {exc}")]) from None
    if not isinstance(value, dict):
        raise BadRequestError(errors=[FieldError("body", "must be a JSON object")])
    return value
