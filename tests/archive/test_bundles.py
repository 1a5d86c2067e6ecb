"""Evidence bundles: the streaming ZIP writer, the signing key, exports and their verification."""

import asyncio
import base64
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import threading
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from sqlmodel import select

from archive import exports, signing
from archive.errors import BadRequestError, ConfigurationError, IntegrityFailureError
from archive.exports import bundle, create_export, verify_bundle
from archive.ids import uuid7
from archive.models import AuditEvent, Export, Hold, HoldItem, Item, Tenant
from archive.service import Actor, Archive
from archive.signing import Signer
from archive.tokens import ensure_tenant
from archive.zipstream import ZipWriter, stream_zip
from ingest.audio import Transcoder
from ingest.metadata import parse_recording, parse_transcript_metadata
from ingest.service import Ingestor
from ingest.transcripts import Transcript, parse_transcript_json
from storage.base import iter_bytes
from tests.ingest import media

WHEN = datetime(2026, 11, 23, 9, 30, 12, tzinfo=UTC)
CLERK = Actor("token:clerk", "complaints")
INGEST = Actor("token:pbx", "ingest")
CALL_META = {"external_id": "call/1 é", "started_at": "2026-11-23T09:00:00Z",
             "caller_number": "020 7946 0000", "agent_id": "agent-7"}
CHAT = {"external_id": "chat-1", "started_at": "2026-11-23T10:00:00Z",
        "customer": {"name": "Ann Example", "email": "ann@example.org"},
        "messages": [{"at": "2026-11-23T10:00:05Z", "from": "customer", "name": "Ann",
                      "text": "My bin was not emptied"},
                     {"at": "2026-11-23T10:01:00Z", "from": "agent", "name": "Sam",
                      "text": "Sorry, I will book a collection\nfor tomorrow."}]}


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


def chat_text(data: bytes) -> str:
    return Transcript.from_json_bytes(data).to_text()


# -- the ZIP writer ---------------------------------------------------------------------------

