"""The spool-folder importer, for telephony systems (PBXes) that drop files in a folder.

A recording is a pair in the folder: ``NAME.<audio ext>`` (wav, mp3, gsm, ogg, opus, flac,
m4a... any extension but ``.json``) and ``NAME.json``, the metadata the HTTP API takes
(``external_id`` defaults to ``NAME``). A pair is taken once both files exist and neither has
changed for ``settle`` seconds (the later of a file's mtime and ctime counts, so a copy that
sets an old mtime still looks fresh). Writers that cannot finish a file in one go should write
it under a name starting with ``.`` (or ending in ``.part``/``.tmp``) and rename it when done:
such names are never touched, nor are symlinks, subfolders, anything but regular files, or
stems ending in ``.receipt``/``.error`` (the importer's own markers).

What becomes of a pair:

- archived: ``NAME.json`` moves to ``done/`` beside ``NAME.receipt.json`` (item id, time), and
  the audio file is DELETED: the archive keeps recordings encrypted, and a plaintext copy in
  ``done/`` would defeat that. ``keep_audio=True`` moves it to ``done/`` instead (for a trial
  run; then ``done/`` needs the same protection as the recordings themselves).
- failed (bad metadata, not audio, undecodable, too large, a conflicting external id): both
  files move to ``failed/`` beside ``NAME.error.json`` (``status``, ``title``, ``detail`` and the
  field ``errors``). A file whose partner has not arrived after ``orphan_grace`` seconds (an
  hour by default) fails the same way.
- deferred (the index or the store is unavailable, or another upload of the same external id is
  in progress): the pair goes back to the folder and is tried again on a later pass.

If ``done/NAME.*`` is taken by an earlier recording of the same name, ``NAME~2`` is used, etc.

Exactly once, with several importers on one folder, any of them killed at any moment:

- Each importer owns a claim folder ``.claimed/<pid>-<random>/`` holding an exclusive
  ``flock`` on its ``.lock`` file for its whole life. The kernel drops the lock when the process
  dies, even by SIGKILL, so a claim folder whose lock can be taken belongs to a dead importer
  (unlike a PID check, this cannot be fooled by PID reuse, common in containers).
- A pair is claimed by renaming ``NAME.json`` into the claim folder. Rename is atomic, so of
  two importers exactly one succeeds; the other gets ``FileNotFoundError`` and moves on. The
  claimant then moves the audio in too.
- The outcome is recorded in the claim folder first (``NAME.receipt.json`` or
  ``NAME.error.json``), then the files are moved out, the marker last.
- Each pass first takes the lock of every dead importer's claim folder. Files with a marker are
  finished as the marker says; the rest go back to the folder and are taken again. Ingest is
  idempotent by external id, so a pair whose item was stored just before the kill comes back as
  "already archived" and is finished then.

A kill in the middle of storing an item leaves a ``pending`` row in the index; the sweeper
removes it, and until then the pair is deferred rather than waiting on it.

The folders must be on one local POSIX filesystem (renames, hard links and ``flock``). Logs
carry counts and item ids only: file names and metadata may hold phone numbers or names.
"""

import asyncio
import contextlib
import enum
import errno
import fcntl
import itertools
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from archive.errors import (
    ArchiveError,
    BadRequestError,
    ConfigurationError,
    FieldError,
    NotFoundError,
    UnavailableError,
)
from archive.models import Channel, ItemStatus, Role, Tenant
from archive.service import Actor
from ingest.metadata import ContactMetadata, parse_recording
from ingest.service import Ingestor, IngestResult

log = logging.getLogger(__name__)

CLAIMS = ".claimed"
DONE = "done"
FAILED = "failed"
LOCK = ".lock"
RECEIPT = ".receipt.json"
ERROR = ".error.json"
MAX_METADATA = 64 * 1024
CHUNK = 256 * 1024
ORPHAN_GRACE = 3600.0
STALE_NEW_CLAIM = 60.0  # seconds after which a half-made claim folder is removed
PARTIAL_SUFFIXES = frozenset({"part", "partial", "tmp", "filepart", "crdownload"})
# Stems the importer's own marker files end with: never taken from the spool, so a
# ``*.receipt.json`` or ``*.error.json`` in a claim folder is always a marker.
MARKER_STEMS = (".receipt", ".error")
SPOOL_ACTOR = Actor("spool-importer", Role.INGEST.value)


