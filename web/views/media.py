"""``GET /v1/items/{item_id}/media``: play or download an item's content.

Calls stream their decrypted audio; only the segments holding the requested bytes are fetched and
decrypted, and chunks are written as they are decrypted (nothing is held whole). Chats answer
their stored transcript (canonical JSON), or it rendered as text or as a self-contained HTML page.

HTTP semantics (RFC 9110), for a call's audio and a chat's JSON (the stored bytes):

- ``ETag`` is strong: the quoted SHA-256 of the plaintext served. ``If-None-Match`` matching it
  (weak comparison, or ``*``) answers ``304`` with no body (and no audit event: nothing is shown).
- ``Range: bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` answer ``206`` with ``Content-Range``; a
  range that starts at or past the end (or ``bytes=-0``) answers ``416`` with
  ``Content-Range: bytes */size``.
- A ``Range`` header that does not parse, names another unit, or lists several ranges is ignored:
  the whole content is answered (``200``), as RFC 9110 section 14.2 allows. Browsers and players
  only ever send one range.
- ``If-Range`` that is not exactly the current (strong) ETag makes the ``Range`` ignored: ``200``
  with the whole content. No ``Last-Modified`` is sent, so an HTTP date never matches.

The text and HTML forms of a chat are rendered per request: they carry no ETag and ignore ranges
(``Accept-Ranges: none``).

Audit: a call's play counts once per session: ``item.play`` is recorded only when the same actor
has no ``item.play`` of the item in the last 30 minutes, so a browser's seeks (many range
requests) make one event. ``?download=1`` records ``item.download`` on every request (instead of
``item.play`` or ``item.view``). A chat read records ``item.view`` with its ``format``. Events are
written after the first chunk was decrypted and before any byte is sent: nothing is served that
the log does not show, and a read that fails before the answer starts records nothing.
"""

import asyncio
import html
import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlmodel import col, select

from archive import audit
from archive.errors import ArchiveError, BadRequestError, FieldError, NotFoundError
from archive.models import AuditEvent, AuditHead, Channel, Item, ItemStatus
from archive.service import MEDIA
from ingest.transcripts import Transcript
from storage.base import read_all
from web.endpoint import READERS, Endpoint, ref
from web.keys import ARCHIVE, DATABASE, REQUEST_ID, principal
from web.views.items import purpose, readable_item, record

log = logging.getLogger(__name__)

PLAY_SESSION = timedelta(minutes=30)
ORIGINAL = "original"
RENDITIONS = (MEDIA, ORIGINAL)
FORMATS = ("json", "text", "html")
_TRUE = {"1", "true", "yes"}
_FALSE = {"", "0", "false", "no"}
_DESTROYED = {ItemStatus.PURGED.value, ItemStatus.ERASED.value}
_EXTENSIONS = {
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/mpeg": "mp3", "audio/ogg": "ogg",
    "audio/flac": "flac", "audio/gsm": "gsm", "audio/mp4": "m4a", "audio/aac": "aac",
    "audio/amr": "amr", "audio/aiff": "aiff", "audio/basic": "au", "audio/webm": "webm",
    "audio/x-matroska": "mka", "audio/x-w64": "w64", "audio/x-caf": "caf",
    "audio/x-ms-wma": "wma", "audio/x-wavpack": "wv", "audio/x-voc": "voc",
    "application/json": "json", "text/plain": "txt", "text/html": "html",
}
_ETAG = re.compile(r'(?:W/)?"[^"]*"|\*')
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
# Every answer: personal data, never cached by a browser or a proxy, never sniffed as another type.
_PRIVATE = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
_HTML_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


class GoneError(ArchiveError):
    """The item's content was destroyed; only its record is left."""

    status = 410
    title = "Gone"


class RangeNotSatisfiableError(Exception):
    """A well-formed Range none of whose bytes exist."""


@dataclass(frozen=True, slots=True)
class Content:
    """One stored object of an item as served: which object, its type, size and hash."""

    kind: str
    media_type: str
    size: int
    sha256: str

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


@dataclass(frozen=True, slots=True)
class Query:
    download: bool
    rendition: str
    format: str


