"""Waveform pictures of calls (GET /v1/items/{id}/waveform.png), with real audio put through
ingest and drawn by the real ffmpeg: the PNG and its colours, the encrypted cache (an object
of the item that destruction, anonymisation and the sweeper treat as its own), two first
requests at once, and what has no waveform."""

import asyncio
import hashlib
import struct
import uuid
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from archive import rights
from archive.clock import ManualClock
from archive.models import AuditEvent, Item, Role
from archive.service import Actor, object_key_of, object_keys
from archive.waveform import COLOURS, KIND, PNG_SIGNATURE, Ffmpeg, stats, waveform
from ingest.audio import INPUT_FORMATS
from lifecycle.scrub import scrub
from lifecycle.sweep import sweep
from storage.base import iter_bytes, read_all
from tests.conftest import Client
from tests.helpers import bearer, make_token
from tests.ingest import media
from web.keys import ARCHIVE, DATABASE, INGESTOR

PROBLEM = "application/problem+json"
WHITE = "ffffff"
BLUE, ORANGE = (c.lstrip("#") for c in COLOURS)
PRIVACY = Actor("token:dpo", "privacy")


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB PNG, every chunk's CRC checked (a small
    decoder: the tests have no imaging library)."""
    assert data.startswith(PNG_SIGNATURE)
    pos, header, compressed = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            compressed += body
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert (depth, colour_type) == (8, 2)  # 8-bit RGB
    raw, bpp, stride = zlib.decompress(compressed), 3, width * 3
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind_, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind_ == 1:
                line[i] = (line[i] + a) & 255
            elif kind_ == 2:
                line[i] = (line[i] + b) & 255
            elif kind_ == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind_ == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def colours(rows: list[bytes]) -> Counter[str]:
    return Counter(row[x:x + 3].hex() for row in rows for x in range(0, len(row), 3))


async def _headers(client: Client, clock: ManualClock,
                   role: Role = Role.COMPLAINTS) -> dict[str, str]:
    return bearer(await make_token(client.app[DATABASE], "camden", role, clock.now()))


async def _upload(client: Client, clock: ManualClock, audio: bytes,
                  external_id: str = "call-1") -> str:
    r = await client.put(f"/v1/recordings/{external_id}", data=audio,
                         headers=await _headers(client, clock, Role.INGEST),
                         params={"started_at": "2026-11-23T09:00:00Z"})
    body: dict[str, Any] = await r.json()
    assert r.status == 201, body
    return str(body["id"])


async def _get(client: Client, item_id: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
    r = await client.get(f"/v1/items/{item_id}/waveform.png", headers=headers)
    return r.status, r.headers, await r.read()


async def _item(client: Client, item_id: str) -> Item:
    return await client.app[ARCHIVE].get("camden", uuid.UUID(item_id))


async def _stored(client: Client) -> list[str]:
    return [info.key async for info in client.app[ARCHIVE].store.list("")]


async def test_a_mono_call_is_drawn_in_blue_and_a_stereo_call_in_two_colours(
    client: Client, clock: ManualClock,
) -> None:
    reader = await _headers(client, clock)
    mono = await _upload(client, clock, media.wav(3.0), "mono")
    stereo = await _upload(client, clock, media.wav(3.0, channels=2), "stereo")

    status, headers, png = await _get(client, mono, reader)
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert headers["ETag"] == f'"{hashlib.sha256(png).hexdigest()}"'
    assert headers["Cache-Control"].startswith("private, max-age=")
    width, height, rows = decode_png(png)
    assert (width, height) == (1200, 200)
    seen = colours(rows)
    assert set(seen) == {WHITE, BLUE}  # one party's line on white, nothing orange

    status, _, png = await _get(client, stereo, reader)
    assert status == 200
    width, height, rows = decode_png(png)
    assert (width, height) == (1200, 240)
    top, bottom = colours(rows[:120]), colours(rows[120:])
    assert set(top) == {WHITE, BLUE}  # channel 1 (left) above, in blue
    assert set(bottom) == {WHITE, ORANGE}  # channel 2 (right) below, in orange


async def test_the_picture_is_cached_encrypted_with_the_item_and_served_without_ffmpeg(
    client: Client, clock: ManualClock,
) -> None:
    reader = await _headers(client, clock)
    item_id = await _upload(client, clock, media.wav(2.0, channels=2))
    runs = stats["ffmpeg_runs"]
    status, _, first = await _get(client, item_id, reader)
    assert status == 200 and stats["ffmpeg_runs"] == runs + 1

    item = await _item(client, item_id)
    facts = (item.objects or {})[KIND]
    assert facts["sha256"] == hashlib.sha256(first).hexdigest()
    assert facts["size"] == len(first) and facts["media_type"] == "image/png"
    key = object_key_of(item, KIND)
    assert key in object_keys(item) and key.startswith(f"{item.object_key}.")
    sealed = await read_all(client.app[ARCHIVE].store.get(key))
    assert PNG_SIGNATURE not in sealed and b"IHDR" not in sealed  # encrypted at rest
    assert await read_all(client.app[ARCHIVE].read(item, kind=KIND)) == first

    status, headers, again = await _get(client, item_id, reader)
    assert status == 200 and again == first
    assert stats["ffmpeg_runs"] == runs + 1  # the cache, not ffmpeg
    status, _, body = await _get(client, item_id, {**reader, "If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""

    # Key rotation re-wraps the item's one data key: the cached picture still opens.
    await client.app[ARCHIVE].rotate_keys("camden")
    status, _, rotated = await _get(client, item_id, reader)
    assert status == 200 and rotated == first and stats["ffmpeg_runs"] == runs + 1
    report = await scrub(client.app[ARCHIVE], sample=10)
    assert report.ok and report.objects == 2  # media and waveform, both intact

    # Storing it was audited once; views are not.
    async with client.app[DATABASE].reader() as session:
        events = (await session.exec(select(AuditEvent).where(
            AuditEvent.action == "item.waveform"))).all()
    assert len(events) == 1 and events[0].detail is not None
    assert events[0].detail["sha256"] == facts["sha256"]


async def test_destroying_or_anonymising_a_call_deletes_its_waveform(
    client: Client, clock: ManualClock,
) -> None:
    reader = await _headers(client, clock)
    archive = client.app[ARCHIVE]
    for n, destroy in enumerate(("erase", "anonymise")):
        item_id = await _upload(client, clock, media.wav(1.0), f"call-{n}")
        assert (await _get(client, item_id, reader))[0] == 200
        key = object_key_of(await _item(client, item_id), KIND)
        assert key in await _stored(client)
        item = await _item(client, item_id)
        if destroy == "erase":
            await rights.erase(archive, "camden", item.id, PRIVACY)
        else:
            await rights.anonymise(archive, "camden", item.id, PRIVACY)
        assert key not in await _stored(client), destroy
        assert not [k for k in await _stored(client) if item_id in k], destroy
        status, headers, body = await _get(client, item_id, reader)
        assert status == 404 and headers["Content-Type"].startswith(PROBLEM), destroy
        assert b"no audio" in body


async def test_the_sweeper_keeps_the_waveform_and_removes_one_no_item_names(
    client: Client, clock: ManualClock,
) -> None:
    reader = await _headers(client, clock)
    archive = client.app[ARCHIVE]
    item_id = await _upload(client, clock, media.wav(1.0))
    assert (await _get(client, item_id, reader))[0] == 200
    item = await _item(client, item_id)
    kept = object_key_of(item, KIND)
    # What a request that crashed before recording its picture leaves behind.
    stray = f"{item.object_key}.{KIND}-0000"
    await archive.store.put(stray, iter_bytes(b"sealed bytes nobody recorded"))
    clock.set(datetime.now(UTC) + timedelta(days=1))  # every object older than the grace

    report = await sweep(archive, grace=timedelta(hours=1))

    assert report.ok and report.orphans_deleted == 1 and not report.missing
    stored = await _stored(client)
    assert kept in stored and stray not in stored
    status, _, png = await _get(client, item_id, reader)
    assert status == 200 and png.startswith(PNG_SIGNATURE)


async def test_two_first_requests_at_once_keep_one_picture(
    client: Client, clock: ManualClock,
) -> None:
    reader = await _headers(client, clock)
    item_id = await _upload(client, clock, media.wav(2.0, channels=2))
    answers = await asyncio.gather(*(_get(client, item_id, reader) for _ in range(3)))
    assert all(status == 200 for status, _, _ in answers)
    assert len({body for _, _, body in answers}) == 1  # the same audio, the same picture
    item = await _item(client, item_id)
    pictures = [k for k in await _stored(client) if f"{item.object_key}.{KIND}" in k]
    assert pictures == [object_key_of(item, KIND)]  # one kept, the others' deleted
    report = await scrub(client.app[ARCHIVE], sample=10)
    assert report.ok, str(report)


async def test_a_request_that_lost_the_race_deletes_its_own_picture(
    client: Client, clock: ManualClock,
) -> None:
    archive = client.app[ARCHIVE]
    transcoder = client.app[INGESTOR].transcoder
    tool = Ffmpeg(transcoder.ffmpeg, transcoder.permit, INPUT_FORMATS)
    item_id = await _upload(client, clock, media.wav(1.0))
    stale = await _item(client, item_id)  # read before any picture was recorded
    runs = stats["ffmpeg_runs"]
    first = await waveform(archive, stale, tool, PRIVACY)
    second = await waveform(archive, stale, tool, PRIVACY)  # draws again: it saw no cache
    assert stats["ffmpeg_runs"] == runs + 2 and not first.cached and not second.cached
    assert second.data == first.data
    item = await _item(client, item_id)
    assert (item.objects or {})[KIND]["sha256"] == first.sha256
    pictures = [k for k in await _stored(client) if f"{item.object_key}.{KIND}" in k]
    assert pictures == [object_key_of(item, KIND)]
    third = await waveform(archive, item, tool, PRIVACY)
    assert third.cached and third.data == first.data and stats["ffmpeg_runs"] == runs + 2


async def test_a_damaged_cached_picture_is_drawn_again_in_its_place(
    client: Client, clock: ManualClock,
) -> None:
    reader = await _headers(client, clock)
    archive = client.app[ARCHIVE]
    item_id = await _upload(client, clock, media.wav(1.0))
    status, _, png = await _get(client, item_id, reader)
    damaged = object_key_of(await _item(client, item_id), KIND)
    sealed = bytearray(await read_all(archive.store.get(damaged)))
    sealed[-5] ^= 1  # a flipped bit in the last segment
    await archive.store.put(damaged, iter_bytes(bytes(sealed)))
    runs = stats["ffmpeg_runs"]
    status, _, again = await _get(client, item_id, reader)
    assert status == 200 and again == png and stats["ffmpeg_runs"] == runs + 1
    item = await _item(client, item_id)
    assert object_key_of(item, KIND) != damaged and damaged not in await _stored(client)
    assert (await scrub(archive, sample=10)).ok


async def test_chats_and_other_roles_have_no_waveform(
    client: Client, clock: ManualClock,
) -> None:
    ingest = await _headers(client, clock, Role.INGEST)
    r = await client.post("/v1/transcripts", headers=ingest, json={
        "external_id": "chat-1", "started_at": "2026-11-23T09:00:00Z",
        "messages": [{"at": "2026-11-23T09:00:05Z", "from": "customer", "text": "Hello"}]})
    chat_id = (await r.json())["id"]
    status, headers, body = await _get(client, chat_id, await _headers(client, clock))
    assert status == 404 and headers["Content-Type"].startswith(PROBLEM)
    assert b"only calls have a waveform" in body
    status, _, _ = await _get(client, "00000000-0000-7000-8000-000000000000",
                              await _headers(client, clock))
    assert status == 404

    call_id = await _upload(client, clock, media.wav(1.0))
    for role, expected in ((Role.QUALITY, 200), (Role.ADMIN, 200), (Role.AUDITOR, 403),
                           (Role.INGEST, 403)):
        status, _, _ = await _get(client, call_id, await _headers(client, clock, role))
        assert status == expected, role
    status, _, _ = await _get(client, call_id, {})
    assert status == 401


@pytest.mark.parametrize("make", [media.ogg_opus, media.flac, media.mp3])
async def test_every_stored_format_can_be_drawn(
    make: Any, client: Client, clock: ManualClock,
) -> None:
    item_id = await _upload(client, clock, make(2.0), "call-fmt")
    status, _, png = await _get(client, item_id, await _headers(client, clock))
    assert status == 200
    width, height, rows = decode_png(png)
    assert (width, height) == (1200, 200) and BLUE in colours(rows)
