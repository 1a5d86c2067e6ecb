"""The sweeper: what crashes and failures leave behind, and what is missing.

1. Pending items created more than ``grace`` ago (an upload that crashed or was abandoned):
   the row, its hold memberships and every object whose key starts with its object key.
2. The object-deletion outbox is drained (deletions a store outage or a crash left queued).
3. Objects older than ``grace`` that no item needs (no item, a destroyed item, or an object an
   item no longer names, such as the one anonymisation replaced) are deleted. Younger ones may
   belong to an upload or a replacement in progress, and are left alone.
4. Readable items whose objects are absent from the store are reported.

Steps 3 and 4 are one merge of two streams in the same key order: the store's listing (byte
order) and the keys the index needs (sorted ``COLLATE "C"`` on PostgreSQL, SQLite's binary
order, which is the same), so memory stays bounded whatever the archive's size. Every orphan
and every missing object the merge finds is checked again against the index (and the store)
before anything is deleted or reported, so a race with ingest or purge, or a listing out of
order, cannot delete an object an item needs.
"""

import asyncio
import heapq
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import load_only
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from archive import deletions
from archive.deletions import item_id_of
from archive.models import HoldItem, Item, ItemStatus, ItemVersion
from archive.service import Archive, object_keys

log = logging.getLogger(__name__)

PENDING_BATCH = 100
ORPHAN_BATCH = 500
CHECK_BATCH = 200
MAX_REPORTED = 10_000  # missing item ids kept in a report (the count goes on)
_MERGE_COLUMNS = ("id", "status", "object_key", "objects", "wrapped_key")
READABLE = (ItemStatus.ACTIVE.value, ItemStatus.ANONYMISED.value)


@dataclass
class SweepReport:
    """What one sweep did and found."""

    pending_removed: int = 0
    drained: int = 0  # queued deletions completed
    orphans_deleted: int = 0
    failures: int = 0  # object deletions that failed; they stay queued
    objects_seen: int = 0
    missing: list[uuid.UUID] = field(default_factory=list)  # readable items lacking an object
    missing_count: int = 0  # all of them, when more than MAX_REPORTED
    stopped: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.missing_count and not self.failures

    def __str__(self) -> str:
        text = (f"sweep: {self.pending_removed} abandoned upload(s) removed, {self.drained} "
                f"queued deletion(s) done, {self.orphans_deleted} orphan object(s) deleted, "
                f"{self.failures} deletion failure(s), {self.objects_seen} object(s) listed, "
                f"{self.missing_count} item(s) with a missing object")
        if self.stopped:
            text += " (stopped early)"
        text += f" in {self.seconds:.2f} s"
        for item_id in self.missing:
            text += f"\n  missing object: item {item_id}"
        if self.missing_count > len(self.missing):
            text += f"\n  ... and {self.missing_count - len(self.missing)} more"
        return text

    def add_missing(self, item_id: uuid.UUID) -> None:
        self.missing_count += 1
        if len(self.missing) < MAX_REPORTED:
            self.missing.append(item_id)


async def sweep(
    archive: Archive, *, grace: timedelta, stop: asyncio.Event | None = None,
) -> SweepReport:
    """One sweep (see the module docstring); ``stop`` ends it early, between batches."""
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    report = SweepReport()
    started = time.perf_counter()
    cutoff = archive.clock.now() - grace
    await _remove_pending(archive, cutoff, report, stop)
    done, failed = await deletions.drain(archive.db, archive.store)
    report.drained += done
    report.failures += failed
    if stop is None or not stop.is_set():
        await _Merge(archive, cutoff, report, stop).run()
    report.stopped = stop is not None and stop.is_set()
    report.seconds = time.perf_counter() - started
    log.info("sweep: %d pending removed, %d queued deletions done, %d orphans deleted, "
             "%d failures, %d objects listed, %d items missing an object",
             report.pending_removed, report.drained, report.orphans_deleted, report.failures,
             report.objects_seen, report.missing_count)
    return report


