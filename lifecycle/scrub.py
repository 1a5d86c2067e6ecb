"""The integrity scrub: decrypt a random sample of items and re-hash what comes out.

Every object of each sampled item (its media and each further kind) is read through the
archive, as a user's download would be: authenticated segment by segment, then its size and
SHA-256 compared with what the index recorded at ingest. Bit rot, truncation, an object
swapped for another item's, a missing object or a lost key-encryption key all show up, by
item id (never by content).
"""

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlmodel import col, select

from archive.errors import BadRequestError, FieldError, IntegrityFailureError
from archive.models import Item, ItemStatus
from archive.service import MEDIA, Archive, object_key_of
from storage.errors import BlobNotFoundError

log = logging.getLogger(__name__)

CONCURRENCY = 4
READABLE = (ItemStatus.ACTIVE.value, ItemStatus.ANONYMISED.value)


@dataclass(frozen=True)
class Problem:
    item_id: uuid.UUID
    kind: str  # which object of the item: "media" or a further kind
    what: str  # "missing", "authentication failed", "size mismatch", ...

    def __str__(self) -> str:
        return f"item {self.item_id} ({self.kind}): {self.what}"


@dataclass
class ScrubReport:
    """What one scrub checked and found."""

    items: int = 0
    objects: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        verdict = "all intact" if self.ok else f"{len(self.problems)} problem(s)"
        lines = [f"scrub: {self.items} item(s), {self.objects} object(s), {self.bytes} bytes "
                 f"decrypted and re-hashed in {self.seconds:.2f} s: {verdict}"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


async def scrub(archive: Archive, *, sample: int) -> ScrubReport:
    """Check ``sample`` random readable items (fewer if the archive has fewer)."""
    if sample < 1:
        raise BadRequestError("the sample must be at least one item",
                              errors=[FieldError("sample", "must be at least 1")])
    started = time.perf_counter()
    report = ScrubReport()
    async with archive.db.reader() as session:
        items = list((await session.exec(
            select(Item).where(col(Item.status).in_(READABLE),
                               col(Item.wrapped_key).is_not(None))
            .order_by(sa.func.random()).limit(sample))).all())
    limiter = asyncio.Semaphore(CONCURRENCY)

    async def check(item: Item) -> None:
        async with limiter:
            for kind in sorted({MEDIA, *(item.objects or {})}):
                await _check_object(archive, item, kind, report)

    await asyncio.gather(*(check(item) for item in items))
    report.items = len(items)
    report.problems.sort(key=lambda p: (str(p.item_id), p.kind))
    report.seconds = time.perf_counter() - started
    log.info("scrub: %d items, %d objects checked, %d problems", report.items, report.objects,
             len(report.problems))
    return report


async def _check_object(archive: Archive, item: Item, kind: str, report: ScrubReport) -> None:
    if kind == MEDIA:
        size, digest = item.plain_size, item.sha256
    else:
        facts = (item.objects or {}).get(kind, {})
        size, digest = facts.get("size"), facts.get("sha256")
    report.objects += 1

    def problem(what: str) -> None:
        report.problems.append(Problem(item.id, kind, what))

    if await archive.store.stat(object_key_of(item, kind)) is None:
        problem("missing from the store")
        return
    hasher = hashlib.sha256()
    read = 0
    try:
        async for chunk in archive.read(item, kind=kind):
            hasher.update(chunk)
            read += len(chunk)
    except IntegrityFailureError as exc:
        gone = isinstance(exc.__cause__, BlobNotFoundError)
        problem("missing from the store" if gone else
                "authentication failed (altered, truncated or swapped)")
        return
    except Exception as exc:  # noqa: BLE001  (reported by type; the scrub goes on)
        problem(f"could not be read: {type(exc).__name__}")
        return
    finally:
        report.bytes += read
    if size is not None and read != size:
        problem(f"size mismatch: {read} bytes, the index says {size}")
    if digest is not None and hasher.hexdigest() != digest:
        problem("SHA-256 mismatch")
