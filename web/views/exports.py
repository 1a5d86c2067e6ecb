"""Evidence bundles: ask for one, read its record, download the signed ZIP, get the public key.

A bundle is streamed as it is built (chunked; nothing is buffered whole or written to disk). A
failure half way (the store becomes unavailable, an object fails its hash check) cuts the
connection without the final chunk, so the client sees a broken download, never a ZIP that
looks complete.
"""

import asyncio
import logging
import uuid
import weakref
from typing import Any

from aiohttp import web

from archive import exports, signing
from archive.errors import BadRequestError, FieldError, ForbiddenError, NotFoundError
from archive.ids import parse_uuid
from archive.models import Export, Role
from archive.service import Actor
from archive.signing import Signer
from ingest.transcripts import Transcript
from web.endpoint import Endpoint, json_answer, json_body, ref
from web.keys import ARCHIVE, SETTINGS, principal
from web.views.items import purpose

log = logging.getLogger(__name__)

MAKERS = frozenset({Role.COMPLAINTS, Role.ADMIN})
# The privacy team reads the subject-access exports it makes (through its own route).
DOWNLOADERS = frozenset({Role.COMPLAINTS, Role.ADMIN, Role.PRIVACY})
_FIELDS = ("item_ids", "case_ref", "query", "purpose")

# One signer per application, loaded (or created) on first use: web/app.py knows nothing of it.
_signers: "weakref.WeakKeyDictionary[web.Application, Signer]" = weakref.WeakKeyDictionary()


async def signer_for(app: web.Application) -> Signer:
    signer = _signers.get(app)
    if signer is None:
        signer = await asyncio.to_thread(signing.load_or_create,
                                         signing.key_path(app[SETTINGS]))
        _signers[app] = signer
    return signer


def _actor(request: web.Request) -> Actor:
    who = principal(request)
    return Actor(who.actor, who.role.value)


def _chat_text(data: bytes) -> str:
    return Transcript.from_json_bytes(data).to_text()


def _download(export: Export) -> str:
    return f"/v1/exports/{export.id}/bundle.zip"



