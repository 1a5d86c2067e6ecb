"""Bulk migration of a legacy recording archive, driven by a CSV manifest.

The manifest has a header row naming its columns: ``file`` (the recording, relative to the
archive folder), ``external_id`` and ``started_at`` are required; ``ended_at``, ``direction``,
``caller_number``, ``called_number``, ``agent_id``, ``agent_extension``, ``service``, ``queue``
and ``tags`` (separated by ``;``) are optional; any other column is refused (a misspelt column
would silently lose its data). Values are validated as the HTTP API validates them, so dates
need a UTC offset (``2011-03-04T10:15:00+00:00``).

The original dates are kept, so retention runs from when the call happened: a recording older
than its retention window is archived already expired, and the next purge pass destroys it.
Migrate only what the council still has a reason to hold.

Rows are numbered as a spreadsheet numbers them (the header is row 1). A bad row (bad metadata,
a missing file, not audio, an external id holding other content) is reported and skipped; the
run goes on. The source files are never changed or deleted: that is the operator's decision
once the migration is checked.

Resumable: with a checkpoint file, the rows archived so far are recorded in it (as ranges of
row numbers, written atomically every ``checkpoint_every`` rows and at the end), and a re-run
skips them. Rows archived after the last checkpoint of a killed run are found again as
"already archived" (ingest is idempotent by external id). Failed rows are not recorded, so a
re-run retries them. A checkpoint belongs to one manifest: if the manifest changes, start a new
checkpoint.
"""

import asyncio
import bisect
import contextlib
import csv
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TextIO

from archive.errors import ArchiveError, BadRequestError, FieldError
from archive.models import Role
from archive.service import Actor
from ingest.metadata import parse_recording
from ingest.service import Ingestor
from ingest.spool import InProgressError, file_chunks, in_progress, require_tenant

REQUIRED = ("file", "external_id", "started_at")
OPTIONAL = ("ended_at", "direction", "caller_number", "called_number", "agent_id",
            "agent_extension", "service", "queue", "tags")
CHECKPOINT_EVERY = 100
LEGACY_ACTOR = Actor("legacy-import", Role.ADMIN.value)
FIRST_ROW = 2  # the header is row 1


@dataclass(frozen=True)
class RowError:
    """A row that was not imported: its spreadsheet row number and why."""

    row: int
    reason: str


@dataclass
class ImportReport:
    rows: int = 0  # data rows in the manifest
    archived: int = 0
    already_archived: int = 0
    skipped: int = 0  # archived by an earlier run, as the checkpoint says
    failed: list[RowError] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"rows={self.rows} archived={self.archived} "
                f"already_archived={self.already_archived} skipped={self.skipped} "
                f"failed={len(self.failed)}")


class RowSet:
    """A set of row numbers kept as sorted ranges: small for a mostly sequential import."""

    def __init__(self, ranges: list[list[int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in sorted(ranges or []):
            if self._starts and start <= self._ends[-1] + 1:
                self._ends[-1] = max(self._ends[-1], end)
            else:
                self._starts.append(start)
                self._ends.append(end)

    def __contains__(self, n: object) -> bool:
        if not isinstance(n, int):
            return False
        i = bisect.bisect_right(self._starts, n) - 1
        return i >= 0 and n <= self._ends[i]

    def __len__(self) -> int:
        return sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))

    def add(self, n: int) -> None:
        if n in self:
            return
        i = bisect.bisect_right(self._starts, n)
        if i > 0 and self._ends[i - 1] == n - 1:
            self._ends[i - 1] = n
            self._merge_right(i - 1)
        elif i < len(self._starts) and self._starts[i] == n + 1:
            self._starts[i] = n
        else:
            self._starts.insert(i, n)
            self._ends.insert(i, n)

    def _merge_right(self, i: int) -> None:
        while i + 1 < len(self._starts) and self._starts[i + 1] <= self._ends[i] + 1:
            self._ends[i] = max(self._ends[i], self._ends[i + 1])
            del self._starts[i + 1], self._ends[i + 1]

    def ranges(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self._starts, self._ends, strict=True)]


# -- the checkpoint ---------------------------------------------------------------------------