async def _remove_pending(archive: Archive, cutoff: datetime, report: SweepReport,
                          stop: asyncio.Event | None) -> None:
    """Step 1: remove each pending item created before ``cutoff``: the row (only if still
    pending, in case its upload finished meanwhile) and its hold memberships in one
    transaction that also queues its objects; then delete the objects."""
    after = uuid.UUID(int=0)
    while stop is None or not stop.is_set():
        async with archive.db.reader() as session:
            batch = list((await session.exec(
                select(Item.id, Item.tenant, Item.object_key)
                .where(Item.status == ItemStatus.PENDING.value, col(Item.created_at) < cutoff,
                       col(Item.id) > after)
                .order_by(col(Item.id)).limit(PENDING_BATCH))).all())
        if not batch:
            return
        after = batch[-1][0]
        found = {item_id: [info.key async for info in archive.store.list(key)] if key else []
                 for item_id, _, key in batch}
        queued: list[str] = []
        now = archive.clock.now()
        async with archive.db.session() as session:
            connection = await session.connection()
            for item_id, tenant, _ in batch:
                still = (await session.exec(select(Item.id).where(
                    col(Item.id) == item_id, col(Item.status) == ItemStatus.PENDING.value,
                    col(Item.created_at) < cutoff).with_for_update())).first()
                if still is None:  # its upload finished (or it went) meanwhile: not ours
                    continue
                for table in (HoldItem, ItemVersion):
                    await connection.execute(sa.delete(table).where(
                        col(table.item_id) == item_id))
                await connection.execute(sa.delete(Item).where(col(Item.id) == item_id))
                report.pending_removed += 1
                await deletions.queue(session, tenant, found[item_id], now)
                queued += found[item_id]
            await session.commit()
        done, failed = await deletions.drain(archive.db, archive.store, keys=queued)
        report.drained += done
        report.failures += failed


class _Merge:
    """Steps 3 and 4: the store's listing merged with the keys the index needs."""

    def __init__(self, archive: Archive, cutoff: datetime, report: SweepReport,
                 stop: asyncio.Event | None) -> None:
        self.archive = archive
        self.cutoff = cutoff
        self.report = report
        self.stop = stop
        self.orphans: list[str] = []
        self.absent: list[tuple[uuid.UUID, str]] = []

    async def run(self) -> None:
        async with self.archive.db.reader() as session:
            needed = _needed_keys(session, self.archive.db.is_sqlite)
            want = await anext(needed, None)
            pending_prefix: str | None = None  # objects of an upload in progress
            previous = ""
            async for blob in self.archive.store.list(""):
                if blob.key <= previous and previous:
                    raise RuntimeError("the store did not list its objects in key order; "
                                       "sweep stopped")
                previous = blob.key
                self.report.objects_seen += 1
                while want is not None and want[0] <= blob.key:
                    key, item_id, is_prefix = want
                    if is_prefix:
                        pending_prefix = key
                    elif key != blob.key:
                        await self._absent(item_id, key)
                    want = await anext(needed, None)
                    if key == blob.key:
                        break
                else:
                    if not (pending_prefix and blob.key.startswith(pending_prefix)) and (
                            blob.modified < self.cutoff):
                        await self._orphan(blob.key)
                if self.stop is not None and self.stop.is_set():
                    break
            else:
                while want is not None:
                    key, item_id, is_prefix = want
                    if not is_prefix:
                        await self._absent(item_id, key)
                    want = await anext(needed, None)
        await self._flush_orphans()
        await self._flush_absent()

    async def _orphan(self, key: str) -> None:
        self.orphans.append(key)
        if len(self.orphans) >= ORPHAN_BATCH:
            await self._flush_orphans()

    async def _absent(self, item_id: uuid.UUID, key: str) -> None:
        self.absent.append((item_id, key))
        if len(self.absent) >= CHECK_BATCH:
            await self._flush_absent()

    async def _flush_orphans(self) -> None:
        """Check the candidates against the index again, then delete through the outbox."""
        keys, self.orphans = self.orphans, []
        if not keys:
            return
        ids = {item_id for key in keys if (item_id := item_id_of(key)) is not None}
        items = await _items(self.archive, ids)
        doomed = [key for key in keys
                  if not _needs(items.get(item_id_of(key) or uuid.UUID(int=0)), key)]
        if not doomed:
            return
        now = self.archive.clock.now()
        by_tenant: dict[str, list[str]] = {}
        for key in doomed:
            by_tenant.setdefault(key.partition("/")[0][:63], []).append(key)
        async with self.archive.db.session() as session:
            for tenant, tenant_keys in by_tenant.items():
                await deletions.queue(session, tenant, tenant_keys, now)
            await session.commit()
        done, failed = await deletions.drain(self.archive.db, self.archive.store, keys=doomed)
        self.report.orphans_deleted += done
        self.report.failures += failed

    async def _flush_absent(self) -> None:
        """Report items still readable whose object the store still does not have."""
        candidates, self.absent = self.absent, []
        if not candidates:
            return
        items = await _items(self.archive, {item_id for item_id, _ in candidates})
        reported: set[uuid.UUID] = set()
        for item_id, key in candidates:
            item = items.get(item_id)
            if item_id in reported or item is None or not _readable(item) or (
                    key not in object_keys(item)):
                continue
            if await self.archive.store.stat(key) is None:
                reported.add(item_id)
                self.report.add_missing(item_id)


