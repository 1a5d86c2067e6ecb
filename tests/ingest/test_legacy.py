"""Bulk migration of a legacy archive from a CSV manifest, with the real Archive and ffmpeg."""

import asyncio
import csv
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import select

from archive.errors import BadRequestError
from archive.models import Item, ItemStatus
from archive.service import Archive
from archive.settings import Settings
from ingest.legacy import Progress, RowSet, run_import
from ingest.runtime import open_ingestor
from ingest.service import Ingestor
from tests.ingest import media
from tests.ingest.conftest import TENANT, add_tenant

HEADER = ["file", "external_id", "started_at", "ended_at", "direction", "caller_number",
          "agent_id", "service", "tags"]


def write_manifest(path: Path, rows: list[dict[str, str]],
                   header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def row(file: str, external_id: str, started_at: str = "2026-11-20T10:00:00Z",
        **extra: str) -> dict[str, str]:
    return {"file": file, "external_id": external_id, "started_at": started_at, **extra}


async def items(archive: Archive) -> list[Item]:
    async with archive.db.session() as session:
        return list((await session.exec(select(Item))).all())


async def test_a_legacy_archive_is_migrated(ingestor: Ingestor, tmp_path: Path) -> None:
    legacy = tmp_path / "legacy"
    (legacy / "2011" / "03").mkdir(parents=True)
    (legacy / "2026").mkdir()
    audio = media.wav(1.0)
    (legacy / "2011" / "03" / "old.wav").write_bytes(audio)
    (legacy / "2026" / "new.wav").write_bytes(audio)
    (legacy / "2026" / "text.wav").write_bytes(b"not audio\n" * 200)
    (tmp_path / "outside.wav").write_bytes(audio)
    manifest = write_manifest(tmp_path / "manifest.csv", [
        row("2011/03/old.wav", "old-1", "2011-03-04T10:00:00+00:00",
            ended_at="2011-03-04T10:05:00+00:00", direction="inbound",
            caller_number="020 7946 0000", tags="legacy;council-tax"),      # row 2
        row("2026/new.wav", "new-1", agent_id="a-7", service="housing"),    # row 3
        row("../outside.wav", "escape-1"),                                  # row 4
        row(str(tmp_path / "outside.wav"), "absolute-1"),                   # row 5
        row("2026/missing.wav", "missing-1"),                               # row 6
        row("2026/new.wav", "naive-1", "2011-03-04 10:00:00"),              # row 7
        row("2026/text.wav", "text-1"),                                     # row 8
    ])
    checkpoint = tmp_path / "import.checkpoint.json"
    out = io.StringIO()

    report = await run_import(ingestor, legacy, manifest, tenant=TENANT,
                              checkpoint=checkpoint, progress=out)

    assert (report.rows, report.archived, report.already_archived, report.skipped) == (
        7, 2, 0, 0)
    assert [f.row for f in report.failed] == [4, 5, 6, 7, 8]
    reasons = {f.row: f.reason for f in report.failed}
    assert "'..'" in reasons[4]
    assert "relative" in reasons[5]
    assert "cannot be read" in reasons[6]
    assert "started_at" in reasons[7]
    assert "not audio" in reasons[8]

    stored = {i.external_id: i for i in await items(ingestor.archive)}
    assert set(stored) == {"old-1", "new-1"}
    now = ingestor.archive.clock.now()
    old, new = stored["old-1"], stored["new-1"]
    assert old.status == ItemStatus.ACTIVE.value
    assert old.retain_until is not None
    assert old.retain_until < now  # expired on arrival: the next purge pass destroys it
    assert new.retain_until is not None
    assert new.retain_until > now
    assert old.tags == ["legacy", "council-tax"]
    assert old.caller_number == "+442079460000"
    # The sources are left alone.
    assert (legacy / "2011" / "03" / "old.wav").read_bytes() == audio
    assert "100.0%" in out.getvalue()
    assert "7/7" in out.getvalue()
    assert json.loads(checkpoint.read_text())["done"] == [[2, 3]]

    # A re-run skips what the checkpoint says is done and retries the failed rows.
    (legacy / "2026" / "missing.wav").write_bytes(media.wav(0.5))
    rerun = await run_import(ingestor, legacy, manifest, tenant=TENANT,
                             checkpoint=checkpoint, progress=None)
    assert (rerun.skipped, rerun.archived) == (2, 1)
    assert [f.row for f in rerun.failed] == [4, 5, 7, 8]
    assert json.loads(checkpoint.read_text())["done"] == [[2, 3], [6, 6]]
    assert len(await items(ingestor.archive)) == 3


async def test_bad_manifests_and_checkpoints_are_refused(
    ingestor: Ingestor, tmp_path: Path,
) -> None:
    bad_header = write_manifest(tmp_path / "bad.csv", [],
                                header=["file", "externalid", "started_at"])
    with pytest.raises(BadRequestError) as raised:
        await run_import(ingestor, tmp_path, bad_header, tenant=TENANT, checkpoint=None,
                         progress=None)
    assert {e.field for e in raised.value.errors} == {"external_id", "externalid"}

    good = write_manifest(tmp_path / "good.csv", [])
    other = tmp_path / "other.checkpoint.json"
    other.write_text(json.dumps({"version": 1, "manifest_sha256": "0" * 64, "done": []}))
    with pytest.raises(BadRequestError, match="another manifest"):
        await run_import(ingestor, tmp_path, good, tenant=TENANT, checkpoint=other,
                         progress=None)


def test_row_sets_merge_ranges() -> None:
    done = RowSet([[2, 4], [9, 9]])
    for n in (6, 5, 8, 7, 20):
        done.add(n)
    assert done.ranges() == [[2, 9], [20, 20]]
    assert 7 in done
    assert 10 not in done
    assert len(done) == 9


def test_progress_line_shows_count_percent_rate_and_eta() -> None:
    bar = Progress(io.StringIO(), total=200)
    line = bar.line(50, bar.began + 10.0)
    assert "50/200" in line
    assert "25.0%" in line
    assert "5.0/s" in line
    assert "ETA 0:00:30" in line
    assert line.startswith("[" + "#" * 8 + "-")


# -- killed and resumed ------------------------------------------------------------------------

IMPORTER = """
import asyncio, sys
from pathlib import Path
from archive.settings import load_settings
from ingest.legacy import run_import
from ingest.runtime import open_ingestor

async def main() -> None:
    async with open_ingestor(load_settings()) as ingestor:
        await run_import(ingestor, Path(sys.argv[1]), Path(sys.argv[2]), tenant=sys.argv[3],
                         checkpoint=Path(sys.argv[4]), progress=sys.stderr, concurrency=2,
                         checkpoint_every=3)

asyncio.run(main())
"""


def done_rows(checkpoint: Path) -> int:
    try:
        ranges = json.loads(checkpoint.read_text())["done"]
    except (FileNotFoundError, ValueError):
        return 0
    return sum(end - start + 1 for start, end in ranges)


async def test_a_killed_import_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    legacy, rows = tmp_path / "legacy", 40
    legacy.mkdir()
    for n in range(3):
        (legacy / f"{n}.wav").write_bytes(media.wav(15.0 + n, rate=16000))
    manifest = write_manifest(tmp_path / "manifest.csv", [
        row(f"{n % 3}.wav", f"call-{n:02d}", f"2012-01-{1 + n % 28:02d}T09:00:00Z")
        for n in range(rows)])
    checkpoint = tmp_path / "checkpoint.json"
    settings = Settings(data_dir=tmp_path / "var", segment_size=4096)
    async with open_ingestor(settings) as ingestor:
        await add_tenant(ingestor.archive)
        env = {**os.environ, "ARCHIVE_DATA_DIR": str(settings.data_dir),
               "ARCHIVE_SEGMENT_SIZE": "4096"}
        with (tmp_path / "import.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", IMPORTER, str(legacy), str(manifest), TENANT,
                str(checkpoint), env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if done_rows(checkpoint) >= 9 or proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        at_kill = done_rows(checkpoint)
        assert 9 <= at_kill < rows, "the import ended before it could be killed"

        # What the sweeper does with a row the killed writer left pending.
        async with ingestor.archive.db.session() as session:
            stale = (await session.exec(select(Item).where(
                Item.status == ItemStatus.PENDING.value))).all()
        for item in stale:
            await ingestor.archive._discard(item, set(item.objects or {}))

        report = await run_import(ingestor, legacy, manifest, tenant=TENANT,
                                  checkpoint=checkpoint, progress=None)
        stored = await items(ingestor.archive)

    assert report.failed == []
    assert report.skipped == at_kill
    assert report.skipped + report.archived + report.already_archived == rows
    assert sorted(i.external_id for i in stored) == [f"call-{n:02d}" for n in range(rows)]
    assert all(i.status == ItemStatus.ACTIVE.value for i in stored)
    assert json.loads(checkpoint.read_text())["done"] == [[2, rows + 1]]
