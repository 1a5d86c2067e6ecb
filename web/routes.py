"""Every route in one table: method, path, handler, the roles that may call it, and its OpenAPI
description. The auth middleware enforces ``roles`` from here and ``web.openapi`` documents the
same table, so the code and the document cannot drift apart."""

from aiohttp import web

from archive.models import Role
from web.endpoint import READERS, Endpoint
from web.endpoint import json_answer as _json
from web.endpoint import ref as _ref
from web.views import (
    audit,
    exports,
    holds,
    ingest,
    items,
    lifecycle,
    media,
    policies,
    quality,
    rights,
    samples,
    search,
    system,
    waveform,
)

ALL_ROLES = frozenset(Role)
PRODUCERS = frozenset({Role.INGEST, Role.ADMIN})

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

_INGEST_ANSWERS = {
    "200": _json(_ref("Item"), "The same upload arrived before: its item"),
    "201": {**_json(_ref("Item"), "Stored"),
            "headers": {"Location": {"schema": {"type": "string"},
                                     "description": "/v1/items/{id}"}}},
    "400": {"$ref": "#/components/responses/BadRequest"},
    "409": {"$ref": "#/components/responses/Conflict"},
    "413": {"$ref": "#/components/responses/TooLarge"},
    "415": {"$ref": "#/components/responses/UnsupportedMedia"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}
_AUDIO_ANSWERS = {**_INGEST_ANSWERS,
                  "422": {"$ref": "#/components/responses/Undecodable"},
                  "507": {"$ref": "#/components/responses/InsufficientStorage"}}
_METADATA_PARAMS = [
    {"name": "X-Archive-Metadata", "in": "header", "required": False,
     "description": "The metadata as one JSON object (instead of query parameters)",
     "schema": {"type": "string"}},
    *({"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
      for name in ("started_at", "ended_at", "direction", "caller_number", "called_number",
                   "agent_id", "agent_extension", "service", "queue", "tags",
                   "special_category", "pci_redactions")),
]

ENDPOINTS += [
    Endpoint("POST", "/v1/recordings", ingest.post_recording, "post_recording",
             "Push a call recording (multipart)", PRODUCERS,
             {"requestBody": {"required": True, "content": {"multipart/form-data": {
                 "schema": {"type": "object", "required": ["metadata", "audio"],
                            "properties": {"metadata": _ref("RecordingMetadata"),
                                           "audio": {"type": "string",
                                                     "format": "binary"}}},
                 "encoding": {"metadata": {"contentType": "application/json"}}}}},
              "responses": _AUDIO_ANSWERS}),
    Endpoint("PUT", "/v1/recordings/{external_id}", ingest.put_recording, "put_recording",
             "Push a call recording as the raw body", PRODUCERS,
             {"parameters": [{"name": "external_id", "in": "path", "required": True,
                              "schema": {"type": "string", "maxLength": 200}},
                             *_METADATA_PARAMS],
              "requestBody": {"required": True, "content": {"*/*": {
                  "schema": {"type": "string", "format": "binary"}}}},
              "responses": _AUDIO_ANSWERS}),
    Endpoint("POST", "/v1/transcripts", ingest.post_transcript, "post_transcript",
             "Push a webchat transcript (JSON, or plain text)", PRODUCERS,
             {"parameters": [{"name": "X-Archive-Metadata", "in": "header",
                              "required": False, "schema": {"type": "string"},
                              "description": "For text/plain: the metadata as JSON"}],
              "requestBody": {"required": True, "content": {
                  "application/json": {"schema": _ref("Transcript")},
                  "text/plain": {"schema": {"type": "string"}}}},
              "responses": _INGEST_ANSWERS}),
]

# Retrieval, rights, holds and lifecycle: each module lists its own routes and schemas.
VIEW_MODULES = (search, media, waveform, exports, rights, holds, policies, lifecycle, samples,
                quality, audit)
for _module in VIEW_MODULES:
    ENDPOINTS += _module.ENDPOINTS

ENDPOINTS_BY_NAME = {e.name: e for e in ENDPOINTS}


def add_routes(app: web.Application) -> None:
    for e in ENDPOINTS:
        app.router.add_route(e.method, e.path, e.handler, name=e.name)
