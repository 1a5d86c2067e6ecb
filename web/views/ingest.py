"""Producers push calls and chats: multipart POST, raw PUT, transcript JSON or plain text."""

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from archive.errors import (
    BadRequestError,
    FieldError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from archive.service import Actor
from ingest.metadata import ContactMetadata, parse_recording, parse_transcript_metadata
from ingest.service import IngestResult
from ingest.transcripts import Transcript, parse_plain_text, parse_transcript_json
from web.keys import INGESTOR, SETTINGS, principal
from web.views.items import item_json

CHUNK = 64 * 1024
MAX_METADATA = 64 * 1024
METADATA_HEADER = "X-Archive-Metadata"
_MULTI = {"tags", "pci_redactions"}


def _actor(request: web.Request) -> Actor:
    who = principal(request)
    return Actor(who.actor, who.role.value)


def _answer(request: web.Request, result: IngestResult) -> web.Response:
    body = item_json(result.item, [])
    if not result.created:
        return web.json_response(body, status=200)
    return web.json_response(body, status=201,
                             headers={"Location": f"/v1/items/{result.item.id}"})


async def _next_part(reader: MultipartReader) -> Any:
    """The next part, or a 400 naming the body when its part headers are malformed (aiohttp's
    ``BadHttpMessage``, e.g. a control character in a header)."""
    try:
        return await reader.next()
    except BadHttpMessage:
        raise BadRequestError(errors=[FieldError(
            "body", "is not valid multipart/form-data (a part's headers are malformed)")]
        ) from None


def _json_object(raw: bytes | str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(errors=[FieldError(field, f"is not valid JSON: {exc}")]) from None
    if not isinstance(value, dict):
        raise BadRequestError(errors=[FieldError(field, "must be a JSON object")])
    return value


def _metadata_from_request(request: web.Request) -> dict[str, Any]:
    """Metadata of a raw upload: one JSON header, or query parameters."""
    header = request.headers.get(METADATA_HEADER)
    if header is not None:
        return _json_object(header, METADATA_HEADER)
    data: dict[str, Any] = {}
    for name in request.query:
        values = request.query.getall(name)
        data[name] = ",".join(values) if name in _MULTI else values[-1]
    return data


async def _read_limited(chunks: AsyncIterator[bytes], limit: int, what: str) -> bytes:
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise PayloadTooLargeError(f"{what} is larger than the limit of {limit} bytes")
    return bytes(data)


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def post_recording(request: web.Request) -> web.Response:
    """``multipart/form-data`` with a ``metadata`` part (JSON) and then an ``audio`` part."""
    if not request.content_type.startswith("multipart/"):
        raise UnsupportedMediaError(
            "send multipart/form-data with a 'metadata' part and an 'audio' part")
    reader = await request.multipart()
    part = await _next_part(reader)
    if not isinstance(part, BodyPartReader) or part.name != "metadata":
        raise BadRequestError(errors=[FieldError(
            "metadata", "send the 'metadata' part (JSON) first, then the 'audio' part")])
    raw = await _read_limited(_part_chunks(part), MAX_METADATA, "the metadata part")
    metadata = parse_recording(_json_object(raw, "metadata"))
    audio = await _next_part(reader)
    if not isinstance(audio, BodyPartReader) or audio.name != "audio":
        raise BadRequestError(errors=[FieldError("audio", "is required after 'metadata'")])
    result = await request.app[INGESTOR].recording(
        tenant=principal(request).tenant, metadata=metadata, body=_part_chunks(audio),
        actor=_actor(request))
    return _answer(request, result)


async def put_recording(request: web.Request) -> web.Response:
    """The raw audio as the body; metadata in ``X-Archive-Metadata`` or the query string."""
    external_id = request.match_info["external_id"]
    data = _metadata_from_request(request)
    if data.setdefault("external_id", external_id) != external_id:
        raise BadRequestError(errors=[FieldError(
            "external_id", "differs from the external id in the path")])
    metadata = parse_recording(data)
    result = await request.app[INGESTOR].recording(
        tenant=principal(request).tenant, metadata=metadata,
        body=request.content.iter_chunked(CHUNK), actor=_actor(request))
    return _answer(request, result)


async def post_transcript(request: web.Request) -> web.Response:
    """A transcript as JSON (metadata and ``messages``), or as plain text with its metadata in
    ``X-Archive-Metadata`` or the query string."""
    limit = request.app[SETTINGS].max_transcript_bytes
    body = await _read_limited(request.content.iter_chunked(CHUNK), limit, "the transcript")
    if request.content_type == "application/json":
        metadata, transcript = _json_transcript(body)
    elif request.content_type == "text/plain":
        metadata, transcript = _text_transcript(request, body)
    else:
        raise UnsupportedMediaError(
            "send the transcript as application/json, or as text/plain with its metadata in "
            f"{METADATA_HEADER}")
    result = await request.app[INGESTOR].transcript(
        tenant=principal(request).tenant, metadata=metadata, transcript=transcript,
        actor=_actor(request))
    return _answer(request, result)


def _json_transcript(body: bytes) -> tuple[ContactMetadata, Transcript]:
    payload = _json_object(body, "body")
    errors: list[FieldError] = []
    transcript: Transcript | None = None
    metadata: ContactMetadata | None = None
    try:
        transcript, rest = parse_transcript_json(payload)
    except BadRequestError as exc:
        errors += exc.errors
        rest = {k: v for k, v in payload.items() if k != "messages"}
    try:
        metadata = parse_transcript_metadata(rest)
    except BadRequestError as exc:
        errors += exc.errors
    if errors or metadata is None or transcript is None:
        raise BadRequestError("the transcript has errors", errors=errors)
    return metadata, transcript


def _text_transcript(request: web.Request, body: bytes) -> tuple[ContactMetadata, Transcript]:
    metadata = parse_transcript_metadata(_metadata_from_request(request))
    try:
        text = body.decode(request.charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        raise BadRequestError(errors=[FieldError("body", "is not UTF-8 text")]) from None
    return metadata, parse_plain_text(text, default_date=metadata.started_at.date())
