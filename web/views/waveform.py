"""``GET /v1/items/{item_id}/waveform.png``: a picture of a call's audio (archive/waveform.py).

Drawn by ffmpeg on the first request and cached encrypted as an object of the item; later
requests decrypt the cached picture. The ``ETag`` is the SHA-256 of the picture (the hash the
index recorded for it), so ``If-None-Match`` answers ``304`` without reading anything.

Audit: no event per view. The picture shows when each channel was loud or quiet, no words and
no one's identity: what the item page that shows it already records as ``item.view``, and
the same timing the metadata's duration and the player give. Storing a new picture is a change
of the item's objects, audited once per item as ``item.waveform`` (by whoever's request drew
it), with the picture's size and hash.
"""

from typing import Any

from aiohttp import web

from archive.service import Actor
from archive.waveform import KIND, MEDIA_TYPE, Ffmpeg, check_drawable, waveform
from ingest.audio import INPUT_FORMATS
from web.endpoint import READERS, Endpoint, ref
from web.keys import ARCHIVE, INGESTOR, principal
from web.views.items import readable_item
from web.views.media import none_match

# Pages are never cached; their pictures may be, privately, for a few minutes (an item page
# opened again, back and forward), then revalidated by ETag.
CACHE_CONTROL = "private, max-age=300"


def _tool(request: web.Request) -> Ffmpeg:
    """ingest's ffmpeg and its transcode semaphore: pictures and uploads share the CPUs."""
    transcoder = request.app[INGESTOR].transcoder
    return Ffmpeg(transcoder.ffmpeg, transcoder.permit, INPUT_FORMATS)


async def get_waveform(request: web.Request) -> web.StreamResponse:
    item = await readable_item(request)
    check_drawable(item)
    headers = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
    cached = (item.objects or {}).get(KIND)
    if cached is not None:
        etag = f'"{cached["sha256"]}"'
        if none_match(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers={**headers, "ETag": etag})
    who = principal(request)
    picture = await waveform(request.app[ARCHIVE], item, _tool(request),
                             Actor(who.actor, who.role.value))
    return web.Response(body=picture.data, content_type=MEDIA_TYPE,
                        headers={**headers, "ETag": f'"{picture.sha256}"'})


_SPEC: dict[str, Any] = {
    "description": (
        "A picture of a call's audio (ffmpeg's showwavespic), drawn on the first request and "
        "cached encrypted with the item. Mono calls are 1200x200; stereo calls 1200x240 with "
        "channel 1 (left) above in blue (#1d70b8) and channel 2 (right) below in orange "
        "(#f47738), on white. Chats, anonymised calls and destroyed items have none (404). "
        "Not audited per view (it shows timing only); the first drawing is audited as "
        "item.waveform."),
    "parameters": [
        {"name": "item_id", "in": "path", "required": True,
         "schema": {"type": "string", "format": "uuid"}},
        {"name": "If-None-Match", "in": "header", "required": False,
         "description": "ETags (or *); a match answers 304", "schema": {"type": "string"}},
    ],
    "responses": {
        "200": {"description": "The picture",
                "headers": {
                    "ETag": {"schema": {"type": "string"},
                             "description": "Strong: the quoted SHA-256 of the PNG"},
                    "Cache-Control": {"schema": {"type": "string"},
                                      "description": CACHE_CONTROL}},
                "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
        "304": {"description": "If-None-Match matched the ETag; no body"},
        "404": {"description": "No such item, or it has no audio to draw (a chat, an "
                               "anonymised call or a destroyed item)",
                "content": {"application/problem+json": {"schema": ref("Problem")}}},
        "503": {"$ref": "#/components/responses/Unavailable"},
    },
}

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/v1/items/{item_id}/waveform.png", get_waveform, "get_item_waveform",
             "Get a picture of a call's audio (PNG)", READERS, _SPEC),
]
SCHEMAS: dict[str, Any] = {}