async def _needed_keys(session: AsyncSession, sqlite: bool
                       ) -> AsyncIterator[tuple[str, uuid.UUID, bool]]:
    """Every key the index needs, in byte order: ``(key, item id, False)`` for each object of
    a readable item, ``(object_key, item id, True)`` for a pending item (any object under that
    prefix belongs to an upload in progress)."""
    order = col(Item.object_key) if sqlite else col(Item.object_key).collate("C")
    stmt = (select(Item)
            .options(load_only(*(getattr(Item, name) for name in _MERGE_COLUMNS)))
            .where(col(Item.object_key).is_not(None),
                   col(Item.status).in_([*READABLE, ItemStatus.PENDING.value]))
            .order_by(order).execution_options(yield_per=2000))
    heap: list[tuple[str, uuid.UUID, bool]] = []
    previous = ""
    result = await session.stream(stmt)
    async for (item,) in result:
        assert item.object_key is not None
        if item.object_key < previous:
            raise RuntimeError("the index did not sort object keys in byte order; "
                               "sweep stopped")
        previous = item.object_key
        # Every key still to come is >= this object key: what sorts before it is final.
        while heap and heap[0][0] < item.object_key:
            yield heapq.heappop(heap)
        if item.status == ItemStatus.PENDING.value:
            heapq.heappush(heap, (item.object_key, item.id, True))
        elif _readable(item):
            for key in object_keys(item):
                heapq.heappush(heap, (key, item.id, False))
        session.expunge(item)  # keep the identity map from growing with the stream
    while heap:
        yield heapq.heappop(heap)


async def _items(archive: Archive, ids: set[uuid.UUID]) -> dict[uuid.UUID, Item]:
    if not ids:
        return {}
    async with archive.db.reader() as session:
        rows = (await session.exec(select(Item).where(col(Item.id).in_(ids)))).all()
    return {item.id: item for item in rows}


def _readable(item: Item) -> bool:
    return item.status in READABLE and item.wrapped_key is not None


def _needs(item: Item | None, key: str) -> bool:
    """Whether ``item`` (as the index has it now) needs the object at ``key``."""
    if item is None or item.object_key is None:
        return False
    if item.status == ItemStatus.PENDING.value:
        return key.startswith(item.object_key)
    return _readable(item) and key in object_keys(item)