def manifest_digest(manifest: Path) -> str:
    digest = hashlib.sha256()
    with manifest.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: Path, digest: str) -> RowSet:
    """The rows done by earlier runs of this manifest (none if there is no checkpoint yet)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RowSet()
    except ValueError:
        raise BadRequestError(f"checkpoint {path} is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("done"), list):
        raise BadRequestError(f"checkpoint {path} is not an import checkpoint")
    ranges = doc["done"]
    if not all(isinstance(r, list) and len(r) == 2 and all(type(n) is int for n in r)
               and r[0] <= r[1] for r in ranges):
        raise BadRequestError(f"checkpoint {path} has invalid row ranges")
    if doc.get("manifest_sha256") != digest:
        raise BadRequestError(
            f"checkpoint {path} belongs to another manifest (or this one changed since): "
            "use a new checkpoint file")
    return RowSet(ranges)


def save_checkpoint(path: Path, digest: str, done: RowSet) -> None:
    """Replace the checkpoint atomically (temp file, fsync, rename), so a kill at any moment
    leaves the old one or the new one."""
    doc = {"version": 1, "manifest_sha256": digest, "done": done.ranges()}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# -- progress ---------------------------------------------------------------------------------

class Progress:
    """A plain text progress bar: count, percent, rate and ETA. On a terminal it redraws one
    line at most four times a second; elsewhere (a log file) it writes a line every 10 s."""

    WIDTH = 30

    def __init__(self, out: TextIO | None, total: int, start: int = 0) -> None:
        self.out = out
        self.total = total
        self.start = start  # rows already done when this run began
        self.began = time.monotonic()
        self.shown = 0.0
        self.tty = bool(out is not None and out.isatty())
        self.every = 0.25 if self.tty else 10.0

    def line(self, done: int, now: float) -> str:
        fraction = done / self.total if self.total else 1.0
        filled = round(self.WIDTH * fraction)
        elapsed = max(now - self.began, 1e-9)
        rate = (done - self.start) / elapsed
        eta = _duration((self.total - done) / rate) if rate > 0 else "--:--:--"
        return (f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {done}/{self.total} "
                f"{fraction:6.1%} {rate:.1f}/s ETA {eta}")

    def update(self, done: int, *, final: bool = False) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if not final and now - self.shown < self.every:
            return
        self.shown = now
        end = "\n" if final or not self.tty else ""
        self.out.write(("\r" if self.tty else "") + self.line(done, now) + end)
        self.out.flush()


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# -- rows -------------------------------------------------------------------------------------

def source_path(folder: Path, relative: str) -> Path:
    """The recording a row names, inside ``folder``: absolute paths, ``..`` and symlinks that
    lead outside are refused."""
    if not relative:
        raise BadRequestError(errors=[FieldError("file", "is required")])
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or windows.root:
        raise BadRequestError(errors=[FieldError("file", "must be relative to the folder")])
    if ".." in posix.parts or ".." in windows.parts:
        raise BadRequestError(errors=[FieldError("file", "must not contain '..'")])
    path = folder / relative
    if not path.resolve().is_relative_to(folder.resolve()):
        raise BadRequestError(errors=[FieldError("file", "leads outside the folder")])
    return path


def row_metadata(row: dict[str, str | None]) -> dict[str, Any]:
    """The metadata a row gives, as the HTTP API would take it (empty cells left out)."""
    data: dict[str, Any] = {}
    for name in ("external_id", "started_at", *OPTIONAL):
        value = (row.get(name) or "").strip()
        if value:
            data[name] = value
    if "tags" in data:
        data["tags"] = [t.strip() for t in data["tags"].split(";") if t.strip()]
    return data


def _reason(exc: ArchiveError | OSError) -> str:
    if isinstance(exc, OSError):
        return "the file cannot be read: " + (exc.strerror or type(exc).__name__).lower()
    fields = "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
    return f"{exc.detail} ({fields})" if fields else exc.detail


def read_rows(manifest: Path) -> Iterator[tuple[int, dict[str, str | None]]]:
    """The manifest's data rows with their row numbers, after checking the header."""
    with manifest.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in columns]
        unknown = [c for c in columns if c not in (*REQUIRED, *OPTIONAL)]
        if missing or unknown:
            problems = [FieldError(c, "is a required column") for c in missing] + [
                FieldError(c, "is not a known column") for c in unknown]
            raise BadRequestError("the manifest's header is not valid", errors=problems)
        reader.fieldnames = columns
        yield from enumerate(reader, start=FIRST_ROW)


