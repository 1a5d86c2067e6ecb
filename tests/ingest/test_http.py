"""Pushing calls and chats through the HTTP API, with real audio and a real ffmpeg."""

import asyncio
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient
from sqlmodel import select

from archive.clock import ManualClock
from archive.models import Item, Role
from archive.settings import Settings
from ingest.audio import Transcoder
from storage.base import iter_bytes, read_all
from tests.conftest import Client
from tests.helpers import bearer, make_token, set_media_policy
from tests.ingest import media
from web.app import create_app
from web.keys import ARCHIVE, DATABASE

META = {"external_id": "call-1", "started_at": "2026-11-23T09:00:00Z",
        "ended_at": "2026-11-23T09:00:03+00:00", "direction": "inbound",
        "caller_number": "020 7946 0000", "called_number": "+44 (0)1632 960001",
        "agent_id": "agent-7", "service": "council-tax", "tags": ["first-contact"]}


async def _token(client: Client, clock: ManualClock, role: Role = Role.INGEST,
                 tenant: str = "camden") -> dict[str, str]:
    return bearer(await make_token(client.app[DATABASE], tenant, role, clock.now()))


def _form(metadata: dict[str, Any] | str, audio: bytes | None,
          filename: str = "call.wav") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("metadata", metadata if isinstance(metadata, str) else json.dumps(metadata),
                   content_type="application/json")
    if audio is not None:
        form.add_field("audio", audio, filename=filename,
                       content_type="application/octet-stream")
    return form


async def _post(client: Client, headers: dict[str, str], audio: bytes | None,
                metadata: dict[str, Any] | str = META) -> tuple[int, dict[str, Any]]:
    r = await client.post("/v1/recordings", data=_form(metadata, audio), headers=headers)
    return r.status, await r.json()


async def _items(client: Client) -> list[Item]:
    async with client.app[DATABASE].session() as session:
        return list((await session.exec(select(Item))).all())


async def _stored_bytes(client: Client, item_id: str, kind: str = "media") -> bytes:
    archive = client.app[ARCHIVE]
    item = await archive.get("camden", uuid.UUID(item_id))
    return await read_all(archive.read(item, kind=kind))


async def _assert_nothing_left(client: Client, settings: Settings) -> None:
    assert await _items(client) == []
    store = client.app[ARCHIVE].store
    assert [i.key async for i in store.list("")] == []
    assert list((settings.data_dir / "store" / "tmp").iterdir()) == []


def _files_holding(root: Path, sample: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and sample in p.read_bytes()]


async def test_wav_round_trips_exactly_with_normalised_metadata(
    client: Client, clock: ManualClock,
) -> None:
    headers = await _token(client, clock)
    audio = media.wav(3.0)
    r = await client.post("/v1/recordings", data=_form(META, audio), headers=headers)
    body = await r.json()
    assert r.status == 201, body
    assert r.headers["Location"] == f"/v1/items/{body['id']}"
    assert body["caller_number"] == "+442079460000"
    assert body["called_number"] == "+441632960001"
    assert body["channel"] == "call" and body["status"] == "active"
    assert body["media"]["type"] == "audio/wav"
    assert body["media"]["codec"] == "pcm_s16le"
    assert body["media"]["sample_rate"] == 8000 and body["media"]["channels"] == 1
    assert abs(body["duration"] - 3.0) < 0.1
    assert body["retention"]["retain_until"].startswith("2027-11-23")
    assert await _stored_bytes(client, body["id"]) == audio


@pytest.mark.parametrize(("make", "codec", "channels"), [
    (lambda: media.wav(2.0, channels=2), "pcm_s16le", 2),
    (lambda: media.mp3(2.0), "mp3", 1),
    (lambda: media.gsm(2.0), "gsm", 1),
    (lambda: media.ogg_opus(2.0), "opus", 1),
])
async def test_common_telephony_formats_are_kept_as_received(
    client: Client, clock: ManualClock, make: Any, codec: str, channels: int,
) -> None:
    headers = await _token(client, clock)
    audio = make()
    status, body = await _post(client, headers, audio)
    assert status == 201, body
    assert body["media"]["codec"] == codec
    assert body["media"]["channels"] == channels
    assert abs(body["media"]["duration"] - 2.0) < 0.15
    assert await _stored_bytes(client, body["id"]) == audio


