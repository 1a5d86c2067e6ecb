"""Every route in one table: method, path, handler, the roles that may call it, and its OpenAPI
description. The auth middleware enforces ``roles`` from here and ``web.openapi`` documents the
same table, so the code and the document cannot drift apart."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from archive.models import Role
from web.views import items, system

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALL_ROLES = frozenset(Role)
READERS = frozenset({Role.COMPLAINTS, Role.QUALITY, Role.ADMIN})


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    name: str
    summary: str
    roles: frozenset[Role] | None  # None: public, no token needed
    spec: dict[str, Any] = field(default_factory=dict)  # OpenAPI operation fields


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/healthz", system.healthz, "healthz",
             "Check the process is alive", None,
             {"responses": {"200": _json(_ref("Health"), "Alive")}}),
    Endpoint("GET", "/readyz", system.readyz, "readyz",
             "Check the index, store and keyring answer", None,
             {"responses": {"200": _json(_ref("Readiness"), "Ready"),
                            "503": _json(_ref("Readiness"), "A dependency is unavailable")}}),
    Endpoint("GET", "/openapi.json", system.openapi, "openapi",
             "Get this API description", None,
             {"responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")}}),
    Endpoint("GET", "/v1/whoami", system.whoami, "whoami",
             "Show the caller's tenant and role", ALL_ROLES,
             {"responses": {"200": _json(_ref("Identity"), "The token's identity")}}),
    Endpoint("GET", "/v1/items/{item_id}", items.get_item, "get_item",
             "Read an item's metadata, retention and holds", READERS,
             {"parameters": [
                 {"name": "item_id", "in": "path", "required": True,
                  "schema": {"type": "string", "format": "uuid"}},
                 {"name": "X-Purpose", "in": "header", "required": False,
                  "description": "Why the item is read; recorded in the audit log",
                  "schema": {"type": "string", "maxLength": 200}}],
              "responses": {"200": _json(_ref("Item"), "The item"),
                            "404": {"$ref": "#/components/responses/NotFound"}}}),
]

ENDPOINTS_BY_NAME = {e.name: e for e in ENDPOINTS}


def add_routes(app: web.Application) -> None:
    for e in ENDPOINTS:
        app.router.add_route(e.method, e.path, e.handler, name=e.name)
