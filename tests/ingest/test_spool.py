"""The spool-folder importer, with real audio, a real ffmpeg and the real Archive."""

import asyncio
import contextlib
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from archive.models import Item, ItemStatus
from archive.service import Archive
from archive.settings import Settings
from ingest.metadata import parse_recording
from ingest.runtime import open_ingestor
from ingest.service import Ingestor
from ingest.spool import CLAIMS, SPOOL_ACTOR, run_spool
from lifecycle.sweep import sweep
from storage.base import iter_bytes
from tests.ingest import media
from tests.ingest.conftest import TENANT, add_tenant, new_ingestor


def meta(external_id: str | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"started_at": "2026-11-20T10:00:00Z",
                            "ended_at": "2026-11-20T10:00:01Z", "direction": "inbound",
                            "caller_number": "020 7946 0000", **extra}
    if external_id is not None:
        data["external_id"] = external_id
    return data


def drop(spool: Path, name: str, metadata: dict[str, Any] | str | None, audio: bytes | None,
         ext: str = "wav") -> None:
    """Write a pair the way a PBX does: the audio, then the metadata."""
    if audio is not None:
        (spool / f"{name}.{ext}").write_bytes(audio)
    if metadata is not None:
        text = metadata if isinstance(metadata, str) else json.dumps(metadata)
        (spool / f"{name}.json").write_text(text)


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    folder = tmp_path / "spool"
    folder.mkdir()
    return folder


async def items(archive: Archive) -> list[Item]:
    async with archive.db.session() as session:
        return list((await session.exec(select(Item))).all())


def recordings_left(spool: Path) -> list[str]:
    """Files still waiting in the spool, or held in a claim folder."""
    left = [p.name for p in spool.iterdir() if p.is_file()]
    claims = spool / CLAIMS
    if claims.exists():
        left += [f"{c.name}/{p.name}" for c in claims.iterdir() for p in c.iterdir()
                 if not p.name.startswith(".")]
    return left


def claim_folders(spool: Path) -> list[str]:
    return [c.name for c in (spool / CLAIMS).iterdir()] if (spool / CLAIMS).exists() else []


async def test_pairs_are_archived_and_settled(ingestor: Ingestor, spool: Path) -> None:
    audio = media.wav(1.0)
    drop(spool, "rec-1", meta("call-1"), audio)
    drop(spool, "rec-2", meta(), audio, ext="WAV")  # external_id defaults to the name
    drop(spool, "bad-meta", meta("call-3", started_at="yesterday", direction="sideways"),
         audio)
    drop(spool, "not-audio", meta("call-4"), b"this is not audio at all\n" * 100)
    drop(spool, "lone", meta("call-5"), None)
    drop(spool, "broken", "{not json", audio, ext="mp3")

    report = await run_spool(ingestor, spool, tenant=TENANT, once=True, settle=0,
                             orphan_grace=0)

    assert (report.archived, report.already_archived, report.failed, report.deferred) == (
        2, 0, 4, 0)
    stored = {i.external_id: i for i in await items(ingestor.archive)}
    assert set(stored) == {"call-1", "rec-2"}
    assert all(i.status == ItemStatus.ACTIVE.value for i in stored.values())
    done = spool / "done"
    assert sorted(p.name for p in done.iterdir()) == [
        "rec-1.json", "rec-1.receipt.json", "rec-2.json", "rec-2.receipt.json"]
    receipt = json.loads((done / "rec-1.receipt.json").read_text())
    assert receipt["item_id"] == str(stored["call-1"].id)
    assert receipt["created"] is True
    assert receipt["archived_at"]
    # The plaintext audio is gone: the archive holds the only (encrypted) copy.
    assert recordings_left(spool) == []
    assert claim_folders(spool) == []

    failed = spool / "failed"
    assert sorted(p.name for p in failed.iterdir()) == [
        "bad-meta.error.json", "bad-meta.json", "bad-meta.wav",
        "broken.error.json", "broken.json", "broken.mp3",
        "lone.error.json", "lone.json",
        "not-audio.error.json", "not-audio.json", "not-audio.wav"]
    bad = json.loads((failed / "bad-meta.error.json").read_text())
    assert bad["status"] == 400
    assert {e["field"] for e in bad["errors"]} == {"started_at", "direction"}
    assert json.loads((failed / "not-audio.error.json").read_text())["status"] == 415
    assert json.loads((failed / "broken.error.json").read_text())["errors"][0]["field"] == (
        "metadata")
    assert "no audio file" in json.loads((failed / "lone.error.json").read_text())["detail"]

    # A second pass finds nothing; the same pair dropped again is a retry, not a new item.
    again = await run_spool(ingestor, spool, tenant=TENANT, once=True, settle=0)
    assert (again.archived, again.already_archived, again.failed) == (0, 0, 0)
    drop(spool, "rec-1", meta("call-1"), audio)
    retry = await run_spool(ingestor, spool, tenant=TENANT, once=True, settle=0)
    assert (retry.archived, retry.already_archived) == (0, 1)
    assert len(await items(ingestor.archive)) == 2
    assert (done / "rec-1~2.receipt.json").exists()
    assert json.loads((done / "rec-1~2.receipt.json").read_text())["created"] is False