async def test_opus_policy_stores_a_smaller_decodable_rendition(
    client: Client, clock: ManualClock,
) -> None:
    headers = await _token(client, clock)
    await set_media_policy(client.app[DATABASE], "opus")
    audio = media.wav(10.0)
    status, body = await _post(client, headers, audio)
    assert status == 201, body
    assert body["media"]["type"].startswith("audio/ogg")
    stored = await _stored_bytes(client, body["id"])
    assert len(stored) * 5 < len(audio)
    facts = await Transcoder().probe(iter_bytes(stored))
    assert facts.codec == "opus" and abs(facts.duration - 10.0) < 0.1


async def test_both_policy_keeps_the_original_beside_the_rendition(
    client: Client, clock: ManualClock,
) -> None:
    headers = await _token(client, clock)
    await set_media_policy(client.app[DATABASE], "both")
    audio = media.mp3(4.0)
    status, body = await _post(client, headers, audio)
    assert status == 201, body
    assert await _stored_bytes(client, body["id"], "original") == audio
    rendition = await _stored_bytes(client, body["id"])
    assert (await Transcoder().probe(iter_bytes(rendition))).codec == "opus"


@pytest.mark.parametrize("policy", ["original", "opus", "both"])
async def test_card_payment_ranges_are_silent_in_everything_stored(
    client: Client, clock: ManualClock, policy: str,
) -> None:
    headers = await _token(client, clock)
    await set_media_policy(client.app[DATABASE], policy)
    audio = media.wav(6.0)
    meta = {**META, "pci_redactions": [{"start": 2.0, "end": 4.0}]}
    status, body = await _post(client, headers, audio, meta)
    assert status == 201, body
    kinds = ["media", "original"] if policy == "both" else ["media"]
    for kind in kinds:
        stored = await _stored_bytes(client, body["id"], kind)
        assert stored != audio  # the original bytes hold the card digits: never kept
        assert media.level_db(stored, 2.1, 3.9).max_db <= -90, kind
        assert media.level_db(stored, 0.2, 1.8).mean_db > -40, kind
        assert media.level_db(stored, 4.2, 5.8).mean_db > -40, kind
    assert body["media"]["pci_silenced"] == [[2.0, 4.0]]


async def test_raw_put_with_header_or_query_metadata(client: Client, clock: ManualClock) -> None:
    headers = await _token(client, clock)
    audio = media.wav(1.0)
    meta = {k: v for k, v in META.items() if k != "external_id"}
    r = await client.put("/v1/recordings/pbx-123", data=audio,
                         headers={**headers, "X-Archive-Metadata": json.dumps(meta)})
    body = await r.json()
    assert r.status == 201, body
    assert body["external_id"] == "pbx-123" and body["caller_number"] == "+442079460000"
    assert await _stored_bytes(client, body["id"]) == audio
    r = await client.put("/v1/recordings/pbx-124", data=audio, headers=headers, params={
        "started_at": "2026-11-23T10:00:00+00:00", "caller_number": "07700 900123",
        "tags": "a,b", "pci_redactions": "0.2-0.4"})
    body = await r.json()
    assert r.status == 201, body
    assert body["caller_number"] == "+447700900123" and body["tags"] == ["a", "b"]
    r = await client.put("/v1/recordings/pbx-125", data=audio,
                         headers={**headers, "X-Archive-Metadata": json.dumps(
                             {**meta, "external_id": "other"})})
    assert r.status == 400
    assert (await r.json())["errors"][0]["field"] == "external_id"


async def test_retries_are_idempotent_and_changes_conflict(
    client: Client, clock: ManualClock,
) -> None:
    headers = await _token(client, clock)
    audio = media.wav(1.0)
    first, body = await _post(client, headers, audio)
    again, body2 = await _post(client, headers, audio)
    assert (first, again) == (201, 200)
    assert body2["id"] == body["id"]
    changed_audio, problem = await _post(client, headers, media.wav(1.5))
    assert changed_audio == 409 and "different content" in problem["detail"]
    changed_meta, _ = await _post(client, headers, audio, {**META, "agent_id": "agent-8"})
    assert changed_meta == 409
    assert len(await _items(client)) == 1


