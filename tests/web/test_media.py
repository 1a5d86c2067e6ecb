"""Playing and downloading items: GET /v1/items/{id}/media with real audio put through ingest."""

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import random
import uuid
import wave
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from archive.clock import ManualClock
from archive.models import AuditEvent, ItemStatus, Role, Tenant
from archive.service import Actor
from archive.settings import Settings
from ingest.transcripts import Transcript
from tests.conftest import Client
from tests.helpers import bearer, make_token
from tests.ingest import media
from web.keys import ARCHIVE, DATABASE

PROBLEM = "application/problem+json"
LARGE = 5 * 1024 * 1024  # bytes of PCM: many 4 KiB segments (the tests' segment size)
CHAT: dict[str, Any] = {
    "external_id": "chat-1", "started_at": "2026-11-23T09:00:00Z",
    "customer": {"name": "Ann Example", "email": "ann@example.org"},
    "messages": [
        {"at": "2026-11-23T09:00:05Z", "from": "bot", "text": "How can we help?"},
        {"at": "2026-11-23T09:01:00Z", "from": "customer", "name": "Ann <b>",
         "text": "<script>alert('x')</script> & more\nsecond line"},
        {"at": "2026-11-23T09:02:00Z", "from": "agent", "name": "Sam", "text": "Thanks"},
    ],
}


