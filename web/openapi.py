"""The OpenAPI 3.1 document, built from the route table (web/routes.py) and the schemas here."""

from functools import cache
from typing import Any

from web.routes import ENDPOINTS, VIEW_MODULES

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_NTIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "An error (RFC 9457). 'errors' names every bad field.",
        "required": ["type", "title", "status", "detail", "request_id"],
        "properties": {
            "type": _STR, "title": _STR, "status": {"type": "integer"}, "detail": _STR,
            "request_id": _STR,
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["field", "message"],
                "properties": {"field": _STR, "message": _STR}}},
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": _STR}},
    "Readiness": {
        "type": "object", "required": ["status", "checks"],
        "properties": {
            "status": {"enum": ["ready", "unavailable"]},
            "checks": {"type": "object", "properties": {
                "index": _STR, "store": _STR, "keyring": _STR}},
        },
    },
    "Identity": {
        "type": "object", "required": ["tenant", "role", "token_id"],
        "properties": {"tenant": _STR, "role": _STR, "token_id": {"type": "string",
                                                                 "format": "uuid"}},
    },
    "RecordingMetadata": {
        "type": "object", "required": ["external_id", "started_at"],
        "additionalProperties": False,
        "properties": {
            "external_id": {"type": "string", "maxLength": 200,
                            "description": "The source system's call id, unique per tenant"},
            "started_at": {"type": "string", "format": "date-time",
                           "description": "ISO 8601 with a UTC offset"},
            "ended_at": {"type": "string", "format": "date-time"},
            "direction": {"enum": ["inbound", "outbound", "internal"]},
            "caller_number": {"type": "string",
                              "description": "Any UK or international notation; stored E.164"},
            "called_number": {"type": "string"},
            "agent_id": {"type": "string", "maxLength": 100},
            "agent_extension": {"type": "string", "maxLength": 32},
            "service": {"type": "string", "maxLength": 100},
            "queue": {"type": "string", "maxLength": 100},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 50},
                     "maxItems": 50},
            "special_category": {"type": "boolean"},
            "pci_redactions": {
                "type": "array", "maxItems": 200,
                "description": "Card-payment ranges, in seconds, silenced before storage",
                "items": {"type": "object", "required": ["start", "end"],
                          "properties": {"start": {"type": "number", "minimum": 0},
                                         "end": {"type": "number"}}}},
        },
    },
    "Transcript": {
        "type": "object", "required": ["external_id", "started_at", "messages"],
        "properties": {
            "external_id": {"type": "string", "maxLength": 200},
            "started_at": {"type": "string", "format": "date-time"},
            "ended_at": {"type": "string", "format": "date-time"},
            "customer": {"type": "object", "additionalProperties": False, "properties": {
                "name": {"type": "string", "maxLength": 200},
                "email": {"type": "string", "format": "email"},
                "postcode": {"type": "string", "description": "A UK postcode"}}},
            "agent_id": {"type": "string"},
            "service": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "special_category": {"type": "boolean"},
            "messages": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["at", "from", "text"],
                "additionalProperties": False,
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "from": {"enum": ["customer", "agent", "bot", "system"]},
                    "name": {"type": "string"},
                    "text": {"type": "string"}}}},
        },
    },
    "Item": {
        "type": "object",
        "required": ["id", "tenant", "channel", "external_id", "status", "started_at",
                     "media", "retention", "holds"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "tenant": _STR,
            "channel": {"enum": ["call", "chat"]},
            "external_id": _STR,
            "status": {"enum": ["active", "purged", "erased", "anonymised"]},
            "started_at": {"type": "string", "format": "date-time"},
            "ended_at": _NTIME,
            "duration": {"type": ["number", "null"]},
            "direction": _NSTR,
            "caller_number": {**_NSTR, "description": "E.164"},
            "called_number": {**_NSTR, "description": "E.164"},
            "agent_id": _NSTR, "agent_extension": _NSTR, "service": _NSTR, "queue": _NSTR,
            "customer": {"type": "object", "properties": {
                "name": _NSTR, "email": _NSTR, "postcode": _NSTR}},
            "special_category": {"type": "boolean"},
            "tags": {"type": "array", "items": _STR},
            "media": {"type": "object", "properties": {
                "type": _NSTR, "size": {"type": ["integer", "null"]}, "sha256": _NSTR}},
            "retention": {"type": "object", "properties": {
                "retain_until": _NTIME, "basis": {"type": ["object", "null"]}}},
            "holds": {"type": "array", "items": _STR,
                      "description": "Case references of the active holds"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


@cache
def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        op: dict[str, Any] = {"operationId": e.name, "summary": e.summary, **e.spec}
        responses = dict(op.get("responses", {}))
        if e.roles is None:
            op["security"] = []
        else:
            op["x-roles"] = sorted(r.value for r in e.roles)
            op["description"] = (str(op.get("description", "")) + " Roles: "
                                 + ", ".join(op["x-roles"]) + ".").strip()
            responses.setdefault("401", {"$ref": "#/components/responses/Unauthorized"})
            responses.setdefault("403", {"$ref": "#/components/responses/Forbidden"})
        op["responses"] = responses
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Contact-centre archive API", "version": "1",
                 "description": "Call recordings and webchat transcripts: ingest, retrieval, "
                                "legal holds and lifecycle. Errors are application/problem+json."},
        "servers": [{"url": "/"}],
        # Either scheme: a token as a bearer token, or as the password of HTTP Basic (for
        # systems that can only put credentials in a URL; see web/auth.py).
        "security": [{"bearer": []}, {"basic": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "A token from 'archive tokens create'"},
                "basic": {"type": "http", "scheme": "basic",
                          "description": "The same token as the password, with any user "
                                         "name: for telephony systems that can only put "
                                         "credentials in a URL (https://ingest:TOKEN@host/...)"},
            },
            "schemas": {**SCHEMAS, **{name: schema for module in VIEW_MODULES
                                      for name, schema in module.SCHEMAS.items()}},
            "responses": {
                "Unauthorized": _problem("No valid token"),
                "Forbidden": _problem("The token's role may not do this"),
                "NotFound": _problem("No such resource for this tenant"),
                "BadRequest": _problem("Invalid input; 'errors' names every bad field"),
                "Conflict": _problem("The external id already holds different content"),
                "TooLarge": _problem("The upload is larger than the configured limit"),
                "UnsupportedMedia": _problem("Not audio, or not a supported content type"),
                "Undecodable": _problem("Audio that cannot be decoded (corrupt, truncated)"),
                "Unavailable": _problem("A dependency is unavailable, or a concurrent "
                                        "upload of the same id failed; retry"),
                "InsufficientStorage": _problem("The object store is full"),
            },
        },
    }