@dataclass
class SpoolReport:
    """What a run did: recordings archived, found archived already (retries), failed (moved
    aside with the reason), and deferred (put back for a later pass)."""

    archived: int = 0
    already_archived: int = 0
    failed: int = 0
    deferred: int = 0

    def count(self, outcome: "Outcome | None") -> None:
        if outcome is not None:
            name = outcome.value
            setattr(self, name, getattr(self, name) + 1)

    def settled(self) -> int:
        """Recordings done with, either way (deferrals repeat, so they are not counted)."""
        return self.archived + self.already_archived + self.failed

    def __str__(self) -> str:
        return (f"archived={self.archived} already_archived={self.already_archived} "
                f"failed={self.failed} deferred={self.deferred}")


class Outcome(enum.Enum):
    """The fate of one recording, named as the ``SpoolReport`` field it counts in."""

    ARCHIVED = "archived"
    ALREADY = "already_archived"
    FAILED = "failed"
    DEFERRED = "deferred"


# -- shared with the S3-drop importer --------------------------------------------------------

def parse_metadata_json(raw: bytes, default_id: str) -> ContactMetadata:
    """The metadata of a dropped recording; ``external_id`` defaults to the file's stem."""
    if len(raw) > MAX_METADATA:
        raise BadRequestError(errors=[FieldError(
            "metadata", f"is larger than {MAX_METADATA} bytes")])
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(errors=[FieldError(
            "metadata", f"is not valid JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise BadRequestError(errors=[FieldError("metadata", "must be a JSON object")])
    if data.get("external_id") in (None, ""):
        data["external_id"] = default_id
    return parse_recording(data)


def is_transient(exc: ArchiveError) -> bool:
    """Whether trying again later may succeed (503, 507...) rather than the input being bad."""
    return exc.status >= 500


def error_document(exc: ArchiveError, at: datetime) -> dict[str, Any]:
    return {"status": exc.status, "title": exc.title, "detail": exc.detail,
            "errors": [{"field": e.field, "message": e.message} for e in exc.errors],
            "failed_at": at.isoformat()}


def receipt_document(item_id: str, external_id: str, created: bool,
                     at: datetime) -> dict[str, Any]:
    return {"item_id": item_id, "external_id": external_id, "created": created,
            "archived_at": at.isoformat()}


class InProgressError(UnavailableError):
    """Another upload of this external id is in progress; try again later."""


async def require_tenant(ingestor: Ingestor, tenant: str) -> None:
    """Refuse to start for a tenant that does not exist (every item would fail)."""
    async with ingestor.archive.db.session() as session:
        if await session.get(Tenant, tenant) is None:
            raise NotFoundError(
                f"tenant {tenant!r} does not exist; create it with 'archive tenants create'")


async def in_progress(ingestor: Ingestor, tenant: str, metadata: ContactMetadata) -> bool:
    """Whether an item of this external id is being written (a ``pending`` row): by a
    concurrent upload, or left by a killed importer for the sweeper. Such a recording is
    deferred instead of waiting on it."""
    item = await ingestor.archive.find_external(tenant, Channel.CALL, metadata.external_id)
    return item is not None and item.status == ItemStatus.PENDING.value


# -- the folder ------------------------------------------------------------------------------

@dataclass
class _Group:
    """The files of one stem found in the spool: its metadata and its audio file(s)."""

    stem: str
    metadata: str | None = None
    audio: list[str] = field(default_factory=list)
    ages: dict[str, float] = field(default_factory=dict)

    def names(self) -> list[str]:
        """The metadata first: it is the claim token."""
        return ([self.metadata] if self.metadata else []) + sorted(self.audio)

    def youngest(self) -> float:
        return min(self.ages.values())


def split_name(name: str) -> tuple[str, str] | None:
    """``(stem, extension)`` of a name the importer may touch, else ``None``: no hidden names,
    no separators, no extensionless or partial files, no stems like our markers'."""
    if name.startswith(".") or "/" in name or os.sep in name or "\0" in name:
        return None
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext or ext.lower() in PARTIAL_SUFFIXES:
        return None
    if stem.lower().endswith(MARKER_STEMS):
        return None
    return stem, ext.lower()


def _is_metadata(name: str) -> bool:
    return name.lower().endswith(".json")


def _regular_age(entry: os.DirEntry[str], now: float) -> float | None:
    """Seconds since a regular file last changed; ``None`` for anything else (symlinks too)."""
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return now - max(st.st_mtime, st.st_ctime)


def scan(folder: Path, now: float) -> dict[str, _Group]:
    """The recordings' files in ``folder``, grouped by stem."""
    groups: dict[str, _Group] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            parts = split_name(entry.name)
            age = _regular_age(entry, now) if parts else None
            if parts is None or age is None:
                continue
            group = groups.setdefault(parts[0], _Group(parts[0]))
            if parts[1] == "json":
                group.metadata = entry.name
            else:
                group.audio.append(entry.name)
            group.ages[entry.name] = age
    return groups


def _claimed_anywhere(claims: Path, stem: str) -> bool:
    """Whether a file of ``stem`` sits in some importer's claim folder (its partner is being
    processed or recovered, so a lone file in the spool is not an orphan)."""
    for folder in _claim_folders(claims.parent):
        with contextlib.suppress(FileNotFoundError):
            if any((split_name(f.name) or ("",))[0] == stem for f in folder.iterdir()):
                return True
    return False


def _write_json(folder: Path, name: str, doc: Mapping[str, Any]) -> None:
    """Write ``folder/name`` whole or not at all (temp file, fsync, rename)."""
    tmp = folder / f".tmp-{secrets.token_hex(6)}"
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(folder / name)


def _move_no_clobber(src: Path, dest: Path) -> bool:
    """Move ``src`` to ``dest`` unless another file holds that name; True once moved.

    A hard link then an unlink: a kill between the two leaves both names on one inode, which
    the next attempt recognises and completes."""
    try:
        os.link(src, dest)
    except FileExistsError:
        if not _same_file(src, dest):
            return False
    except FileNotFoundError:
        return not src.exists()  # moved by a concurrent recoverer: nothing left to move
    with contextlib.suppress(FileNotFoundError):
        src.unlink()
    return True


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except FileNotFoundError:
        return False


def _reserve(marker: Path, folder: Path, stem: str, suffix: str) -> str:
    """A stem under which ``folder`` can take this recording's files, claimed by hard-linking
    ``marker`` there (``NAME``, else ``NAME~2``, ``NAME~3``...). A marker linked before a kill
    is recognised, so a retry reuses its stem."""
    for n in itertools.count(1):
        target = stem if n == 1 else f"{stem}~{n}"
        try:
            os.link(marker, folder / (target + suffix))
        except FileExistsError:
            if _same_file(marker, folder / (target + suffix)):
                return target
            continue
        return target
    raise AssertionError("unreachable")


def _finish(where: Path, outdir: Path, stem: str, marker_suffix: str, *,
            keep: list[str], drop: list[str]) -> None:
    """Move a settled recording out of a claim folder: delete ``drop``, move ``keep`` and the
    marker to ``outdir`` under a free stem. The marker goes last, so a kill leaves a claim
    folder that says what is left to do."""
    for name in drop:
        with contextlib.suppress(FileNotFoundError):
            (where / name).unlink()
    marker = where / (stem + marker_suffix)
    target = _reserve(marker, outdir, stem, marker_suffix)
    for name in keep:
        ext = name[len(stem):]
        with contextlib.suppress(FileNotFoundError):
            (where / name).replace(outdir / (target + ext))
    marker.unlink()


class Claim:
    """This importer's claim folder ``.claimed/<pid>-<random>/``, locked for its life."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.claims = spool / CLAIMS
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        # Made under a hidden name and renamed once locked, so no other importer ever sees
        # this folder unlocked.
        fresh = self.claims / f".new-{token}"
        fresh.mkdir(parents=True)
        self._fd = os.open(fresh / LOCK, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = self.claims / token
        fresh.rename(self.path)

    def take(self, names: list[str]) -> list[str]:
        """Move ``names`` from the spool into the claim, the first being the token: if another
        importer took it first, nothing is taken. Returns the names taken."""
        taken: list[str] = []
        for name in names:
            try:
                (self.spool / name).rename(self.path / name)
            except FileNotFoundError:
                if not taken:
                    return []
                continue  # removed by someone else meanwhile; the group is judged without it
            taken.append(name)
        return taken

    def close(self, keep_audio: bool) -> None:
        """Give back what is still claimed and remove the folder (on a clean exit, or on
        cancellation)."""
        release(self.path, self.spool, keep_audio)
        remove_claim_folder(self.path, self._fd)


def release(where: Path, spool: Path, keep_audio: bool) -> None:
    """Settle every file in a claim folder: finish what has a marker, give the rest back."""
    try:
        names = sorted(f.name for f in where.iterdir() if not f.name.startswith("."))
    except FileNotFoundError:
        return
    groups: dict[str, list[str]] = {}
    for name in names:
        if name.endswith((RECEIPT, ERROR)):
            stem = name.removesuffix(RECEIPT).removesuffix(ERROR)
        else:
            stem = name.rpartition(".")[0] or name
        groups.setdefault(stem, []).append(name)
    for stem, files in groups.items():
        _release_group(where, spool, stem, files, keep_audio)


def _release_group(where: Path, spool: Path, stem: str, files: list[str],
                   keep_audio: bool) -> None:
    data = [n for n in files if not n.endswith((RECEIPT, ERROR))]
    if stem + RECEIPT in files:
        audio = [n for n in data if not _is_metadata(n)]
        keep = data if keep_audio else [n for n in data if _is_metadata(n)]
        _finish(where, spool / DONE, stem, RECEIPT, keep=keep,
                drop=[] if keep_audio else audio)
        return
    if stem + ERROR in files:
        _finish(where, spool / FAILED, stem, ERROR, keep=data, drop=[])
        return
    give_back(where, spool, stem, data)


def give_back(where: Path, spool: Path, stem: str, names: list[str]) -> None:
    """Return claimed files to the spool, the metadata (the claim token) last. A name taken in
    the spool meanwhile (a new file of the same name) sends this one to ``failed/``."""
    clashes = [n for n in sorted(names, key=_is_metadata)
               if not _move_no_clobber(where / n, spool / n)]
    if clashes:
        doc = {"status": 409, "title": "Conflict",
               "detail": "a file of the same name arrived in the spool while this one was "
                         "being processed", "errors": []}
        _write_json(where, stem + ERROR, doc)
        _finish(where, spool / FAILED, stem, ERROR, keep=clashes, drop=[])


def remove_claim_folder(path: Path, fd: int) -> None:
    """Delete an emptied claim folder; its lock is released last, so nobody else can take it
    for a dead one while it is being removed. A folder still holding a recording keeps its
    lock file, so the next recovery tries again."""
    try:
        for tmp in path.glob(".tmp-*"):
            tmp.unlink()
        if any(not p.name.startswith(".") for p in path.iterdir()):
            log.warning("spool: a claim folder could not be emptied; the next pass retries")
            return
        (path / LOCK).unlink()
        path.rmdir()
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def _lock_if_dead(folder: Path) -> int | None:
    """The lock of a claim folder whose owner is dead, now held by us; ``None`` if the owner
    lives (or the folder is gone or not a claim)."""
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def recover_dead_claims(spool: Path, keep_audio: bool, now: float) -> int:
    """Settle the claim folders of importers that died; returns how many were recovered."""
    recovered = 0
    for path in _claim_folders(spool):
        if path.name.startswith(".new-") and now - _mtime(path) < STALE_NEW_CLAIM:
            continue  # being made by a starting importer
        fd = _lock_if_dead(path)
        if fd is None:
            if not (path / LOCK).exists():  # a removal cut short: the folder is empty
                with contextlib.suppress(OSError):
                    path.rmdir()
            continue
        release(path, spool, keep_audio)
        remove_claim_folder(path, fd)
        recovered += 1
    return recovered


def _claim_folders(spool: Path) -> list[Path]:
    try:
        with os.scandir(spool / CLAIMS) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


# -- reading claimed files -------------------------------------------------------------------

def open_regular(path: Path, *, follow_symlinks: bool = False) -> int:
    """Open a file only if it is a regular file: not a symlink (unless ``follow_symlinks``),
    and not a FIFO or device, which could block a reader forever (hence ``O_NONBLOCK``, which
    regular files ignore)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    not_regular = BadRequestError(errors=[FieldError("file", "is not a regular file")])
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink
            raise not_regular from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise not_regular
    return fd


def read_metadata_file(path: Path) -> bytes:
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_METADATA + 1)


@contextlib.asynccontextmanager
async def file_chunks(path: Path, *, chunk: int = CHUNK, follow_symlinks: bool = False
                      ) -> AsyncIterator[AsyncIterator[bytes]]:
    """The file's bytes as a stream, read in a thread; the file is closed on leaving."""
    fd = await asyncio.to_thread(open_regular, path, follow_symlinks=follow_symlinks)
    f = os.fdopen(fd, "rb")

    async def chunks() -> AsyncGenerator[bytes, None]:
        while data := await asyncio.to_thread(f.read, chunk):
            yield data

    stream = chunks()
    try:
        yield stream
    finally:
        await stream.aclose()
        f.close()


# -- the importer ----------------------------------------------------------------------------

class _Spool:
    def __init__(self, ingestor: Ingestor, folder: Path, claim: Claim, *, tenant: str,
                 settle: float, orphan_grace: float, keep_audio: bool, actor: Actor) -> None:
        self.ingestor = ingestor
        self.folder = folder
        self.claim = claim
        self.tenant = tenant
        self.settle = settle
        self.orphan_grace = orphan_grace
        self.keep_audio = keep_audio
        self.actor = actor

    def now(self) -> datetime:
        return self.ingestor.archive.clock.now()

    async def one_pass(self, report: SpoolReport, stop: asyncio.Event) -> None:
        recovered = await asyncio.to_thread(
            recover_dead_claims, self.folder, self.keep_audio, time.time())
        if recovered:
            log.info("spool: recovered %d claim folder(s) of stopped importers", recovered)
        groups = await asyncio.to_thread(scan, self.folder, time.time())
        for group in sorted(groups.values(), key=lambda g: (-g.youngest(), g.stem)):
            if stop.is_set():
                return
            report.count(await self.take(group))

    async def take(self, group: _Group) -> Outcome | None:
        """Process the group if it is ready: a settled pair, or a lone file past the grace."""
        if group.metadata and group.audio:
            if group.youngest() < self.settle:
                return None
            taken = self.claim.take(group.names())
            return await self.process(group.stem, taken) if taken else None
        if group.youngest() < self.orphan_grace:
            return None
        if _claimed_anywhere(self.claim.claims, group.stem):
            return None
        taken = self.claim.take(group.names())
        if not taken:
            return None
        why = "has no audio file beside it" if group.metadata else "has no NAME.json beside it"
        return self.fail(group.stem, taken, BadRequestError(
            f"the recording {why} after {self.orphan_grace:g} seconds"))

    async def process(self, stem: str, taken: list[str]) -> Outcome:
        """Ingest a claimed pair and settle its files."""
        meta, audio = taken[0], taken[1:]
        if not audio or not _is_metadata(meta):  # a partner vanished meanwhile
            give_back(self.claim.path, self.folder, stem, taken)
            return Outcome.DEFERRED
        if len(audio) > 1:
            return self.fail(stem, taken, BadRequestError(
                "several audio files share the name; keep one"))
        try:
            result = await self.ingest(stem, meta, audio[0])
        except (ArchiveError, OSError) as exc:
            return self.settle_error(stem, taken, exc)
        item = result.item
        _write_json(self.claim.path, stem + RECEIPT, receipt_document(
            str(item.id), item.external_id, result.created, self.now()))
        _release_group(self.claim.path, self.folder, stem, [*taken, stem + RECEIPT],
                       self.keep_audio)
        log.info("spool: %s item %s", "archived" if result.created else "already had",
                 item.id)
        return Outcome.ARCHIVED if result.created else Outcome.ALREADY

    async def ingest(self, stem: str, meta: str, audio: str) -> IngestResult:
        raw = await asyncio.to_thread(read_metadata_file, self.claim.path / meta)
        metadata = parse_metadata_json(raw, stem)
        if await in_progress(self.ingestor, self.tenant, metadata):
            raise InProgressError
        async with file_chunks(self.claim.path / audio) as chunks:
            return await self.ingestor.recording(
                tenant=self.tenant, metadata=metadata, body=chunks, actor=self.actor)

    def settle_error(self, stem: str, taken: list[str], exc: ArchiveError | OSError
                     ) -> Outcome:
        """A bad recording fails; one that may work later (the index, the store or the file
        unavailable) goes back to the spool."""
        if isinstance(exc, ArchiveError) and not is_transient(exc):
            return self.fail(stem, taken, exc)
        if isinstance(exc, InProgressError):
            log.debug("spool: deferred a recording (being written elsewhere)")
        else:
            why = f"{exc.status} {exc.title}" if isinstance(exc, ArchiveError) else (
                type(exc).__name__)
            log.warning("spool: deferred a recording (%s)", why)
        give_back(self.claim.path, self.folder, stem, taken)
        return Outcome.DEFERRED

    def fail(self, stem: str, taken: list[str], exc: ArchiveError) -> Outcome:
        log.warning("spool: a recording failed (%s %s); see failed/", exc.status, exc.title)
        _write_json(self.claim.path, stem + ERROR, error_document(exc, self.now()))
        _finish(self.claim.path, self.folder / FAILED, stem, ERROR, keep=taken, drop=[])
        return Outcome.FAILED


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ConfigurationError(f"spool folder {folder} does not exist")
    for sub in (DONE, FAILED, CLAIMS):
        (folder / sub).mkdir(exist_ok=True)


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_spool(
    ingestor: Ingestor,
    folder: Path,
    *,
    tenant: str,
    once: bool,
    interval: float = 2.0,
    settle: float = 2.0,
    keep_audio: bool = False,
    stop: asyncio.Event | None = None,
    orphan_grace: float = ORPHAN_GRACE,
    actor: Actor = SPOOL_ACTOR,
) -> SpoolReport:
    """Import the recordings dropped in ``folder`` into ``tenant``: one pass if ``once``, else
    a pass every ``interval`` seconds until ``stop`` is set. See the module docstring."""
    stop = stop or asyncio.Event()
    await require_tenant(ingestor, tenant)
    await asyncio.to_thread(_check_folder, folder)
    claim = await asyncio.to_thread(Claim, folder)
    spool = _Spool(ingestor, folder, claim, tenant=tenant, settle=settle,
                   orphan_grace=orphan_grace, keep_audio=keep_audio, actor=actor)
    report = SpoolReport()
    try:
        while True:
            before = report.settled()
            await spool.one_pass(report, stop)
            if report.settled() != before:
                log.info("spool: %s", report)
            if once or stop.is_set():
                return report
            await _sleep_until(stop, interval)
            if stop.is_set():
                return report
    finally:
        claim.close(keep_audio)  # quick renames; done inline so cancellation cannot skip it