# -- parsing -------------------------------------------------------------------------------------


def _number(digits: str) -> int:
    """A Range header's byte position; absurdly long ones (past 2**63) count as 2**63, so that
    Python's limit on converting huge digit strings is never reached."""
    return int(digits) if len(digits.lstrip("0")) <= 19 else 2**63


def _single_spec(value: str) -> tuple[str, str] | None:
    """The (first, last) digits of a ``Range`` header's one byte range, or ``None`` when the
    header is to be ignored (another unit, bad syntax, several ranges, last before first)."""
    unit, sep, ranges = value.partition("=")
    specs = [s.strip() for s in ranges.split(",") if s.strip()]
    if not sep or unit.strip().lower() != "bytes" or len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first and last and _number(last) < _number(first):
        return None
    return first, last


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range ``[start, end)`` a ``Range`` header asks for, or ``None`` to answer
    the whole content (no header, another unit, bad syntax, or several ranges: all ignored).
    Raises :class:`RangeNotSatisfiableError` for a well-formed range outside the content."""
    spec = _single_spec(value) if value is not None else None
    if spec is None:
        return None
    first, last = spec
    if first == "":  # a suffix: the last n bytes
        if _number(last) == 0 or size == 0:
            raise RangeNotSatisfiableError
        return max(0, size - _number(last)), size
    start = _number(first)
    if start >= size:
        raise RangeNotSatisfiableError
    return start, size if last == "" else min(_number(last) + 1, size)


def none_match(value: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` matches ``etag`` (weak comparison, RFC 9110 section 13.1.2)."""
    if value is None:
        return False
    tags = _ETAG.findall(value)
    return "*" in tags or etag in {t.removeprefix("W/") for t in tags}


def _flag(raw: str, field: str, errors: list[FieldError]) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() not in _FALSE:
        errors.append(FieldError(field, "must be 1 or 0 (true or false)"))
    return False


def parse_query(request: web.Request, item: Item) -> Query:
    """The query parameters, every bad one named in one 400."""
    errors: list[FieldError] = []
    q = request.query
    download = _flag(q.get("download", ""), "download", errors)
    rendition = q.get("rendition", MEDIA)
    if rendition not in RENDITIONS:
        errors.append(FieldError("rendition", f"must be one of {', '.join(RENDITIONS)}"))
    fmt = q.get("format", "json")
    if item.channel == Channel.CHAT.value:
        if fmt not in FORMATS:
            errors.append(FieldError("format", f"must be one of {', '.join(FORMATS)}"))
    elif "format" in q:
        errors.append(FieldError("format", "applies to chats only; a call answers its audio"))
    if errors:
        raise BadRequestError("the query is not valid", errors=errors)
    return Query(download=download, rendition=rendition, format=fmt)


# -- content -------------------------------------------------------------------------------------


def check_not_destroyed(item: Item) -> None:
    """410 for an item whose content is gone: purged, erased, or an anonymised call (its audio
    was destroyed). An anonymised chat keeps a redacted transcript, which stays readable."""
    destroyed = (item.status in _DESTROYED or item.wrapped_key is None
                 or (item.status == ItemStatus.ANONYMISED.value
                     and item.channel == Channel.CALL.value))
    if destroyed:
        raise GoneError(f"the content of item {item.id} was destroyed ({item.status})")


def content_of(item: Item, rendition: str) -> Content:
    if rendition == MEDIA:
        assert item.plain_size is not None and item.sha256 is not None
        return Content(MEDIA, item.media_type or "application/octet-stream", item.plain_size,
                       item.sha256)
    facts = (item.objects or {}).get(rendition)
    if facts is None:
        raise NotFoundError(f"item {item.id} has no {rendition} rendition")
    return Content(rendition, facts.get("media_type") or "application/octet-stream",
                   int(facts["size"]), str(facts["sha256"]))