def noise_wav(pcm_bytes: int, seed: int = 7) -> bytes:
    """A valid 8 kHz 16-bit mono WAV of seeded noise: no two offsets hold the same bytes, so a
    range served from the wrong place cannot pass for the right one (a tone repeats)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(random.Random(seed).randbytes(pcm_bytes))
    return buffer.getvalue()


async def _headers(client: Client, clock: ManualClock, role: Role = Role.COMPLAINTS,
                   tenant: str = "camden") -> dict[str, str]:
    return bearer(await make_token(client.app[DATABASE], tenant, role, clock.now()))


async def _upload(client: Client, clock: ManualClock, audio: bytes, external_id: str = "call-1",
                  tenant: str = "camden") -> dict[str, Any]:
    r = await client.put(f"/v1/recordings/{external_id}", data=audio,
                         headers=await _headers(client, clock, Role.INGEST, tenant),
                         params={"started_at": "2026-11-23T09:00:00Z",
                                 "caller_number": "020 7946 0000"})
    body: dict[str, Any] = await r.json()
    assert r.status == 201, body
    return body


async def _chat(client: Client, clock: ManualClock, tenant: str = "camden") -> dict[str, Any]:
    r = await client.post("/v1/transcripts", json=CHAT,
                          headers=await _headers(client, clock, Role.INGEST, tenant))
    body: dict[str, Any] = await r.json()
    assert r.status == 201, body
    return body


async def _events(client: Client, action: str) -> list[AuditEvent]:
    async with client.app[DATABASE].reader() as session:
        return list((await session.exec(
            select(AuditEvent).where(AuditEvent.action == action))).all())


async def _get(client: Client, item_id: str, headers: dict[str, str],
               **params: str) -> tuple[int, Any, bytes]:
    r = await client.get(f"/v1/items/{item_id}/media", headers=headers, params=params)
    return r.status, r.headers, await r.read()


async def test_a_call_plays_whole_with_the_headers_a_player_needs(
    client: Client, clock: ManualClock,
) -> None:
    audio = media.wav(2.0)
    item = await _upload(client, clock, audio)
    reader = await _headers(client, clock)
    status, headers, body = await _get(client, item["id"], reader)
    assert status == 200 and body == audio
    assert headers["Content-Type"] == "audio/wav"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Length"] == str(len(audio))
    assert headers["ETag"] == f'"{hashlib.sha256(audio).hexdigest()}"'
    assert "no-store" in headers["Cache-Control"] and "private" in headers["Cache-Control"]
    assert "Content-Disposition" not in headers


async def test_ranges_of_a_large_recording_are_exact(client: Client, clock: ManualClock) -> None:
    audio = noise_wav(LARGE)
    size = len(audio)
    item = await _upload(client, clock, audio)
    reader = await _headers(client, clock)
    cases = {
        "bytes=0-0": (0, 1),  # first byte
        "bytes=-1": (size - 1, size),  # last byte
        "bytes=-1000": (size - 1000, size),  # suffix
        f"bytes={size - 5000}-": (size - 5000, size),  # open-ended
        "bytes=2500000-2600000": (2500000, 2600001),  # middle, across many segments
        "bytes=4095-4096": (4095, 4097),  # across a segment boundary
        f"bytes=100-{size * 2}": (100, size),  # last-pos past the end: cut to the end
        f"bytes=-{size + 10}": (0, size),  # suffix longer than the content: all of it
    }
    for value, (start, end) in cases.items():
        status, headers, body = await _get(client, item["id"], {**reader, "Range": value})
        assert status == 206, value
        assert body == audio[start:end], value
        assert headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}", value
        assert headers["Content-Length"] == str(end - start)
        assert headers["Content-Type"] == "audio/wav"
    # Unsatisfiable: starts at or past the end, or an empty suffix.
    for value in (f"bytes={size}-", f"bytes={size + 1}-{size + 9}", "bytes=-0"):
        status, headers, body = await _get(client, item["id"], {**reader, "Range": value})
        assert status == 416, value
        assert headers["Content-Range"] == f"bytes */{size}"
        assert headers["Content-Type"].startswith(PROBLEM)
        assert json.loads(body)["status"] == 416
    # Malformed, other units, several ranges, last before first: ignored, the whole answered.
    for value in ("bytes=abc", "bytes=1-2-3", "items=0-1", "bytes=5-2", "bytes=0-1,4-5",
                  "bytes=", "bytes 0-1"):
        status, headers, body = await _get(client, item["id"], {**reader, "Range": value})
        assert status == 200, value
        assert len(body) == size and body == audio, value
        assert "Content-Range" not in headers


async def test_etag_answers_304_and_if_range_guards_ranges(
    client: Client, clock: ManualClock,
) -> None:
    audio = media.wav(1.0)
    item = await _upload(client, clock, audio)
    reader = await _headers(client, clock)
    etag = f'"{hashlib.sha256(audio).hexdigest()}"'
    for match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, headers, body = await _get(client, item["id"], {**reader, "If-None-Match": match})
        assert status == 304 and body == b"", match
        assert headers["ETag"] == etag
    status, _, body = await _get(client, item["id"], {**reader, "If-None-Match": '"other"'})
    assert status == 200 and body == audio
    # If-Range: the range only while the ETag is the same, else the whole content.
    ranged = {**reader, "Range": "bytes=10-19"}
    status, _, body = await _get(client, item["id"], {**ranged, "If-Range": etag})
    assert status == 206 and body == audio[10:20]
    for stale in ('"0123"', f"W/{etag}", "Mon, 23 Nov 2026 09:00:00 GMT"):
        status, _, body = await _get(client, item["id"], {**ranged, "If-Range": stale})
        assert status == 200 and body == audio, stale
    # Nothing shown, nothing audited: 304s and 416s make no play.
    events = await _events(client, "item.play")
    assert len(events) == 1  # the first 200 above


def _streaming_tasks() -> list[asyncio.Task[Any]]:
    """Tasks suspended anywhere inside the media view (following each task's await chain)."""
    found = []
    for task in asyncio.all_tasks():
        step: Any = task.get_coro()
        while step is not None:
            code = getattr(step, "cr_code", None) or getattr(step, "ag_code", None)
            if code is not None and code.co_filename.endswith("views/media.py"):
                found.append(task)
                break
            step = (getattr(step, "cr_await", None) or getattr(step, "ag_await", None)
                    or getattr(step, "gi_yieldfrom", None))
    return found


def _open_files(root: Path) -> list[str]:
    """Files under ``root`` this process holds open."""
    fds = Path("/proc/self/fd")
    paths = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            paths.append(str(fd.readlink()))
    return [p for p in paths if p.startswith(str(root / "store"))]


async def test_a_browser_seek_sequence_is_one_play(
    client: Client, clock: ManualClock, settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    audio = noise_wav(3 * LARGE)  # more than socket buffers hold: the server sees each leave
    item = await _upload(client, clock, audio)
    reader = {**await _headers(client, clock), "X-Purpose": "complaint C-17"}
    url = f"/v1/items/{item['id']}/media"
    caplog.set_level(logging.DEBUG, logger="web.views.media")
    # The audio element opens the whole file, reads a little, then seeks: each request it
    # no longer needs is cancelled (the connection is closed) mid-stream.
    for start in (0, 9_000_000, 1_234_567):
        r = await client.get(url, headers={**reader, "Range": f"bytes={start}-"})
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes {start}-{len(audio) - 1}/{len(audio)}"
        chunk = await r.content.readexactly(1000)
        assert chunk == audio[start:start + 1000]
        r.close()
    # Both requests of a player that opens two at once still make one play.
    both = await asyncio.gather(*(client.get(url, headers={**reader, "Range": "bytes=0-99"})
                                  for _ in range(2)))
    assert [await r.read() for r in both] == [audio[:100]] * 2
    plays = await _events(client, "item.play")
    assert len(plays) == 1
    assert str(plays[0].item_id) == item["id"] and plays[0].role == "complaints"
    assert plays[0].detail == {"purpose": "complaint C-17"}
    # The server's handlers end (no task left streaming, no stored object left open), and
    # nothing was logged as a warning or an error.
    for _ in range(100):
        if not _streaming_tasks() and not _open_files(settings.data_dir):
            break
        await asyncio.sleep(0.05)
    assert _streaming_tasks() == [] and _open_files(settings.data_dir) == []
    assert [rec for rec in caplog.records if rec.levelno >= logging.WARNING] == []
    # ... while the server did see clients leave mid-answer (the path under test was taken).
    assert any("client left" in rec.getMessage() for rec in caplog.records)
    # A new session (after 30 minutes) is a new play; so is another reader's.
    clock.advance(timedelta(minutes=31))
    assert (await _get(client, item["id"], {**reader, "Range": "bytes=0-0"}))[0] == 206
    other = await _headers(client, clock, Role.ADMIN)
    assert (await _get(client, item["id"], other))[0] == 200
    assert len(await _events(client, "item.play")) == 3


async def test_download_is_an_attachment_and_always_audited(
    client: Client, clock: ManualClock,
) -> None:
    audio = media.wav(1.0)
    item = await _upload(client, clock, audio, external_id='pbx 2026:11:23;"x"')
    reader = await _headers(client, clock)
    for _ in range(2):
        status, headers, body = await _get(client, item["id"], reader, download="1")
        assert status == 200 and body == audio
        assert headers["Content-Disposition"] == 'attachment; filename="pbx_2026_11_23_x.wav"'
    downloads = await _events(client, "item.download")
    assert len(downloads) == 2 and downloads[0].detail == {"purpose": ""}
    assert await _events(client, "item.play") == []


async def test_both_policy_serves_the_original_on_request(
    client: Client, clock: ManualClock,
) -> None:
    await make_token(client.app[DATABASE], "camden", Role.INGEST, clock.now())
    async with client.app[DATABASE].session() as session:
        row = await session.get(Tenant, "camden")
        assert row is not None
        row.media_policy = "both"
        session.add(row)
        await session.commit()
    audio = media.wav(2.0)
    item = await _upload(client, clock, audio)
    reader = await _headers(client, clock)
    status, headers, body = await _get(client, item["id"], reader)
    assert status == 200 and headers["Content-Type"].startswith("audio/ogg")
    assert body[:4] == b"OggS" and headers["ETag"] == f'"{item["media"]["sha256"]}"'
    status, headers, body = await _get(client, item["id"], reader, rendition="original")
    assert status == 200 and body == audio
    assert headers["Content-Type"] == "audio/wav"
    assert headers["ETag"] == f'"{hashlib.sha256(audio).hexdigest()}"'
    status, headers, body = await _get(client, item["id"], {**reader, "Range": "bytes=-44"},
                                       rendition="original", download="1")
    assert status == 206 and body == audio[-44:]
    assert headers["Content-Disposition"] == 'attachment; filename="call-1.wav"'
    status, headers, _ = await _get(client, item["id"], reader, download="1")
    assert headers["Content-Disposition"] == 'attachment; filename="call-1.opus"'
    downloads = await _events(client, "item.download")
    assert [e.detail for e in downloads] == [{"purpose": "", "rendition": "original"},
                                             {"purpose": ""}]


async def test_bad_query_values_are_named(client: Client, clock: ManualClock) -> None:
    item = await _upload(client, clock, media.wav(1.0))
    reader = await _headers(client, clock)
    status, headers, body = await _get(client, item["id"], reader, download="maybe",
                                       rendition="best", format="text")
    assert status == 400 and headers["Content-Type"].startswith(PROBLEM)
    assert {e["field"] for e in json.loads(body)["errors"]} == {"download", "rendition",
                                                               "format"}
    # A call kept as received has no second rendition.
    status, _, _ = await _get(client, item["id"], reader, rendition="original")
    assert status == 404
    assert await _events(client, "item.play") == []


async def test_a_chat_reads_as_json_text_or_escaped_html(
    client: Client, clock: ManualClock,
) -> None:
    item = await _chat(client, clock)
    reader = await _headers(client, clock)
    archive = client.app[ARCHIVE]
    stored = b"".join([c async for c in archive.read(
        await archive.get("camden", uuid.UUID(item["id"])))])
    status, headers, body = await _get(client, item["id"], reader)
    assert status == 200 and body == stored
    assert headers["Content-Type"] == "application/json"
    assert headers["ETag"] == f'"{hashlib.sha256(stored).hexdigest()}"'
    status, headers, body = await _get(client, item["id"], {**reader, "Range": "bytes=0-0"})
    assert status == 206 and body == b"{"
    status, headers, body = await _get(client, item["id"], reader, format="text")
    assert status == 200 and headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body.decode() == Transcript.from_json_bytes(stored).to_text()
    assert "[2026-11-23 09:01:00 UTC] Customer (Ann <b>): <script>" in body.decode()
    status, headers, body = await _get(client, item["id"], reader, format="html")
    page = body.decode()
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<script" not in page and "Ann <b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more\nsecond line" in page
    assert "customer (Ann &lt;b&gt;)" in page and "2026-11-23 09:02:00 UTC" in page
    assert "http" not in page and "src=" not in page  # self-contained
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, headers, body = await _get(client, item["id"], reader, format="html", download="1")
    assert headers["Content-Disposition"] == 'attachment; filename="chat-1.html"'
    status, headers, body = await _get(client, item["id"], reader, format="pdf")
    assert status == 400 and json.loads(body)["errors"][0]["field"] == "format"
    views = await _events(client, "item.view")
    assert [e.detail for e in views] == [{"purpose": "", "format": f}
                                         for f in ("json", "json", "text", "html")]
    assert [e.detail for e in await _events(client, "item.download")] == [
        {"purpose": "", "format": "html"}]
    assert await _events(client, "item.play") == []


@pytest.mark.parametrize("status_after", [ItemStatus.ERASED, ItemStatus.PURGED,
                                          ItemStatus.ANONYMISED])
async def test_destroyed_content_is_gone(
    client: Client, clock: ManualClock, status_after: ItemStatus,
) -> None:
    item = await _upload(client, clock, media.wav(1.0))
    await client.app[ARCHIVE].destroy("camden", uuid.UUID(item["id"]), reason="erasure",
                                      actor=Actor("t", "privacy"), status=status_after)
    reader = await _headers(client, clock)
    for extra in ({}, {"Range": "bytes=0-0"}):
        status, headers, body = await _get(client, item["id"], {**reader, **extra})
        assert status == 410 and headers["Content-Type"].startswith(PROBLEM)
        problem = json.loads(body)
        assert problem["status"] == 410 and problem["title"] == "Gone"
    assert await _events(client, "item.play") == []


async def test_a_destroyed_chat_is_gone(client: Client, clock: ManualClock) -> None:
    item = await _chat(client, clock)
    await client.app[ARCHIVE].destroy("camden", uuid.UUID(item["id"]), reason="retention",
                                      actor=Actor("t", "system"), status=ItemStatus.PURGED)
    reader = await _headers(client, clock)
    for fmt in ("json", "text", "html"):
        assert (await _get(client, item["id"], reader, format=fmt))[0] == 410


async def test_roles_and_tenants_are_enforced(client: Client, clock: ManualClock) -> None:
    call = await _upload(client, clock, media.wav(1.0))
    chat = await _chat(client, clock)
    for role in (Role.INGEST, Role.AUDITOR, Role.PRIVACY):
        status, headers, body = await _get(client, call["id"], await _headers(client, clock,
                                                                               role))
        assert status == 403 and headers["Content-Type"].startswith(PROBLEM), role
        assert role.value in json.loads(body)["detail"]
    assert (await _get(client, call["id"], {}))[0] == 401
    for role in (Role.COMPLAINTS, Role.QUALITY, Role.ADMIN):
        assert (await _get(client, call["id"], await _headers(client, clock, role)))[0] == 200
    quality = await _headers(client, clock, Role.QUALITY)
    assert (await _get(client, chat["id"], quality))[0] == 403
    assert (await _get(client, chat["id"], quality, format="text"))[0] == 403
    # Another tenant's items, and ids that name nothing, are not found.
    barnet = await _headers(client, clock, Role.ADMIN, tenant="barnet")
    for item_id in (call["id"], chat["id"], str(uuid.uuid4()), "not-a-uuid"):
        status, _, body = await _get(client, item_id, barnet)
        assert status == 404, item_id
        assert b"+44" not in body and b"RIFF" not in body
    plays = await _events(client, "item.play")
    assert {e.role for e in plays} == {"complaints", "quality", "admin"}