async def test_conflicting_content_fails_with_the_reason(ingestor: Ingestor,
                                                         spool: Path) -> None:
    drop(spool, "a", meta("call-1"), media.wav(1.0))
    await run_spool(ingestor, spool, tenant=TENANT, once=True, settle=0)
    drop(spool, "b", meta("call-1"), media.wav(2.0))
    report = await run_spool(ingestor, spool, tenant=TENANT, once=True, settle=0)
    assert report.failed == 1
    error = json.loads((spool / "failed" / "b.error.json").read_text())
    assert error["status"] == 409
    assert len(await items(ingestor.archive)) == 1


async def test_keep_audio_moves_it_to_done(ingestor: Ingestor, spool: Path) -> None:
    audio = media.wav(0.5)
    drop(spool, "rec", meta("call-1"), audio)
    report = await run_spool(ingestor, spool, tenant=TENANT, once=True, settle=0,
                             keep_audio=True)
    assert report.archived == 1
    assert (spool / "done" / "rec.wav").read_bytes() == audio


async def test_unsafe_names_are_never_touched(ingestor: Ingestor, spool: Path) -> None:
    audio = media.wav(0.5)
    outside = spool.parent / "outside.wav"
    outside.write_bytes(audio)
    (spool / "link.wav").symlink_to(outside)
    drop(spool, "link", meta("call-1"), None)
    drop(spool, ".hidden", meta("call-2"), audio)
    drop(spool, "upload", None, audio, ext="wav.part")
    (spool / "sub").mkdir()
    drop(spool / "sub", "nested", meta("call-3"), audio)

    report = await run_spool(ingestor, spool, tenant=TENANT, once=True, settle=0)

    assert (report.archived, report.failed) == (0, 0)
    assert await items(ingestor.archive) == []
    assert (spool / "link.wav").is_symlink()
    assert outside.read_bytes() == audio
    assert (spool / ".hidden.json").exists()
    assert (spool / "upload.wav.part").exists()
    assert (spool / "sub" / "nested.json").exists()