async def test_concurrent_retries_create_one_item(client: Client, clock: ManualClock) -> None:
    headers = await _token(client, clock)
    audio = media.wav(2.0)
    results = await asyncio.gather(*(_post(client, headers, audio) for _ in range(5)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [200, 200, 200, 200, 201], results
    assert len({b["id"] for _, b in results}) == 1
    assert len(await _items(client)) == 1


async def test_bad_metadata_names_every_field_and_stores_nothing(
    client: Client, clock: ManualClock, settings: Settings,
) -> None:
    headers = await _token(client, clock)
    bad = {"started_at": "2026-11-23 09:00", "caller_number": "call me", "direction": "up",
           "colour": "red", "pci_redactions": [{"start": 5, "end": 1}]}
    status, body = await _post(client, headers, media.wav(1.0), bad)
    assert status == 400
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"external_id", "started_at", "caller_number", "direction", "colour",
                      "pci_redactions"}
    status, body = await _post(client, headers, media.wav(1.0), "{not json")
    assert status == 400 and body["errors"][0]["field"] == "metadata"
    status, body = await _post(client, headers, None)
    assert status == 400 and body["errors"][0]["field"] == "audio"
    r = await client.post("/v1/recordings", data=media.wav(1.0), headers=headers)
    assert r.status == 415
    await _assert_nothing_left(client, settings)


@pytest.mark.parametrize(("make", "status"), [
    (media.not_audio, 415),
    (lambda: media.random_bytes(50_000), 415),
    (media.video, 415),
    (lambda: b"", 422),
    (lambda: media.truncated(media.mp3(3.0), 40), 422),
])
async def test_bad_media_gets_its_error_and_leaves_nothing(
    client: Client, clock: ManualClock, settings: Settings, make: Any, status: int,
) -> None:
    headers = await _token(client, clock)
    got, body = await _post(client, headers, make())
    assert got == status, body
    assert body["status"] == status and body["detail"]
    await _assert_nothing_left(client, settings)


async def test_oversize_upload_is_413_and_leaves_nothing(
    settings: Settings, clock: ManualClock, aiohttp_client: AiohttpClient,
) -> None:
    small: Client = await aiohttp_client(create_app(replace(settings, max_upload_bytes=20_000),
                                                    clock=clock))
    headers = await _token(small, clock)
    status, body = await _post(small, headers, media.wav(3.0))
    assert status == 413, body
    await _assert_nothing_left(small, settings)


async def test_client_that_disconnects_midway_leaves_nothing(
    client: Client, clock: ManualClock, settings: Settings,
) -> None:
    headers = await _token(client, clock)
    audio = media.wav(30.0)
    host, port = client.server.host, client.server.port
    _, writer = await asyncio.open_connection(host, port)
    head = (f"PUT /v1/recordings/cut-1?started_at=2026-11-23T09:00:00Z HTTP/1.1\r\n"
            f"Host: {host}\r\nAuthorization: {headers['Authorization']}\r\n"
            f"Content-Length: {len(audio)}\r\n\r\n")
    writer.write(head.encode() + audio[: len(audio) // 2])
    await writer.drain()
    await asyncio.sleep(0.5)
    writer.close()
    await writer.wait_closed()
    for _ in range(50):  # the server notices the disconnect and rolls back
        await asyncio.sleep(0.1)
        if not await _items(client):
            break
    await _assert_nothing_left(client, settings)


async def test_no_plaintext_audio_reaches_local_disk(
    client: Client, clock: ManualClock, settings: Settings,
) -> None:
    headers = await _token(client, clock)
    for policy in ("original", "opus", "both"):
        await set_media_policy(client.app[DATABASE], policy)
        audio = media.wav(2.0)
        meta = {**META, "external_id": f"plain-{policy}"}
        status, _ = await _post(client, headers, audio, meta)
        assert status == 201
        sample = audio[2000:2064]  # 32 PCM samples from the middle of the recording
        assert await asyncio.to_thread(_files_holding, settings.data_dir, sample) == []


async def test_only_ingest_and_admin_may_push(client: Client, clock: ManualClock) -> None:
    for role, expected in [(Role.COMPLAINTS, 403), (Role.QUALITY, 403), (Role.AUDITOR, 403),
                           (Role.ADMIN, 201)]:
        headers = await _token(client, clock, role)
        status, _ = await _post(client, headers, media.wav(0.5),
                                {**META, "external_id": f"r-{role}"})
        assert status == expected, role
    status, _ = await _post(client, {}, media.wav(0.5))
    assert status == 401


# -- transcripts ------------------------------------------------------------------------------

CHAT: dict[str, Any] = {
    "external_id": "chat-1", "started_at": "2026-11-23T09:00:00Z",
    "ended_at": "2026-11-23T09:10:00Z", "agent_id": "agent-3", "service": "housing",
    "customer": {"name": "Ann Example", "email": "Ann@Example.org", "postcode": "sw1a1aa"},
    "messages": [
        {"at": "2026-11-23T09:00:05Z", "from": "bot", "text": "How can we help?"},
        {"at": "2026-11-23T09:01:00.123456Z", "from": "customer", "name": "Ann",
         "text": "I paid with 4111 1111 1111 1111, CVV 123, but it failed"},
        {"at": "2026-11-23T09:02:00Z", "from": "agent", "name": "Sam",
         "text": "Sorry about that. Please never send card numbers here."},
    ],
}


async def _stored_chat(client: Client, item_id: str) -> dict[str, Any]:
    return json.loads(await _stored_bytes(client, item_id))  # type: ignore[no-any-return]


async def test_json_transcript_is_stored_redacted_in_order(
    client: Client, clock: ManualClock,
) -> None:
    headers = await _token(client, clock)
    r = await client.post("/v1/transcripts", json=CHAT, headers=headers)
    body = await r.json()
    assert r.status == 201, body
    assert body["channel"] == "chat"
    assert body["customer"] == {"name": "Ann Example", "email": "ann@example.org",
                                "postcode": "SW1A 1AA"}
    stored = await _stored_chat(client, body["id"])
    texts = [m["text"] for m in stored["messages"]]
    assert texts[0] == "How can we help?"
    assert "4111" not in json.dumps(stored) and "123" not in texts[1]
    assert [m["at"] for m in stored["messages"]] == [
        "2026-11-23T09:00:05Z", "2026-11-23T09:01:00.123456Z", "2026-11-23T09:02:00Z"]
    assert stored["redactions"] == {"cards": 1, "security_codes": 1}
    again = await client.post("/v1/transcripts", json=CHAT, headers=headers)
    assert again.status == 200 and (await again.json())["id"] == body["id"]
    changed = {**CHAT, "messages": CHAT["messages"][:2]}
    assert (await client.post("/v1/transcripts", json=changed, headers=headers)).status == 409


async def test_plain_text_transcript(client: Client, clock: ManualClock) -> None:
    headers = await _token(client, clock)
    text = ("[2026-11-23 09:00:05] Bot: How can we help?\n"
            "[2026-11-23 09:01:00] Customer (Ann): My bin was not collected\n"
            "it was due on Monday\n"
            "[2026-11-23 09:02:00] Agent (Sam): I will book a collection\n")
    meta = {"external_id": "chat-txt", "started_at": "2026-11-23T09:00:00Z",
            "customer": {"name": "Ann Example", "postcode": "N1 9GU"}}
    r = await client.post("/v1/transcripts", data=text.encode(),
                          headers={**headers, "Content-Type": "text/plain; charset=utf-8",
                                   "X-Archive-Metadata": json.dumps(meta)})
    body = await r.json()
    assert r.status == 201, body
    stored = await _stored_chat(client, body["id"])
    assert [m["from"] for m in stored["messages"]] == ["bot", "customer", "agent"]
    assert stored["messages"][1]["text"] == "My bin was not collected\nit was due on Monday"


async def test_bad_transcripts(client: Client, clock: ManualClock, settings: Settings) -> None:
    headers = await _token(client, clock)
    bad = {**CHAT, "started_at": "yesterday", "customer": {"email": "nope"},
           "messages": [{"at": "2026-11-23T09:00:05", "from": "robot", "text": "hi"}]}
    r = await client.post("/v1/transcripts", json=bad, headers=headers)
    body = await r.json()
    assert r.status == 400
    fields = {e["field"] for e in body["errors"]}
    assert {"started_at", "customer.email", "messages[0].at", "messages[0].from"} <= fields
    r = await client.post("/v1/transcripts", data=b"<xml/>",
                          headers={**headers, "Content-Type": "application/xml"})
    assert r.status == 415
    r = await client.post("/v1/transcripts", data=b"{", headers={
        **headers, "Content-Type": "application/json"})
    assert r.status == 400
    await _assert_nothing_left(client, settings)


async def test_transcript_size_limit(
    settings: Settings, clock: ManualClock, aiohttp_client: AiohttpClient,
) -> None:
    small: Client = await aiohttp_client(create_app(
        replace(settings, max_transcript_bytes=1000), clock=clock))
    headers = await _token(small, clock)
    big = {**CHAT, "messages": [{**CHAT["messages"][0], "text": "x" * 2000}]}
    r = await small.post("/v1/transcripts", json=big, headers=headers)
    assert r.status == 413
