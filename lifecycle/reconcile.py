"""The reconciler: make the store's object-level legal holds (S3 Object Lock) follow the index.

The index is the authority: an item is held while it is under an active hold, and its objects
should then carry the store's legal hold, and otherwise not. Placing and releasing holds set and
clear the locks after their commit; what they could not do (the store was unavailable, a race)
is left as drift between ``items.object_lock`` and the holds, which a pass here repairs:

- items under an active hold whose ``object_lock`` is false get the lock set;
- items whose ``object_lock`` is true and that are under no active hold get it cleared (a
  destroyed item has it cleared from any object of it still in the store, and the flag reset).

With ``verify``, every object of every held or locked item is also read back from the store
(``stat``), and any object whose legal hold disagrees with the index is set right: this finds
locks that someone cleared, or set, through the S3 API behind the archive's back.

Work goes in batches of items by id, with bounded concurrency towards the store; a failure is
counted and left for the next pass, never stops the pass.
"""

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select

from archive.errors import ArchiveError
from archive.models import Item
from archive.search import under_active_hold
from archive.service import Archive, object_keys
from lifecycle.holds import (
    for_each,
    held_ids,
    is_held,
    set_lock_flag,
    settle_object_lock,
)
from storage.errors import StorageError

log = logging.getLogger(__name__)

BATCH = 500


@dataclass
class ReconcileReport:
    """What one pass did."""

    supported: bool = True  # the store enforces legal holds
    verify: bool = False
    locks_set: int = 0
    locks_cleared: int = 0
    objects_checked: int = 0  # with verify: objects read back from the store
    repaired: int = 0  # with verify: items whose objects disagreed with the index
    missing: int = 0  # with verify: objects of held or locked items not in the store
    failures: int = 0

    def __str__(self) -> str:
        if not self.supported:
            return ("reconcile: the object store has no Object Lock; nothing to do (the index "
                    "alone protects held items)")
        text = (f"reconcile: {self.locks_set} object locks set, {self.locks_cleared} cleared")
        if self.verify:
            text += (f"; verified {self.objects_checked} objects: {self.repaired} items "
                     f"repaired, {self.missing} objects missing")
        return f"{text}; {self.failures} failures"


async def _batches(archive: Archive, *where: Any) -> AsyncIterator[list[tuple[Item, bool]]]:
    """Items matching ``where`` in id order, a batch at a time, each with whether it is under
    an active hold."""
    last: uuid.UUID | None = None
    while True:
        stmt = select(Item, under_active_hold().label("held")).where(*where)
        if last is not None:
            stmt = stmt.where(col(Item.id) > last)
        async with archive.db.reader() as session:
            rows = [(item, bool(flag)) for item, flag in
                    (await session.exec(stmt.order_by(col(Item.id)).limit(BATCH))).all()]
        if rows:
            yield rows
        if len(rows) < BATCH:
            return
        last = rows[-1][0].id


async def reconcile(archive: Archive, *, verify: bool) -> ReconcileReport:
    """Repair drift between the index's holds and the store's legal holds (see the module
    docstring); return what was done."""
    report = ReconcileReport(verify=verify)
    if not archive.store.supports_legal_hold:
        report.supported = False
        return report

    async def settle(pair: tuple[Item, bool]) -> None:
        try:
            state = await settle_object_lock(archive, pair[0])
        except ArchiveError:
            report.failures += 1
            return
        if state is True:
            report.locks_set += 1
        elif state is False:
            report.locks_cleared += 1

    held = col(Item.id).in_(held_ids())
    async for batch in _batches(archive, held, col(Item.object_lock).is_(False),
                                col(Item.wrapped_key).is_not(None)):
        await for_each(batch, settle)
    # No index leads to stray flags: this pass reads the items table once, in id order.
    async for batch in _batches(archive, col(Item.object_lock).is_(True), ~under_active_hold()):
        await for_each(batch, settle)

    if verify:
        # Every item left with the flag is held (or failed above): reading back the objects
        # of the held items covers both.
        async def check(pair: tuple[Item, bool]) -> None:
            await _verify(archive, pair[0], pair[1], report)

        async for batch in _batches(archive, held, col(Item.wrapped_key).is_not(None)):
            await for_each(batch, check)
    log.info("%s", report)
    return report


async def _verify(archive: Archive, item: Item, held: bool, report: ReconcileReport) -> None:
    """Read the item's objects back and set their legal hold to what the index says."""
    try:
        infos = [await archive.store.stat(key) for key in object_keys(item)]
        report.objects_checked += len(infos)
        report.missing += sum(info is None for info in infos)
        present = [info for info in infos if info is not None]
        if item.object_lock == held and all(i.legal_hold == held for i in present):
            return
        async with archive.db.reader() as session:  # a hold placed or released meanwhile?
            held = await is_held(session, item.id)
        wrong = [i.key for i in present if i.legal_hold != held]
        for key in wrong:
            await archive.store.set_legal_hold(key, held)
    except StorageError:
        report.failures += 1
        return
    if item.object_lock != held:
        await set_lock_flag(archive, item, held)
    log.warning("item %s: %d objects disagreed with the index; legal hold set %s",
                item.id, len(wrong), "on" if held else "off")
    report.repaired += 1
