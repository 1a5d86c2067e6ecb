"""The sweeper, on SQLite and PostgreSQL with real objects in a local store: abandoned
uploads, the outbox, objects no item needs (after the grace period only) and items whose
object is missing; tenants whose names sort differently as text and as keys."""

import asyncio
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from archive import deletions
from archive.ids import uuid7
from archive.models import HoldItem, Item, ItemStatus, ObjectDeletion
from archive.service import Archive, object_key, object_keys
from lifecycle.sweep import sweep
from storage.base import iter_bytes
from tests.archive.test_search import add_hold
from tests.conftest import START
from tests.lifecycle.test_purge import (
    T,
    add_tenant,
    cli_env,
    fetch,
    ingest,
    run_cli,
    stored_keys,
)

HOUR = timedelta(hours=1)


def age(root: Path, key: str, when: float) -> None:
    """Set an object's modification time (the store's idea of its age)."""
    os.utime(root / "objects" / key, (when, when))


def age_all(root: Path, when: float) -> None:
    for path in (root / "objects").rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


async def pending_item(archive: Archive, *, created: timedelta, kinds: tuple[str, ...] = ()
                       ) -> tuple[Item, list[str]]:
    """A pending row as a crashed upload leaves it, with the objects it had written."""
    item_id = uuid7()
    started = START - timedelta(days=1)
    key = object_key(T, "call", started, item_id)
    item = Item(id=item_id, tenant=T, channel="call", external_id=f"crashed-{item_id}",
                status=ItemStatus.PENDING.value, started_at=started, object_key=key,
                wrapped_key=b"k" * 60, kek_id="local:camden:1", caller_number="+447700900123",
                created_at=START - created, updated_at=START - created)
    async with archive.db.session() as session:
        session.add(item)
        await session.commit()
    keys = [key, *(f"{key}.{kind}" for kind in kinds)]
    for k in keys:
        await archive.store.put(k, iter_bytes(b"partial upload"))
    return item, keys


async def test_abandoned_uploads_are_removed_after_the_grace_period(
    archive: Archive, tmp_path: Path,
) -> None:
    await add_tenant(archive)
    old, _ = await pending_item(archive, created=2 * HOUR, kinds=("original",))
    young, young_keys = await pending_item(archive, created=HOUR / 2, kinds=("original",))
    await add_hold(archive.db, "CMP-1", [old])  # a live query hold took it before the crash
    age_all(tmp_path / "store", (START - 3 * HOUR).timestamp())  # objects as old as can be

    report = await sweep(archive, grace=HOUR)

    assert report.pending_removed == 1 and report.drained == 2
    assert report.orphans_deleted == 0 and report.ok
    async with archive.db.reader() as session:
        assert await session.get(Item, old.id) is None
        assert (await session.exec(select(HoldItem))).all() == []
        assert (await session.exec(select(ObjectDeletion))).all() == []
    assert (await fetch(archive.db, young.id)).status == ItemStatus.PENDING.value
    # The young upload's objects are kept although they are old: its row is still pending.
    assert await stored_keys(archive.store) == sorted(young_keys)
    assert str(report).startswith("sweep: 1 abandoned upload(s) removed, 2 queued deletion(s)")


async def test_objects_no_item_needs_are_deleted_after_the_grace_period(
    archive: Archive, tmp_path: Path,
) -> None:
    await add_tenant(archive)
    await add_tenant(archive, "camden-north")  # sorts before "camden/" as keys
    await add_tenant(archive, "camden0")  # and this one after
    live = await ingest(archive, "live", days_ago=10, kinds=("original",))
    north = await ingest(archive, "north", days_ago=10, tenant="camden-north")
    zero = await ingest(archive, "zero", days_ago=10, tenant="camden0")
    destroyed = await ingest(archive, "destroyed", days_ago=10)
    async with archive.db.session() as session:  # destroyed before the outbox existed
        await session.exec(sa.update(Item).where(col(Item.id) == destroyed.id)
                           .values(status=ItemStatus.PURGED.value, wrapped_key=None,
                                   kek_id=None))
        await session.commit()
    root = tmp_path / "store"
    assert live.object_key is not None
    replaced = f"{live.object_key}.c{uuid.uuid4().hex}"  # what anonymisation replaced
    stray = object_key(T, "chat", START, uuid7())  # an object whose item never was
    newer = object_key(T, "chat", START, uuid7())  # an orphan still within grace
    for key in (replaced, stray, newer):
        await archive.store.put(key, iter_bytes(b"ciphertext"))
    age_all(root, (START - 2 * HOUR).timestamp())
    age(root, newer, (START - HOUR / 2).timestamp())

    report = await sweep(archive, grace=HOUR)

    assert report.orphans_deleted == 3, report
    assert report.ok and report.missing == [] and report.objects_seen == 8
    assert await stored_keys(archive.store) == sorted(
        [*object_keys(live), *object_keys(north), *object_keys(zero), newer])
    again = await sweep(archive, grace=HOUR)
    assert (again.orphans_deleted, again.objects_seen) == (0, 5)


async def test_items_whose_objects_are_missing_are_reported(
    archive: Archive, tmp_path: Path, db_url: str,
) -> None:
    await add_tenant(archive)
    await add_tenant(archive, "camden-north")
    intact = await ingest(archive, "intact", days_ago=10)
    lost = await ingest(archive, "lost", days_ago=10, kinds=("original",))
    half = await ingest(archive, "half", days_ago=10, kinds=("original",))
    last = await ingest(archive, "last", days_ago=10, tenant="camden-north")
    root = tmp_path / "store"
    for key in [*object_keys(lost), object_keys(half)[1], *object_keys(last)]:
        (root / "objects" / key).unlink()

    report = await sweep(archive, grace=HOUR)

    assert sorted(report.missing) == sorted([lost.id, half.id, last.id])
    assert report.missing_count == 3 and not report.ok
    assert f"missing object: item {half.id}" in str(report)
    assert intact.id not in report.missing
    assert (await fetch(archive.db, lost.id)).status == ItemStatus.ACTIVE.value  # reported only

    done = run_cli(cli_env(db_url, tmp_path), "sweep")
    assert done.returncode == 1, done.stderr
    assert "3 item(s) with a missing object" in done.stdout
    assert str(lost.id) in done.stdout and "+44" not in done.stdout + done.stderr


async def test_the_outbox_is_drained_and_a_stop_ends_the_sweep_early(archive: Archive) -> None:
    await add_tenant(archive)
    item = await ingest(archive, "call-1", days_ago=10)
    stray = object_key(T, "call", START, uuid7())
    await archive.store.put(stray, iter_bytes(b"x"))
    async with archive.db.session() as session:
        await deletions.queue(session, T, [stray], START)
        await session.commit()
    report = await sweep(archive, grace=timedelta(0))
    assert (report.drained, report.orphans_deleted) == (1, 0)
    assert await stored_keys(archive.store) == object_keys(item)

    stop = asyncio.Event()
    stop.set()
    stopped = await sweep(archive, grace=HOUR, stop=stop)
    assert stopped.stopped and stopped.objects_seen == 0
    assert "(stopped early)" in str(stopped)
    with pytest.raises(ValueError, match="grace"):
        await sweep(archive, grace=-HOUR)
    assert (await fetch(archive.db, item.id)).status == ItemStatus.ACTIVE.value
