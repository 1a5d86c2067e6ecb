"""The outbox of objects to delete from the store (table ``object_deletions``).

An object is let go in the same transaction that makes it unneeded (an item destroyed, its
content replaced, an abandoned upload removed): ``queue`` records its key there. Only after
that commit is the object deleted from the store (``drain``), and its key dequeued once the
store confirms. A crash between the two, or a store that is unavailable, leaves the key queued;
the next drain (every purge pass and sweep starts with one) finishes the work. Deleting an
object that is already gone is not an error, so draining twice is harmless.
"""

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from archive.db import Database
from archive.models import Hold, HoldItem, Item, ItemStatus, ObjectDeletion
from storage.base import BlobStore
from storage.errors import LegalHoldError, StorageError

log = logging.getLogger(__name__)

DRAIN_BATCH = 500  # keys read from the queue (and dequeued) per statement
CONCURRENCY = 16  # object deletions in flight at once
READABLE = (ItemStatus.ACTIVE.value, ItemStatus.ANONYMISED.value)


async def queue(session: AsyncSession, tenant: str, keys: Iterable[str], now: datetime) -> None:
    """Queue ``keys`` (objects of ``tenant``) for deletion, inside the caller's transaction;
    a key already queued stays as it was."""
    rows = [{"key": key, "tenant": tenant, "queued_at": now} for key in keys]
    if not rows:
        return
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    connection = await session.connection()
    await connection.execute(insert(ObjectDeletion).on_conflict_do_nothing(), rows)


async def drain(
    db: Database, store: BlobStore, *, keys: Sequence[str] | None = None,
    limit: int = DRAIN_BATCH,
) -> tuple[int, int]:
    """Delete queued objects from the store and dequeue each one deleted; return how many
    were deleted and how many failed (those stay queued for the next drain).

    ``keys``: only these (just queued by the caller); otherwise every queued key, read
    ``limit`` at a time in key order, each tried once per call (so a key that keeps failing
    cannot hold the drain in a loop). On PostgreSQL each batch is claimed ``FOR UPDATE SKIP
    LOCKED`` and dequeued in the same transaction, so drains running at once in several
    workers never delete the same object twice; SQLite (one writer, so one worker) reads the
    batch, deletes, then dequeues in a short write, keeping the write lock free meanwhile.
    """
    deleted = failed = 0
    failures: Counter[str] = Counter()
    chunks = (None if keys is None else
              [list(keys[i:i + limit]) for i in range(0, len(keys), limit)])
    after = ""
    where: sa.ColumnElement[bool]
    while True:
        if chunks is not None:
            if not chunks:
                break
            where = col(ObjectDeletion.key).in_(chunks.pop(0))
        else:
            where = col(ObjectDeletion.key) > after
        stmt = select(ObjectDeletion.key).where(where).order_by(
            col(ObjectDeletion.key)).limit(limit)
        if db.is_sqlite:
            async with db.reader() as session:
                batch = list((await session.exec(stmt)).all())
            done = await _delete_all(db, store, batch, failures)
            if done:
                async with db.session() as session:
                    await _dequeue(session, done)
        else:
            async with db.session() as session:
                batch = list((await session.exec(
                    stmt.with_for_update(skip_locked=True))).all())
                done = await _delete_all(db, store, batch, failures)
                await _dequeue(session, done)
        deleted, failed = deleted + len(done), failed + len(batch) - len(done)
        if chunks is None:
            if not batch:
                break
            after = batch[-1]
    if failures:
        log.warning("%d object deletion(s) failed and stay queued for the next pass (%s)",
                    failed, ", ".join(f"{name}: {n}" for name, n in sorted(failures.items())))
    return deleted, failed


async def _delete_all(db: Database, store: BlobStore, keys: list[str],
                      failures: Counter[str]) -> list[str]:
    """Delete ``keys`` from the store, ``CONCURRENCY`` at once; return those deleted."""
    limiter = asyncio.Semaphore(CONCURRENCY)

    async def delete(key: str) -> bool:
        async with limiter:
            try:
                await store.delete(key)
            except LegalHoldError:
                return await _delete_held(db, store, key, failures)
            except Exception as exc:  # noqa: BLE001  (one bad key must not stop the others)
                failures[type(exc).__name__] += 1
                return False
            return True

    outcomes = await asyncio.gather(*(delete(key) for key in keys))
    return [key for key, ok in zip(keys, outcomes, strict=True) if ok]


async def _dequeue(session: AsyncSession, keys: list[str]) -> None:
    if keys:
        await session.exec(sa.delete(ObjectDeletion).where(col(ObjectDeletion.key).in_(keys)))
    await session.commit()


async def _delete_held(db: Database, store: BlobStore, key: str,
                       failures: Counter[str]) -> bool:
    """An object the store refuses to delete because of its legal hold. When the index says
    no readable item needs it (its item destroyed or gone, or the object replaced) and no
    active hold covers that item, the store's hold is stale (a release whose clearing failed,
    or drift): clear it and delete. Otherwise leave the key queued."""
    item_id = item_id_of(key)
    async with db.reader() as session:
        item = await session.get(Item, item_id) if item_id is not None else None
        held = item is not None and (await session.exec(
            select(HoldItem.item_id).join(Hold, col(Hold.id) == col(HoldItem.hold_id))
            .where(HoldItem.item_id == item.id, Hold.status == "active").limit(1))).first()
    if held or (item is not None and (item.status == ItemStatus.PENDING.value or (
            item.status in READABLE and item.wrapped_key is not None
            and item.object_key is not None and key in _keys_of(item)))):
        failures[LegalHoldError.__name__] += 1
        return False
    try:
        await store.set_legal_hold(key, False)
        await store.delete(key)
    except StorageError as exc:
        failures[type(exc).__name__] += 1
        return False
    if item is not None:
        async with db.session() as session:
            await session.exec(sa.update(Item).where(col(Item.id) == item.id)
                               .values(object_lock=False))
            await session.commit()
    log.warning("an object of destroyed item %s still had the store's legal hold: "
                "cleared and deleted", item_id)
    return True


def _keys_of(item: Item) -> list[str]:
    from archive.service import object_keys  # noqa: PLC0415  (service imports this module)

    return object_keys(item)


def item_id_of(key: str) -> uuid.UUID | None:
    """The item id in an object key (``tenant/channel/yyyy/mm/dd/ID[.suffix]``), if any."""
    name = key.rpartition("/")[2].partition(".")[0]
    try:
        return uuid.UUID(name)
    except ValueError:
        return None
