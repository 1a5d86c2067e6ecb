"""The purge: destroy items whose retention window has passed and that no active hold keeps.

One pass first drains the object-deletion outbox (work a killed or interrupted pass left),
then repeats, until nothing expired is left (or ``stop`` is set):

1. In one write transaction, claim a batch: ``status = 'active' AND retain_until <= now`` and
   under no active hold, oldest first, locked ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so
   that any number of workers share the work without waiting for each other (SQLite has a
   single writer). The claim walks the ``(status, retain_until)`` index, so a pass with
   nothing expired costs the same whatever the archive's size.
2. In the same transaction, re-check holds for the claimed ids with a separate query (a fresh
   snapshot under READ COMMITTED) and drop any now held: a hold committed after the claim
   began is seen, and one still being written has the item's row locked (the foreign key of
   ``hold_items``), so SKIP LOCKED left it out of the claim.
3. Destroy them with set-based statements: status ``purged``, wrapped key (crypto-shredding)
   and personal fields NULL, earlier versions deleted, one ``Destruction`` each, every object
   key queued in the outbox, one ``item.purge`` audit event each; commit.
4. Delete those objects from the store and dequeue them.

A worker killed anywhere leaves either an unchanged item (its transaction rolls back; the next
pass destroys it) or a destroyed item with queued deletions (the next pass drains them). An
item is never destroyed twice: the claim takes only active items, and ``destructions.item_id``
is unique.
"""

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from archive import audit, deletions
from archive.ids import uuid7
from archive.models import (
    PERSONAL_FIELDS,
    AuditEvent,
    Destruction,
    Hold,
    HoldItem,
    Item,
    ItemStatus,
    ItemVersion,
)
from archive.reviews import delete_reviews
from archive.search import under_active_hold
from archive.service import Actor, Archive, object_keys

log = logging.getLogger(__name__)

LIFECYCLE = Actor("lifecycle", "system")
REASON = "retention"


@dataclass
class PurgeReport:
    """What one purge pass did."""

    destroyed: int = 0
    objects_deleted: int = 0
    failures: int = 0  # object deletions that failed; they stay queued for the next pass
    kept_by_hold: int = 0  # claimed, then found held by the re-check
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.destroyed / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        text = (f"purge: {self.destroyed} item(s) destroyed, {self.objects_deleted} object(s) "
                f"deleted, {self.failures} deletion failure(s)")
        if self.failures:
            text += " (queued for the next pass)"
        if self.kept_by_hold:
            text += f", {self.kept_by_hold} kept by a hold placed during the pass"
        return text + f" in {self.seconds:.2f} s ({self.rate:.0f} items/s)"


@dataclass
class ProcessTotals:
    """What the purge passes of this process have done since it started: a monotonic count
    for metrics (``archive_purged_items_total``), whichever worker or command ran them."""

    destroyed: int = 0


TOTALS = ProcessTotals()


def claim(now: datetime, batch_size: int) -> SelectOfScalar[Item]:
    """The claim of one batch: expired, active, under no active hold, oldest first, skipping
    rows another worker holds. It walks ``ix_items_expiry (status, retain_until)``: with
    nothing expired it reads one index page, whatever the archive's size."""
    return (select(Item)
            .where(Item.status == ItemStatus.ACTIVE.value, col(Item.retain_until) <= now,
                   ~under_active_hold())
            .order_by(col(Item.retain_until))
            .limit(batch_size)
            .with_for_update(skip_locked=True, of=Item))


async def purge_pass(
    archive: Archive, *, batch_size: int, stop: asyncio.Event | None = None,
) -> PurgeReport:
    """Destroy every expired, unheld item, ``batch_size`` per transaction; see the module
    docstring. ``stop`` ends the pass after the current batch."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = PurgeReport()
    started = time.perf_counter()
    deleted, failed = await deletions.drain(archive.db, archive.store)
    report.objects_deleted += deleted
    report.failures += failed
    while stop is None or not stop.is_set():
        destroyed, kept, keys = await _destroy_batch(archive, batch_size)
        report.destroyed += destroyed
        TOTALS.destroyed += destroyed
        report.kept_by_hold += kept
        if keys:
            deleted, failed = await deletions.drain(archive.db, archive.store, keys=keys)
            report.objects_deleted += deleted
            report.failures += failed
        if destroyed + kept == 0:
            break
    report.seconds = time.perf_counter() - started
    if report.destroyed or report.failures:
        log.info("%s", report)
    return report


async def _destroy_batch(archive: Archive, batch_size: int) -> tuple[int, int, list[str]]:
    """Claim and destroy one batch in one transaction; return how many items were destroyed,
    how many the re-check found held, and the object keys queued for deletion."""
    now = archive.clock.now()
    async with archive.db.session() as session:
        claimed = list((await session.exec(claim(now, batch_size))).all())
        if not claimed:
            return 0, 0, []
        ids = [row.id for row in claimed]
        held = set((await session.exec(
            select(HoldItem.item_id).join(Hold, col(Hold.id) == col(HoldItem.hold_id))
            .where(col(HoldItem.item_id).in_(ids), Hold.status == "active"))).all())
        rows = [row for row in claimed if row.id not in held]
        if not rows:
            return 0, len(held), []
        ids = [row.id for row in rows]
        await session.exec(
            sa.update(Item).where(col(Item.id).in_(ids))
            .values(status=ItemStatus.PURGED.value, wrapped_key=None, kek_id=None,
                    updated_at=now, **{name: sa.null() for name in PERSONAL_FIELDS})
            .execution_options(synchronize_session=False))
        # Earlier versions (rectifications) hold personal data; quality reviews assess the
        # contact. Both go in this same transaction. (Samples keep only the ids drawn.)
        await session.exec(sa.delete(ItemVersion).where(col(ItemVersion.item_id).in_(ids))
                           .execution_options(synchronize_session=False))
        await delete_reviews(session, ids)
        records: list[dict[str, Any]] = []
        events: list[AuditEvent] = []
        keys_by_tenant: dict[str, list[str]] = {}
        for row in rows:
            record_id = uuid7()
            records.append({
                "id": record_id, "item_id": row.id, "tenant": row.tenant,
                "channel": row.channel, "reason": REASON,
                "retention_basis": row.retention_basis, "retain_until": row.retain_until,
                "destroyed_at": now, "stored_sha256": row.sha256, "actor": LIFECYCLE.name})
            events.append(_event(row.tenant, row.id, record_id, now))
            if row.object_key is not None:
                keys_by_tenant.setdefault(row.tenant, []).extend(object_keys(row))
        connection = await session.connection()
        await connection.execute(sa.insert(Destruction), records)
        for tenant, tenant_keys in keys_by_tenant.items():
            await deletions.queue(session, tenant, tenant_keys, now)
        await audit.append_many(session, events)
        await session.commit()
    return len(rows), len(held), [k for keys in keys_by_tenant.values() for k in keys]


def _event(tenant: str, item_id: uuid.UUID, destruction_id: uuid.UUID, now: datetime) -> AuditEvent:
    return AuditEvent(tenant=tenant, at=now, actor=LIFECYCLE.name, role=LIFECYCLE.role,
                      action="item.purge", item_id=item_id,
                      detail={"destruction_id": str(destruction_id), "reason": REASON},
                      seq=0, prev_hash="", hash="")  # the chain's fields: set by append_many