def _parse_request(body: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``create_export`` from the body; every bad field named at once."""
    errors = [FieldError(k, "is not a known field") for k in sorted(set(body) - set(_FIELDS))]
    args: dict[str, Any] = {"purpose": "", "item_ids": None, "case_ref": None, "query": None}
    placeholders: dict[str, Any] = {}  # stand-ins for present but malformed fields
    raw_purpose = body.get("purpose")
    if isinstance(raw_purpose, str):
        args["purpose"] = raw_purpose
    elif raw_purpose is not None:
        errors.append(FieldError("purpose", "must be a string"))
        placeholders["purpose"] = "x"
    raw_ids = body.get("item_ids")
    if isinstance(raw_ids, list):
        ids = [parse_uuid(v) if isinstance(v, str) else None for v in raw_ids]
        errors += [FieldError(f"item_ids[{n}]", "is not an item id (a UUID)")
                   for n, v in enumerate(ids) if v is None]
        args["item_ids"] = [v for v in ids if v is not None]
    elif raw_ids is not None:
        errors.append(FieldError("item_ids", "must be a list of item ids"))
        placeholders["item_ids"] = [uuid.UUID(int=0)]
    raw_case = body.get("case_ref")
    if isinstance(raw_case, str):
        args["case_ref"] = raw_case
    elif raw_case is not None:
        errors.append(FieldError("case_ref", "must be a string"))
        placeholders["case_ref"] = "x"
    raw_query = body.get("query")
    if isinstance(raw_query, dict):
        args["query"] = raw_query
    elif raw_query is not None:
        errors.append(FieldError("query", "must be an object of search filters"))
        placeholders["query"] = {}
    if errors:
        named = {e.field.split("[")[0] for e in errors}
        checked = {**args, **placeholders}
        errors += [e for e in exports.check_request(
            checked["purpose"].strip(), checked["item_ids"], checked["case_ref"],
            checked["query"]) if e.field not in named]
        raise BadRequestError("the export request has errors", errors=errors)
    return args


async def post_export(request: web.Request) -> web.Response:
    args = _parse_request(await json_body(request))
    export = await exports.create_export(
        request.app[ARCHIVE], tenant=principal(request).tenant, actor=_actor(request),
        kind=exports.EVIDENCE, **args)
    return web.json_response(
        {"id": str(export.id), "kind": export.kind, "item_count": len(export.item_ids),
         "download": _download(export), "created_at": export.created_at.isoformat()},
        status=201, headers={"Location": f"/v1/exports/{export.id}"})


async def readable_export(request: web.Request) -> Export:
    who = principal(request)
    export_id = parse_uuid(request.match_info["export_id"])
    if export_id is None:
        raise NotFoundError(f"no export {request.match_info['export_id']!r}")
    export = await exports.get_export(request.app[ARCHIVE], who.tenant, export_id)
    if who.role == Role.PRIVACY and export.kind != exports.SUBJECT_ACCESS:
        raise ForbiddenError("the privacy team may read subject-access exports only")
    return export


async def get_export(request: web.Request) -> web.Response:
    export = await readable_export(request)
    return web.json_response({**exports.export_json(export), "download": _download(export)})


async def get_bundle(request: web.Request) -> web.StreamResponse:
    export = await readable_export(request)
    archive = request.app[ARCHIVE]
    signer = await signer_for(request.app)
    chunks = exports.bundle(archive, export, signer, chat_text=_chat_text)
    first = await anext(chunks)  # errors before the first byte are still problem answers
    await exports.record_download(archive, export, _actor(request), purpose(request))
    response = web.StreamResponse(headers={
        "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="export-{export.id}.zip"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    })
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # noqa: BLE001  (any failure must cut the stream)
        # The type only: messages may name keys or hosts. Cutting the connection keeps the
        # final chunk from being sent, so the client cannot take the ZIP for complete.
        log.error("export %s aborted mid-stream: %s", export.id,  # noqa: TRY400
                  type(exc).__name__)
        raise ConnectionResetError("the bundle could not be completed") from None
    await response.write_eof()
    return response


async def get_signing_key(request: web.Request) -> web.Response:
    signer = await signer_for(request.app)
    return web.json_response({"algorithm": signing.ALGORITHM, "key_id": signer.key_id,
                              "public_key": signer.public_key_b64})


_ID = {"name": "export_id", "in": "path", "required": True,
       "schema": {"type": "string", "format": "uuid"}}
_NOT_FOUND = {"$ref": "#/components/responses/NotFound"}

ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/v1/exports", post_export, "post_export",
             "Make an evidence bundle of items chosen by id, case reference or search",
             MAKERS,
             {"requestBody": {"required": True, "content": {
                 "application/json": {"schema": ref("ExportRequest")}}},
              "responses": {
                  "201": {**json_answer(ref("ExportCreated"), "The export was recorded"),
                          "headers": {"Location": {"schema": {"type": "string"},
                                                   "description": "/v1/exports/{id}"}}},
                  "400": {"$ref": "#/components/responses/BadRequest"}}}),
    Endpoint("GET", "/v1/exports/{export_id}", get_export, "get_export",
             "Read an export's record", DOWNLOADERS,
             {"parameters": [_ID],
              "responses": {"200": json_answer(ref("Export"), "The export"),
                            "404": _NOT_FOUND}}),
    Endpoint("GET", "/v1/exports/{export_id}/bundle.zip", get_bundle, "get_bundle",
             "Download an export's signed ZIP bundle", DOWNLOADERS,
             {"parameters": [
                 _ID,
                 {"name": "X-Purpose", "in": "header", "required": False,
                  "description": "Why the bundle is downloaded; recorded in the audit log",
                  "schema": {"type": "string", "maxLength": 200}}],
              "responses": {
                  "200": {"description": "The bundle, streamed (chunked). See the export "
                                         "docs for its layout; check it with "
                                         "'archive verify-bundle'.",
                          "content": {"application/zip": {
                              "schema": {"type": "string", "format": "binary"}}}},
                  "404": _NOT_FOUND}}),
    Endpoint("GET", "/v1/signing-key", get_signing_key, "get_signing_key",
             "Get the public key that signs bundle manifests", None,
             {"responses": {"200": json_answer(ref("SigningKey"), "The public key")}}),
]

_STR = {"type": "string"}
_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "ExportRequest": {
        "type": "object", "required": ["purpose"], "additionalProperties": False,
        "description": "Exactly one of item_ids, case_ref or query, and a purpose.",
        "properties": {
            "item_ids": {"type": "array", "items": _UUID, "minItems": 1,
                         "maxItems": exports.MAX_ITEMS},
            "case_ref": {"type": "string", "maxLength": exports.MAX_CASE_REF,
                         "description": "The items under active legal holds with this case "
                                        "reference"},
            "query": {"type": "object",
                      "description": "Search filters, as the query parameters of "
                                     "GET /v1/items (without limit and cursor)"},
            "purpose": {"type": "string", "minLength": 1, "maxLength": exports.MAX_PURPOSE,
                        "description": "Why the bundle is made; stated in its manifest"},
        },
    },
    "ExportCreated": {
        "type": "object", "required": ["id", "kind", "item_count", "download", "created_at"],
        "properties": {"id": _UUID, "kind": {"enum": list(exports.KINDS)},
                       "item_count": {"type": "integer"}, "download": _STR,
                       "created_at": _TIME},
    },
    "Export": {
        "type": "object",
        "required": ["id", "tenant", "kind", "purpose", "item_ids", "item_count",
                     "requested_by", "role", "created_at", "download"],
        "properties": {
            "id": _UUID, "tenant": _STR, "kind": {"enum": list(exports.KINDS)},
            "purpose": _STR, "case_ref": {"type": ["string", "null"]},
            "query": {"type": ["object", "null"]},
            "item_ids": {"type": "array", "items": _UUID},
            "item_count": {"type": "integer"}, "requested_by": _STR, "role": _STR,
            "created_at": _TIME, "download": _STR,
        },
    },
    "SigningKey": {
        "type": "object", "required": ["algorithm", "key_id", "public_key"],
        "properties": {
            "algorithm": {"const": signing.ALGORITHM},
            "key_id": {"type": "string", "description": "First 16 hex digits of the SHA-256 "
                                                        "of the raw public key"},
            "public_key": {"type": "string", "description": "The raw 32-byte key, base64"},
        },
    },
}