async def test_zip_entries_read_back_exactly(tmp_path: Path) -> None:
    big = os.urandom(3 * 1024 * 1024 + 17)
    entries = {"README.txt": b"hello\n", "items/1-caf\u00e9/\u00e9t\u00e9 \u2603.json": b'{"a": 1}',
               "empty": b"", "items/2/big.bin": big}
    writer = ZipWriter(WHEN)
    parts = []
    for name, data in entries.items():
        parts += [p async for p in writer.add(name, iter_bytes(data, 65_521))]
    parts.append(writer.finish())
    raw = b"".join(parts)
    assert writer.offset == len(raw)
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == list(entries)
        for info in zf.infolist():
            assert zf.read(info) == entries[info.filename]
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.flag_bits & 0x0808 == 0x0808  # data descriptor, UTF-8 name
            assert info.date_time == (2026, 11, 23, 9, 30, 12)
    for entry, (name, data) in zip(writer.entries, entries.items(), strict=True):
        assert (entry.name, entry.size) == (name, len(data))
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert entry.crc32 == zlib.crc32(data)
    if shutil.which("unzip"):  # a second, independent reader
        (tmp_path / "t.zip").write_bytes(raw)
        done = await asyncio.to_thread(subprocess.run, ["unzip", "-tq", str(tmp_path / "t.zip")],
                                       capture_output=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


async def test_zip64_records_are_written() -> None:
    raw = await collect(stream_zip([("a", iter_bytes(b"abc")), ("b", iter_bytes(b"de"))], WHEN))
    # Data descriptors with 8-byte sizes.
    assert raw.count(struct.pack("<IIQQ", 0x08074B50, zlib.crc32(b"abc"), 3, 3)) == 1
    # The classic end record defers to the ZIP64 one, which the locator points at.
    end = raw[-22:]
    assert end[:4] == b"PK\x05\x06" and end[8:20] == b"\xff" * 12
    locator = raw[-42:-22]
    sig, _, end64_at, disks = struct.unpack("<IIQI", locator)
    assert (sig, disks) == (0x07064B50, 1)
    _, _, _, _, _, _, on_disk, total, cd_size, cd_at = struct.unpack(
        "<IQHHIIQQQQ", raw[end64_at:end64_at + 56])
    assert (on_disk, total) == (2, 2) and cd_at + cd_size == end64_at
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        infos = zf.infolist()
        # Sizes and offsets come from the ZIP64 extra field of each central directory entry.
        assert [(i.file_size, i.header_offset) for i in infos] == [(3, 0), (2, infos[1]
                                                                              .header_offset)]
        assert all(i.extra[:4] == struct.pack("<HH", 1, 24) for i in infos)
        assert all(i.extract_version >= 45 for i in infos)
        assert zf.read("b") == b"de"


async def test_zip_refuses_unsafe_and_repeated_names() -> None:
    for bad in ("", "/etc/passwd", "../x", "a/../b", "a//b", "a\\b", "dir/"):
        writer = ZipWriter(WHEN)
        with pytest.raises(ValueError, match="safe"):
            await collect(writer.add(bad, iter_bytes(b"x")))
    writer = ZipWriter(WHEN)
    await collect(writer.add("a", iter_bytes(b"x")))
    with pytest.raises(ValueError, match="duplicate"):
        await collect(writer.add("a", iter_bytes(b"y")))


# -- the signing key --------------------------------------------------------------------------

def test_signing_key_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing-key.pem"
    first = signing.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert b"BEGIN PRIVATE KEY" in path.read_bytes()
    again = signing.load_or_create(path)
    assert again.public_key == first.public_key and len(first.public_key) == 32
    assert first.key_id == hashlib.sha256(first.public_key).hexdigest()[:16]
    sig = first.sign(b"manifest")
    assert signing.verify(again.public_key, b"manifest", sig)
    assert not signing.verify(again.public_key, b"manifesto", sig)
    other = signing.load_or_create(tmp_path / "other.pem")
    assert not signing.verify(other.public_key, b"manifest", sig)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_processes_starting_at_once_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    barrier = threading.Barrier(8)
    found: list[str] = []

    def start() -> None:
        barrier.wait()
        found.append(signing.load_or_create(path).key_id)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 8 and len(set(found)) == 1
    assert found[0] == signing.load_or_create(path).key_id
    assert list(tmp_path.iterdir()) == [path]


def test_a_key_readable_by_others_or_not_ed25519_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    signing.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        signing.load_or_create(path)
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(ConfigurationError, match="cannot be read"):
        signing.load_or_create(path)


def test_public_keys_parse_from_base64_or_pem(tmp_path: Path) -> None:
    signer = signing.load_or_create(tmp_path / "k.pem")
    assert signing.parse_public_key(f" {signer.public_key_b64}\n") == signer.public_key
    pem = signer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert signing.parse_public_key(pem.decode()) == signer.public_key
    for bad, why in (("not base64!", "base64"), (base64.b64encode(b"short").decode(), "32")):
        with pytest.raises(ValueError, match=why):
            signing.parse_public_key(bad)


# -- exports and bundles ----------------------------------------------------------------------

async def add_tenant(archive: Archive, tenant: str, media_policy: str = "original") -> None:
    async with archive.db.session() as session:
        await ensure_tenant(session, tenant, archive.clock.now())
        row = await session.get(Tenant, tenant)
        assert row is not None
        row.media_policy = media_policy
        session.add(row)
        await session.commit()


async def store_call(archive: Archive, tenant: str, audio: bytes,
                     external_id: str = CALL_META["external_id"]) -> Item:
    ingestor = Ingestor(archive, Transcoder(), max_upload_bytes=50 * 1024 * 1024)
    result = await ingestor.recording(
        tenant=tenant, metadata=parse_recording({**CALL_META, "external_id": external_id}),
        body=iter_bytes(audio, 4096), actor=INGEST)
    return result.item


async def store_chat(archive: Archive, tenant: str) -> Item:
    transcript, rest = parse_transcript_json(CHAT)
    ingestor = Ingestor(archive, Transcoder(), max_upload_bytes=50 * 1024 * 1024)
    result = await ingestor.transcript(tenant=tenant, metadata=parse_transcript_metadata(rest),
                                       transcript=transcript, actor=INGEST)
    return result.item


async def write_bundle(archive: Archive, export: Export, signer: Signer, path: Path) -> Path:
    data = await collect(bundle(archive, export, signer, chat_text=chat_text))
    await asyncio.to_thread(path.write_bytes, data)
    return path


def rewrite(src: Path, dst: Path, *, change: dict[str, Callable[[bytes], bytes]] | None = None,
            drop: set[str] | None = None, add: dict[str, bytes] | None = None) -> Path:
    """A copy of a bundle with entries changed, dropped or added, as a tamperer would make
    it (CRCs are recomputed, so only the manifest can tell)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in (drop or set()):
                continue
            data = zin.read(info)
            if info.filename in (change or {}):
                data = (change or {})[info.filename](data)
            zout.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def flip(data: bytes) -> bytes:
    """One byte changed (the middle one; an empty file gains one)."""
    if not data:
        return b"x"
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return signing.load_or_create(tmp_path / "signing-key.pem")


@pytest.fixture
async def made(archive: Archive, signer: Signer, tmp_path: Path
               ) -> tuple[Path, Export, Item, Item, bytes]:
    """A bundle of one WAV call and one chat in tenant camden."""
    await add_tenant(archive, "camden")
    audio = media.wav(1.0)
    call = await store_call(archive, "camden", audio)
    chat = await store_chat(archive, "camden")
    export = await create_export(archive, tenant="camden", actor=CLERK, kind="evidence",
                                 purpose="Ombudsman case 22-001", item_ids=[call.id, chat.id])
    path = await write_bundle(archive, export, signer, tmp_path / "bundle.zip")
    return path, export, call, chat, audio


async def test_a_bundle_holds_every_item_and_verifies(
    archive: Archive, signer: Signer, made: tuple[Path, Export, Item, Item, bytes]
) -> None:
    path, export, call, chat, audio = made
    assert verify_bundle(path, signer.public_key) == []
    report = exports.check_bundle(path)
    assert report.ok and report.key_from_bundle and report.key_id == signer.key_id
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        call_dir, chat_dir = "items/1-call_1/", "items/2-chat-1/"
        assert names == ["README.txt",
                         f"{call_dir}recording.wav", f"{call_dir}metadata.json",
                         f"{call_dir}audit.json",
                         f"{chat_dir}transcript.json", f"{chat_dir}transcript.txt",
                         f"{chat_dir}metadata.json", f"{chat_dir}audit.json",
                         "manifest.json", "manifest.sig", "signing-key.pub"]
        assert zf.read(f"{call_dir}recording.wav") == audio
        assert zf.read(f"{chat_dir}transcript.txt").decode() == (
            "[2026-11-23 10:00:05 UTC] Customer (Ann): My bin was not emptied\n"
            "[2026-11-23 10:01:00 UTC] Agent (Sam): Sorry, I will book a collection\n"
            "    for tomorrow.\n")
        assert json.loads(zf.read(f"{chat_dir}transcript.json"))["messages"][0]["name"] == "Ann"
        meta = json.loads(zf.read(f"{call_dir}metadata.json"))
        assert meta["caller_number"] == "+442079460000" and meta["id"] == str(call.id)
        assert meta["media"]["sha256"] == hashlib.sha256(audio).hexdigest()
        trail = json.loads(zf.read(f"{call_dir}audit.json"))
        assert [e["action"] for e in trail] == ["item.ingest"]
        manifest = json.loads(zf.read("manifest.json"))
        sig = base64.b64decode(zf.read("manifest.sig"))
        assert signing.verify(signer.public_key, zf.read("manifest.json"), sig)
    assert manifest["export"] == {
        "id": str(export.id), "tenant": "camden", "kind": "evidence",
        "purpose": "Ombudsman case 22-001", "case_ref": None, "requested_by": "token:clerk",
        "role": "complaints", "created_at": export.created_at.isoformat()}
    assert manifest["signature"]["key_id"] == signer.key_id
    assert {f["path"] for f in manifest["files"]} == set(names) - {
        "manifest.json", "manifest.sig", "signing-key.pub"}
    assert manifest["items"] == [
        {"id": str(call.id), "external_id": "call/1 é", "channel": "call", "status": "active",
         "folder": call_dir},
        {"id": str(chat.id), "external_id": "chat-1", "channel": "chat", "status": "active",
         "folder": chat_dir}]


async def test_every_change_to_a_bundle_is_detected(
    signer: Signer, made: tuple[Path, Export, Item, Item, bytes], tmp_path: Path
) -> None:
    path = made[0]
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    key = signer.public_key
    for name in names:  # one byte of any file
        bad = rewrite(path, tmp_path / "x.zip", change={name: flip})
        problems = verify_bundle(bad, key)
        assert problems, name
        if name in {"manifest.json", "manifest.sig"}:
            assert any(p.startswith(("the signature in manifest.sig", name))
                       for p in problems), problems
        else:
            assert any(p.startswith(name) for p in problems), (name, problems)
    # A file removed, a file added.
    gone = rewrite(path, tmp_path / "gone.zip", drop={"items/2-chat-1/transcript.txt"})
    assert verify_bundle(gone, key) == [
        "items/2-chat-1/transcript.txt is listed in the manifest but missing"]
    extra = rewrite(path, tmp_path / "extra.zip", add={"items/2-chat-1/note.txt": b"hi"})
    assert verify_bundle(extra, key) == [
        "items/2-chat-1/note.txt is not listed in the manifest: it was added"]
    # The manifest edited to match a changed file: the signature gives it away.
    def relabel(data: bytes) -> bytes:
        manifest = json.loads(data)
        manifest["export"]["purpose"] = "something else"
        return json.dumps(manifest).encode()
    edited = rewrite(path, tmp_path / "edited.zip", change={"manifest.json": relabel})
    assert verify_bundle(edited, key) == [
        "the signature in manifest.sig does not match manifest.json: one of them was edited, "
        f"or the bundle was not signed by key {signer.key_id}"]
    unsigned = rewrite(path, tmp_path / "unsigned.zip", drop={"manifest.sig"})
    assert verify_bundle(unsigned, key) == ["manifest.sig is missing: the manifest is not signed"]
    assert "manifest.json is missing" in verify_bundle(
        rewrite(path, tmp_path / "bare.zip", drop={"manifest.json"}), key)[0]
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert "not a readable ZIP" in verify_bundle(tmp_path / "junk.zip", key)[0]


async def test_a_wrong_or_substituted_key_is_detected(
    signer: Signer, made: tuple[Path, Export, Item, Item, bytes], tmp_path: Path
) -> None:
    path = made[0]
    other = signing.load_or_create(tmp_path / "other.pem")
    problems = verify_bundle(path, other.public_key)
    assert any(f"not signed by key {other.key_id}" in p for p in problems), problems
    # A forger re-signs an edited manifest with their own key and ships that key: the bundle
    # is self-consistent, and only the independently obtained key tells.
    def forge(manifest: bytes) -> bytes:
        return manifest.replace(b"Ombudsman case 22-001", b"Routine check").replace(
            signer.key_id.encode(), other.key_id.encode())

    def resign(name: str) -> Callable[[bytes], bytes]:
        def change(data: bytes) -> bytes:
            if name == "manifest.json":
                return forge(data)
            forged = forge(data_of("manifest.json"))
            if name == "manifest.sig":
                return base64.b64encode(other.sign(forged))
            return other.public_key_b64.encode()
        return change

    def data_of(name: str) -> bytes:
        with zipfile.ZipFile(path) as zf:
            return zf.read(name)

    forged = rewrite(path, tmp_path / "forged.zip", change={
        n: resign(n) for n in ("manifest.json", "manifest.sig", "signing-key.pub")})
    report = exports.check_bundle(forged)
    assert report.ok and report.key_from_bundle and report.key_id == other.key_id
    assert verify_bundle(forged, signer.public_key) == [
        "signing-key.pub is not the public key given for the check",
        "the signature in manifest.sig does not match manifest.json: one of them was edited, "
        f"or the bundle was not signed by key {signer.key_id}",
        f"manifest.json names signing key {other.key_id}, but was checked with {signer.key_id}"]
    # A lazy forger who leaves the key id alone is caught even without an independent key.
    lazy = rewrite(path, tmp_path / "lazy.zip", change={
        "manifest.sig": lambda _: base64.b64encode(other.sign(data_of("manifest.json"))),
        "signing-key.pub": lambda _: other.public_key_b64.encode()})
    assert verify_bundle(lazy) == [
        f"manifest.json names signing key {signer.key_id}, but was checked with {other.key_id}"]


async def test_original_audio_is_included_beside_the_rendition(
    archive: Archive, signer: Signer, tmp_path: Path
) -> None:
    await add_tenant(archive, "camden", media_policy="both")
    audio = media.wav(1.0)
    call = await store_call(archive, "camden", audio)
    export = await create_export(archive, tenant="camden", actor=CLERK, kind="evidence",
                                 purpose="tribunal", item_ids=[call.id])
    path = await write_bundle(archive, export, signer, tmp_path / "b.zip")
    assert verify_bundle(path, signer.public_key) == []
    with zipfile.ZipFile(path) as zf:
        assert zf.read("items/1-call_1/original.wav") == audio
        assert zf.read("items/1-call_1/recording.opus")[:4] == b"OggS"


async def test_items_destroyed_since_the_export_are_listed_without_files(
    archive: Archive, signer: Signer, made: tuple[Path, Export, Item, Item, bytes],
    tmp_path: Path,
) -> None:
    _, export, _, chat, _ = made
    await archive.destroy("camden", chat.id, reason="erasure", actor=Actor("dpo", "privacy"))
    path = await write_bundle(archive, export, signer, tmp_path / "after.zip")
    assert verify_bundle(path, signer.public_key) == []
    with zipfile.ZipFile(path) as zf:
        assert not [n for n in zf.namelist() if n.startswith("items/2-")]
        manifest = json.loads(zf.read("manifest.json"))
        assert b"Ann" not in b"".join(zf.read(n) for n in zf.namelist())
    assert manifest["items"][1] == {"id": str(chat.id), "external_id": "chat-1",
                                    "channel": "chat", "status": "erased", "folder": None}


async def test_content_not_matching_its_ingest_hash_stops_the_bundle(
    archive: Archive, signer: Signer, made: tuple[Path, Export, Item, Item, bytes],
) -> None:
    _, export, call, _, _ = made
    async with archive.db.session() as session:
        row = await session.get(Item, call.id)
        assert row is not None
        row.sha256 = "0" * 64
        session.add(row)
        await session.commit()
    with pytest.raises(IntegrityFailureError):
        await collect(bundle(archive, export, signer, chat_text=chat_text))


async def test_export_requests_are_validated(archive: Archive) -> None:
    await add_tenant(archive, "camden")
    await add_tenant(archive, "barnet")
    mine = await store_chat(archive, "camden")
    theirs = await store_chat(archive, "barnet")

    async def refused(**kw: Any) -> dict[str, str]:
        args: dict[str, Any] = {"tenant": "camden", "actor": CLERK, "kind": "evidence",
                                "purpose": "complaint 5", **kw}
        with pytest.raises(BadRequestError) as err:
            await create_export(archive, **args)
        return {e.field: e.message for e in err.value.errors}

    assert set(await refused()) == {"item_ids", "case_ref", "query"}
    assert set(await refused(item_ids=[mine.id], case_ref="C-1")) == {"item_ids", "case_ref"}
    assert set(await refused(item_ids=[mine.id], purpose="  ")) == {"purpose"}
    assert "2000" in (await refused(item_ids=[mine.id], purpose="x" * 2001))["purpose"]
    assert (await refused(item_ids=[])) == {"item_ids": "is empty"}
    ghost = uuid7()
    assert await refused(item_ids=[mine.id, theirs.id, ghost]) == {
        "item_ids[1]": f"no item {theirs.id} in this tenant",
        "item_ids[2]": f"no item {ghost} in this tenant"}
    assert "1000" in (await refused(item_ids=[uuid7() for _ in range(1001)]))["item_ids"]
    assert "no active legal hold" in (await refused(case_ref="C-404"))["case_ref"]
    async with archive.db.session() as session:
        assert (await session.exec(select(Export))).all() == []


async def _hold(archive: Archive, tenant: str, case_ref: str, items: list[Item],
                status: str = "active") -> None:
    async with archive.db.session() as session:
        hold = Hold(id=uuid7(), tenant=tenant, case_ref=case_ref, reason="complaint",
                    status=status, placed_by="admin", placed_at=archive.clock.now())
        session.add(hold)
        await session.flush()
        for item in items:
            session.add(HoldItem(hold_id=hold.id, item_id=item.id, added_by="admin",
                                 added_at=archive.clock.now()))
        await session.commit()


async def test_export_by_case_reference_takes_the_actively_held_items(
    archive: Archive, signer: Signer, tmp_path: Path
) -> None:
    await add_tenant(archive, "camden")
    await add_tenant(archive, "barnet")
    call = await store_call(archive, "camden", media.wav(0.5))
    chat = await store_chat(archive, "camden")
    other = await store_call(archive, "camden", media.wav(0.5), external_id="call-2")
    theirs = await store_chat(archive, "barnet")
    await _hold(archive, "camden", "C-17", [call, chat])
    await _hold(archive, "camden", "C-17", [chat])  # a second hold on the same case
    await _hold(archive, "camden", "C-17", [other], status="released")
    await _hold(archive, "barnet", "C-17", [theirs])
    export = await create_export(archive, tenant="camden", actor=CLERK, kind="evidence",
                                 purpose="Ombudsman", case_ref="C-17")
    assert export.item_ids == [str(call.id), str(chat.id)]  # oldest first, each once
    assert export.case_ref == "C-17"
    path = await write_bundle(archive, export, signer, tmp_path / "c.zip")
    assert verify_bundle(path, signer.public_key) == []
    async with archive.db.session() as session:
        events = (await session.exec(select(AuditEvent).where(
            AuditEvent.action == "export.create"))).all()
    assert [e.detail for e in events] == [
        {"export_id": str(export.id), "kind": "evidence", "items": 2}]
    assert events[0].actor == "token:clerk" and events[0].tenant == "camden"


async def test_download_audit_names_the_export_and_each_item(
    archive: Archive, made: tuple[Path, Export, Item, Item, bytes]
) -> None:
    _, export, call, chat, _ = made
    await exports.record_download(archive, export, Actor("token:admin", "admin"), "tribunal")
    async with archive.db.session() as session:
        events = (await session.exec(select(AuditEvent).where(
            AuditEvent.action.in_(["export.download", "item.export"]))  # type: ignore[attr-defined]
            .order_by(AuditEvent.seq))).all()  # type: ignore[arg-type]
    assert [(e.action, e.item_id) for e in events] == [
        ("export.download", None), ("item.export", call.id), ("item.export", chat.id)]
    assert events[0].detail == {"export_id": str(export.id), "purpose": "tribunal",
                                "kind": "evidence", "items": 2}


async def test_subject_access_exports_may_be_empty_evidence_may_not(archive: Archive) -> None:
    await add_tenant(archive, "camden")
    await store_chat(archive, "camden")
    sar = await create_export(archive, tenant="camden", actor=Actor("dpo", "privacy"),
                              kind="subject-access", purpose="SAR 2026-14",
                              query={"email": "nobody@example.org"})
    assert sar.item_ids == [] and sar.kind == "subject-access"
    with pytest.raises(BadRequestError) as err:
        await create_export(archive, tenant="camden", actor=CLERK, kind="evidence",
                            purpose="complaint", query={"email": "nobody@example.org"})
    assert err.value.errors[0].field == "query"


async def test_export_by_query_takes_the_search_matches(archive: Archive) -> None:
    await add_tenant(archive, "camden")
    await add_tenant(archive, "barnet")
    chat = await store_chat(archive, "camden")
    await store_call(archive, "camden", media.wav(0.5))
    await store_chat(archive, "barnet")
    export = await create_export(archive, tenant="camden", actor=CLERK, kind="evidence",
                                 purpose="complaint", query={"email": "ANN@example.org"})
    assert export.item_ids == [str(chat.id)]
    assert export.query == {"email": "ANN@example.org"}
    with pytest.raises(BadRequestError) as err:
        await create_export(archive, tenant="camden", actor=CLERK, kind="evidence",
                            purpose="complaint", query={"colour": "red", "from": "yesterday"})
    assert {e.field for e in err.value.errors} == {"query.colour", "query.from"}


def test_names_and_extensions() -> None:
    assert exports.safe_name("../../etc/passwd") == "etc_passwd"
    assert exports.safe_name("...") == "item"
    assert exports.media_extension("audio/ogg; codecs=opus") == "opus"
    assert exports.media_extension("audio/mpeg") == "mp3"
    assert exports.media_extension("application/octet-stream") == "bin"
    assert exports.media_extension(None) == "bin"