def count_rows(manifest: Path) -> int:
    return sum(1 for _ in read_rows(manifest))


# -- the import -------------------------------------------------------------------------------

class _Import:
    def __init__(self, ingestor: Ingestor, folder: Path, *, tenant: str, actor: Actor,
                 report: ImportReport, done: RowSet, save: "_Saver") -> None:
        self.ingestor = ingestor
        self.folder = folder
        self.tenant = tenant
        self.actor = actor
        self.report = report
        self.done = done
        self.save = save

    async def row(self, number: int, row: dict[str, str | None]) -> None:
        try:
            path = source_path(self.folder, (row.get("file") or "").strip())
            metadata = parse_recording(row_metadata(row))
            if await in_progress(self.ingestor, self.tenant, metadata):
                raise InProgressError(
                    "an upload of this external id is in progress, or was cut short (the "
                    "sweeper clears it); run the import again later")
            async with file_chunks(path, follow_symlinks=True) as chunks:  # checked above
                result = await self.ingestor.recording(
                    tenant=self.tenant, metadata=metadata, body=chunks, actor=self.actor)
        except (ArchiveError, OSError) as exc:
            self.report.failed.append(RowError(number, _reason(exc)))
            return
        if result.created:
            self.report.archived += 1
        else:
            self.report.already_archived += 1
        self.done.add(number)
        self.save.tick()


class _Saver:
    """Writes the checkpoint every ``every`` archived rows (and when asked)."""

    def __init__(self, path: Path | None, digest: str, done: RowSet, every: int) -> None:
        self.path = path
        self.digest = digest
        self.done = done
        self.every = every
        self.pending = 0

    def tick(self) -> None:
        self.pending += 1
        if self.pending >= self.every:
            self.now()

    def now(self) -> None:
        if self.path is not None:
            save_checkpoint(self.path, self.digest, self.done)
        self.pending = 0


async def run_import(
    ingestor: Ingestor,
    folder: Path,
    manifest: Path,
    *,
    tenant: str,
    checkpoint: Path | None,
    progress: TextIO | None,
    concurrency: int = 4,
    checkpoint_every: int = CHECKPOINT_EVERY,
    stop: asyncio.Event | None = None,
    actor: Actor = LEGACY_ACTOR,
) -> ImportReport:
    """Import every row of ``manifest`` (files under ``folder``) into ``tenant``, ``concurrency``
    rows at a time; see the module docstring. ``stop`` ends the run after the rows in hand."""
    stop = stop or asyncio.Event()
    await require_tenant(ingestor, tenant)
    report = ImportReport(rows=await asyncio.to_thread(count_rows, manifest))
    digest = await asyncio.to_thread(manifest_digest, manifest)
    done = RowSet() if checkpoint is None else await asyncio.to_thread(
        load_checkpoint, checkpoint, digest)
    saver = _Saver(checkpoint, digest, done, checkpoint_every)
    work = _Import(ingestor, folder, tenant=tenant, actor=actor, report=report, done=done,
                   save=saver)
    bar = Progress(progress, report.rows, start=len(done))
    slots = asyncio.Semaphore(concurrency)

    async def one(number: int, row: dict[str, str | None]) -> None:
        try:
            await work.row(number, row)
        finally:
            slots.release()
            bar.update(handled())

    def handled() -> int:
        return (report.skipped + report.archived + report.already_archived
                + len(report.failed))

    try:
        async with asyncio.TaskGroup() as tasks:
            for number, row in read_rows(manifest):
                if number in done:
                    report.skipped += 1
                    continue
                await slots.acquire()
                if stop.is_set():
                    slots.release()
                    break
                tasks.create_task(one(number, row))
    finally:
        saver.now()
        bar.update(handled(), final=True)
        report.failed.sort(key=lambda e: e.row)  # rows finish out of order
    return report