def download_name(item: Item, media_type: str) -> str:
    """``<external id>.<ext>`` with only safe characters (quotable, no path)."""
    base = _UNSAFE_FILENAME.sub("_", item.external_id).strip("._")[:100] or str(item.id)
    ext = _EXTENSIONS.get(media_type.split(";", maxsplit=1)[0].strip().lower(), "bin")
    if media_type.lower().startswith("audio/ogg") and "opus" in media_type.lower():
        ext = "opus"
    return f"{base}.{ext}"


def _disposition(item: Item, media_type: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{download_name(item, media_type)}"'}


# -- audit ---------------------------------------------------------------------------------------


async def record_play(request: web.Request, item_id: uuid.UUID,
                      detail: dict[str, Any]) -> bool:
    """Record ``item.play`` unless the caller played the item within :data:`PLAY_SESSION`;
    return whether an event was written.

    The check is repeated under the lock of the tenant's audit chain, so the two requests a
    browser's audio element opens at once cannot both record a play.
    """
    who = principal(request)
    db = request.app[DATABASE]
    now = request.app[ARCHIVE].clock.now()
    recent = (select(AuditEvent.id)
              .where(AuditEvent.tenant == who.tenant, AuditEvent.item_id == item_id,
                     AuditEvent.actor == who.actor, AuditEvent.action == "item.play",
                     col(AuditEvent.at) > now - PLAY_SESSION)
              .limit(1))
    async with db.reader() as session:
        if (await session.exec(recent)).first() is not None:
            return False
    async with db.session() as session:
        await session.exec(select(AuditHead).where(AuditHead.tenant == who.tenant)
                           .with_for_update())
        if (await session.exec(recent)).first() is not None:
            return False
        await audit.append(session, tenant=who.tenant, at=now, actor=who.actor,
                           role=who.role.value, action="item.play", item_id=item_id,
                           detail={"purpose": purpose(request), **detail})
        await session.commit()
    return True


# -- streaming -----------------------------------------------------------------------------------


async def _stream(request: web.Request, item: Item, content: Content, *,
                  span: tuple[int, int] | None, headers: dict[str, str],
                  audit_action: tuple[str, dict[str, Any]]) -> web.StreamResponse:
    """Send ``span`` (or the whole) of one object as it is decrypted.

    The first chunk is decrypted before the answer starts, so a missing key or a damaged object
    becomes a problem answer; after that, a failure can only cut the connection (the client sees
    fewer bytes than ``Content-Length``). A client that goes away (a browser cancels the request
    of its previous seek) ends the stream quietly; the reader is closed either way.
    """
    start, end = span if span is not None else (0, content.size)
    chunks = request.app[ARCHIVE].read(item, start, end, content.kind)
    try:
        first = await anext(chunks, b"")
        action, detail = audit_action
        if action == "item.play":
            await record_play(request, item.id, detail)
        else:
            await record(request, action, item.id, detail)
        response = web.StreamResponse(status=206 if span is not None else 200, headers=headers)
        response.headers["X-Request-Id"] = request[REQUEST_ID]  # set before the answer starts
        if span is not None:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{content.size}"
        response.content_length = end - start
        try:
            await response.prepare(request)
            await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:  # the client went away (a seek): nothing is wrong
            log.debug("item %s: the client left mid-answer", item.id)
        except Exception as exc:  # noqa: BLE001  (the answer has started: cut it short)
            # The type only: messages can name keys or hosts, never needed here.
            log.error("item %s: reading failed mid-answer (%s); connection cut",  # noqa: TRY400
                      item.id, type(exc).__name__)
            if request.transport is not None:
                request.transport.close()
    except asyncio.CancelledError:  # the server cancels a handler whose client left, if set to
        log.debug("item %s: the client left mid-answer (cancelled)", item.id)
        raise
    finally:
        await _close(chunks)
    return response


async def _close(chunks: AsyncIterator[bytes]) -> None:
    """Close a reader stopped early (its store stream, file or connection) at once."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def _serve_bytes(request: web.Request, item: Item, content: Content, query: Query,
                       audit_action: tuple[str, dict[str, Any]]) -> web.StreamResponse:
    """The stored bytes of one object, with ETag, conditional and range handling."""
    headers = {**_PRIVATE, "Accept-Ranges": "bytes", "ETag": content.etag,
               "Content-Type": content.media_type}
    if query.download:
        headers.update(_disposition(item, content.media_type))
    if none_match(request.headers.get("If-None-Match"), content.etag):
        return web.Response(status=304, headers={k: v for k, v in headers.items()
                                                 if k != "Content-Type"})
    if_range = request.headers.get("If-Range")
    span = None
    if if_range is None or if_range.strip() == content.etag:
        try:
            span = parse_range(request.headers.get("Range"), content.size)
        except RangeNotSatisfiableError:
            raise web.HTTPRequestRangeNotSatisfiable(
                headers={"Content-Range": f"bytes */{content.size}"},
                text=f"the range is outside the content's {content.size} bytes") from None
    return await _stream(request, item, content, span=span, headers=headers,
                         audit_action=audit_action)


def transcript_html(item: Item, transcript: Transcript) -> str:
    """A self-contained page (no scripts, no external resources); every value escaped."""
    rows = []
    for m in transcript.messages:
        who = m.sender + (f" ({m.name})" if m.name else "")
        rows.append(
            f'<li class="{html.escape(m.sender)}">'
            f'<time datetime="{html.escape(m.at.isoformat())}">'
            f'{html.escape(m.at.strftime("%Y-%m-%d %H:%M:%S UTC"))}</time> '
            f'<b>{html.escape(who)}</b><p>{html.escape(m.text)}</p></li>')
    title = html.escape(f"Chat {item.external_id} ({item.started_at:%Y-%m-%d %H:%M} UTC)")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{title}</title><style>"
        "body{font-family:sans-serif;max-width:50em;margin:1em auto}"
        "ol{list-style:none;padding:0}li{margin:.6em 0}time{color:#555}"
        "p{margin:.2em 0 0;white-space:pre-wrap}.agent b{color:#05a}.customer b{color:#a50}"
        f"</style></head><body><h1>{title}</h1><ol>\n" + "\n".join(rows) + "\n</ol></body></html>\n"
    )


async def _serve_chat(request: web.Request, item: Item, query: Query) -> web.StreamResponse:
    action = "item.download" if query.download else "item.view"
    detail = {"format": query.format}
    content = content_of(item, MEDIA)
    if query.format == "json":
        return await _serve_bytes(request, item, content, query, (action, detail))
    transcript = Transcript.from_json_bytes(await read_all(request.app[ARCHIVE].read(item)))
    if query.format == "text":
        body, media_type = transcript.to_text(), "text/plain"
        headers = {**_PRIVATE, "Accept-Ranges": "none"}
    else:
        body, media_type = transcript_html(item, transcript), "text/html"
        headers = {**_PRIVATE, "Accept-Ranges": "none", "Content-Security-Policy": _HTML_POLICY}
    if query.download:
        headers.update(_disposition(item, media_type))
    await record(request, action, item.id, detail)
    return web.Response(text=body, content_type=media_type, charset="utf-8", headers=headers)


async def get_media(request: web.Request) -> web.StreamResponse:
    item = await readable_item(request)
    query = parse_query(request, item)
    check_not_destroyed(item)
    if item.channel == Channel.CHAT.value:
        if query.rendition != MEDIA:
            raise NotFoundError(f"item {item.id} has no {query.rendition} rendition")
        return await _serve_chat(request, item, query)
    content = content_of(item, query.rendition)
    detail = {} if query.rendition == MEDIA else {"rendition": query.rendition}
    action = ("item.download", detail) if query.download else ("item.play", detail)
    return await _serve_bytes(request, item, content, query, action)


# -- OpenAPI -------------------------------------------------------------------------------------

_BINARY = {"type": "string", "format": "binary"}
_PROBLEM = {"application/problem+json": {"schema": ref("Problem")}}
_HEADERS = {
    "ETag": {"schema": {"type": "string"},
             "description": "Strong: the quoted SHA-256 of the plaintext (audio, chat JSON)"},
    "Accept-Ranges": {"schema": {"enum": ["bytes", "none"]}},
    "Content-Length": {"schema": {"type": "integer"}},
    "Cache-Control": {"schema": {"type": "string"}, "description": "private, no-store"},
    "Content-Disposition": {"schema": {"type": "string"},
                            "description": "With download=1: attachment; filename=..."},
}
_CONTENT = {
    "audio/*": {"schema": _BINARY},
    "application/json": {"schema": ref("StoredTranscript")},
    "text/plain": {"schema": {"type": "string"}},
    "text/html": {"schema": {"type": "string"}},
}

SCHEMAS: dict[str, Any] = {
    "StoredTranscript": {
        "type": "object", "required": ["messages", "redactions"],
        "description": "A chat as stored: canonical JSON, card data already redacted",
        "properties": {
            "messages": {"type": "array", "items": {
                "type": "object", "required": ["at", "from", "name", "text"],
                "properties": {"at": {"type": "string", "format": "date-time"},
                               "from": {"enum": ["customer", "agent", "bot", "system"]},
                               "name": {"type": ["string", "null"]},
                               "text": {"type": "string"}}}},
            "redactions": {"type": "object", "properties": {
                "cards": {"type": "integer"}, "security_codes": {"type": "integer"}}},
        },
    },
}

_SPEC: dict[str, Any] = {
    "description": (
        "Calls: the decrypted audio, streamed, with single byte ranges (so an audio element can "
        "seek). Chats: the transcript as JSON (default), text or HTML. A play is audited once "
        "per 30-minute session; every download and chat read is audited."),
    "parameters": [
        {"name": "item_id", "in": "path", "required": True,
         "schema": {"type": "string", "format": "uuid"}},
        {"name": "download", "in": "query", "required": False,
         "description": "1: answer as an attachment with a file name (audited as a download)",
         "schema": {"enum": ["0", "1", "true", "false"]}},
        {"name": "rendition", "in": "query", "required": False,
         "description": "Calls kept as 'both': 'original' serves the audio as received",
         "schema": {"enum": list(RENDITIONS), "default": MEDIA}},
        {"name": "format", "in": "query", "required": False,
         "description": "Chats only: json (the stored document), text or html",
         "schema": {"enum": list(FORMATS), "default": "json"}},
        {"name": "Range", "in": "header", "required": False,
         "description": "One range: bytes=a-b, bytes=a- or bytes=-n. Unparsable, other units "
                        "or several ranges are ignored (200 whole). Not for chat text/html.",
         "schema": {"type": "string"}},
        {"name": "If-Range", "in": "header", "required": False,
         "description": "The ETag; if it differs, Range is ignored (200 whole)",
         "schema": {"type": "string"}},
        {"name": "If-None-Match", "in": "header", "required": False,
         "description": "ETags (or *); a match answers 304", "schema": {"type": "string"}},
        {"name": "X-Purpose", "in": "header", "required": False,
         "description": "Why the item is read; recorded in the audit log",
         "schema": {"type": "string", "maxLength": 200}},
    ],
    "responses": {
        "200": {"description": "The whole content", "headers": _HEADERS, "content": _CONTENT},
        "206": {"description": "The requested range (audio, chat JSON)",
                "headers": {**_HEADERS, "Content-Range": {
                    "schema": {"type": "string"}, "description": "bytes a-b/size"}},
                "content": {"audio/*": {"schema": _BINARY},
                            "application/json": {"schema": _BINARY}}},
        "304": {"description": "If-None-Match matched the ETag; no body",
                "headers": {"ETag": _HEADERS["ETag"]}},
        "400": {"$ref": "#/components/responses/BadRequest"},
        "404": {"$ref": "#/components/responses/NotFound"},
        "410": {"description": "The content was destroyed (purged, erased, or an anonymised "
                               "call)", "content": _PROBLEM},
        "416": {"description": "The range is outside the content",
                "headers": {"Content-Range": {"schema": {"type": "string"},
                                              "description": "bytes */size"}},
                "content": _PROBLEM},
        "503": {"$ref": "#/components/responses/Unavailable"},
    },
}

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/v1/items/{item_id}/media", get_media, "get_item_media",
             "Play or download an item's audio or transcript", READERS, _SPEC),
]