async def test_a_pair_is_taken_only_once_settled(ingestor: Ingestor, spool: Path) -> None:
    audio = media.wav(3.0)
    stop = asyncio.Event()
    task = asyncio.create_task(run_spool(ingestor, spool, tenant=TENANT, once=False,
                                         interval=0.05, settle=0.5, stop=stop))
    try:
        drop(spool, "rec", meta("call-1"), None)
        with (spool / "rec.wav").open("wb") as f:  # the PBX is still writing the audio
            for start in range(0, len(audio), len(audio) // 6):
                f.write(audio[start:start + len(audio) // 6])
                f.flush()
                await asyncio.sleep(0.2)
                assert (spool / "rec.json").exists()  # not taken while being written
        for _ in range(100):
            if (spool / "done" / "rec.receipt.json").exists():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        report = await task
    assert report.archived == 1
    (item,) = await items(ingestor.archive)
    assert item.source_size == len(audio)


async def test_two_importers_archive_each_pair_once(archive: Archive, spool: Path) -> None:
    await add_tenant(archive)
    audio = media.wav(0.5)
    for n in range(10):
        drop(spool, f"rec-{n}", meta(f"call-{n}"), audio)
    first, second = (new_ingestor(archive)
                     for _ in range(2))
    reports = await asyncio.gather(
        run_spool(first, spool, tenant=TENANT, once=True, settle=0),
        run_spool(second, spool, tenant=TENANT, once=True, settle=0))

    assert sum(r.archived for r in reports) == 10
    assert sum(r.failed + r.already_archived for r in reports) == 0
    stored = await items(archive)
    assert sorted(i.external_id for i in stored) == sorted(f"call-{n}" for n in range(10))
    assert len(list((spool / "done").glob("*.receipt.json"))) == 10
    assert recordings_left(spool) == []


def claim_folder(spool: Path, name: str) -> Path:
    """A claim folder as an importer makes it (its lock file taken by nobody)."""
    folder = spool / CLAIMS / name
    folder.mkdir(parents=True)
    (folder / ".lock").touch()
    return folder


async def test_claims_of_dead_importers_are_recovered(ingestor: Ingestor,
                                                      spool: Path) -> None:
    audio = media.wav(0.5)
    dead = claim_folder(spool, "999999-0badc0de")
    # Stored just before the kill: the item exists, the files were still claimed.
    await ingestor.recording(tenant=TENANT, metadata=parse_recording(meta("call-1")),
                             body=iter_bytes(audio), actor=SPOOL_ACTOR)
    drop(dead, "stored", meta("call-1"), audio)
    # Killed between claiming the metadata and the audio.
    drop(dead, "half", meta("call-2"), None)
    drop(spool, "half", None, audio)
    # Killed while moving out a finished recording: the receipt says it is archived.
    drop(dead, "finished", meta("call-3"), None)
    (dead / "finished.receipt.json").write_text('{"item_id": "x"}')
    # A live importer's claim is left alone.
    live = claim_folder(spool, f"{os.getpid()}-live")
    drop(live, "busy", meta("call-4"), audio)
    fd = os.open(live / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        report = await run_spool(ingestor, spool, tenant=TENANT, once=True, settle=0)
    finally:
        os.close(fd)

    assert (report.archived, report.already_archived, report.failed) == (1, 1, 0)
    done = spool / "done"
    assert sorted(p.name for p in done.iterdir()) == [
        "finished.json", "finished.receipt.json", "half.json", "half.receipt.json",
        "stored.json", "stored.receipt.json"]
    assert json.loads((done / "stored.receipt.json").read_text())["created"] is False
    assert not dead.exists()
    assert sorted(p.name for p in live.iterdir()) == [".lock", "busy.json", "busy.wav"]
    assert sorted(i.external_id for i in await items(ingestor.archive)) == [
        "call-1", "call-2"]


# -- killed and restarted ----------------------------------------------------------------------

IMPORTER = """
import asyncio, signal, sys
from pathlib import Path
from archive.settings import load_settings
from ingest.runtime import open_ingestor
from ingest.spool import run_spool

async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with open_ingestor(load_settings()) as ingestor:
        await run_spool(ingestor, Path(sys.argv[1]), tenant=sys.argv[2], once=False,
                        interval=0.05, settle=0, stop=stop)

asyncio.run(main())
"""


def start_importer(spool: Path, data_dir: Path, log: Path) -> "subprocess.Popen[bytes]":
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data_dir), "ARCHIVE_SEGMENT_SIZE": "4096"}
    # Nothing of the test's own stdin/stdout is inherited: a process left behind (an ffmpeg
    # whose importer was killed) must not hold a pipe that the test runner waits on.
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-c", IMPORTER, str(spool), TENANT],
                                env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)


async def running(spool: Path, proc: "subprocess.Popen[bytes]") -> bool:
    return proc.poll() is not None or any((spool / CLAIMS).glob(f"{proc.pid}-*"))


def holding(spool: Path, pid: int) -> bool:
    """Whether the importer with this PID holds a recording in its claim folder right now."""
    with contextlib.suppress(FileNotFoundError):
        return any(not p.name.startswith(".") for c in (spool / CLAIMS).glob(f"{pid}-*")
                   for p in c.iterdir())
    return False


async def wait_for(condition: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.005)
    return False


async def pending(archive: Archive) -> list[Item]:
    return [i for i in await items(archive) if i.status == ItemStatus.PENDING.value]


async def sweep_pending(archive: Archive) -> None:
    """The sweeper, with no grace: it removes the rows a killed writer left ``pending`` and
    any object written, so the recording can be stored again."""
    report = await sweep(archive, grace=timedelta(0))
    assert report.ok, report


async def test_importers_killed_mid_file_and_restarted(tmp_path: Path, spool: Path) -> None:
    """Two importers run at once; one of them is SIGKILLed again and again, mostly while it
    stores a recording, and restarted. In the end every recording is archived exactly once."""
    rng = random.Random(7)
    data_dir, log = tmp_path / "var", tmp_path / "importers.log"
    audio = [media.wav(40.0 + n, rate=16000) for n in range(3)]
    pairs = 40  # enough work that the importers are still busy at the fourth kill
    for n in range(pairs):
        drop(spool, f"rec-{n:02d}", meta(f"call-{n:02d}"), audio[n % 3])
    settings = Settings(data_dir=data_dir, segment_size=4096)
    async with open_ingestor(settings) as ingestor:
        archive = ingestor.archive
        await add_tenant(archive)  # the index is migrated and the keyring made before they start

        async def settled() -> bool:  # each pair done, or stuck behind a killed writer's row
            receipts = len(list((spool / "done").glob("*.receipt.json")))
            return receipts + len(await pending(archive)) >= pairs

        importers = [start_importer(spool, data_dir, log), start_importer(spool, data_dir, log)]
        kills = 0
        try:
            for _ in range(5):

                async def busy() -> bool:
                    return any(holding(spool, p.pid) for p in importers)

                if not await wait_for(busy, 20.0):
                    break  # everything was done before this kill
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                n = next((n for n, p in enumerate(importers) if holding(spool, p.pid)),
                         rng.randrange(2))
                importers[n].send_signal(signal.SIGKILL)
                await asyncio.to_thread(importers[n].wait)
                kills += 1
                importers[n] = start_importer(spool, data_dir, log)
            assert kills >= 4, "the importers finished before they could be killed"
            await wait_for(settled, 30.0)
        finally:
            for proc in importers:
                # An importer stops cleanly on SIGTERM once it runs (its claim folder exists);
                # before that, Python's default action would just end it.
                await wait_for(partial(running, spool, proc), 20.0)
                proc.send_signal(signal.SIGTERM)
            codes = [await asyncio.to_thread(proc.wait, 30) for proc in importers]
        assert codes == [0, 0], log.read_text()[-3000:]

        await sweep_pending(archive)
        await run_spool(ingestor, spool, tenant=TENANT, once=True, settle=0)
        stored = await items(archive)

    counts: dict[str, int] = {}
    for item in stored:
        assert item.status == ItemStatus.ACTIVE.value
        counts[item.external_id] = counts.get(item.external_id, 0) + 1
    assert counts == {f"call-{n:02d}": 1 for n in range(pairs)}
    assert recordings_left(spool) == []
    assert list((spool / "failed").iterdir()) == []
    assert len(list((spool / "done").glob("*.receipt.json"))) == pairs
    assert not [p for p in (spool / "done").iterdir() if not p.name.endswith(".json")]
    assert claim_folders(spool) == []
