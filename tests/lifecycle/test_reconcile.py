"""The reconciler repairs what a placement or release could not do in the bucket (the store
was unavailable), counts what it cannot repair yet, and works in batches. Against moto's S3
with Object Lock, on SQLite and PostgreSQL."""

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from archive.errors import ConflictError
from archive.models import Item
from archive.service import Archive, object_keys
from archive.tokens import ensure_tenant
from lifecycle import holds, reconcile
from storage.s3 import S3BlobStore
from tests.conftest import START
from tests.lifecycle.test_object_lock import (
    CLERK,
    T,
    flag,
    object_holds,
    put,
)
from tests.storage.conftest import s3_store


@pytest.fixture
async def unreachable(locked: Archive) -> AsyncIterator[Archive]:
    """The same archive, but its store's connection is closed: every store call fails as if
    S3 were down (and the store still reports Object Lock, as it did when it was opened)."""
    assert isinstance(locked.store, S3BlobStore)
    store = await s3_store(locked.store.endpoint_url or "", locked.store.bucket).open()
    await store.close()
    yield Archive(locked.db, store, locked.keys, locked.clock, segment_size=4096)


async def hold(archive: Archive, items: list[Item]) -> holds.Placed:
    return await holds.place_hold(archive, tenant=T, actor=CLERK, case_ref="CMP-1",
                                  reason="complaint", item_ids=[i.id for i in items])


async def release(archive: Archive, placed: holds.Placed) -> None:
    await holds.release_hold(archive, tenant=T, actor=CLERK, hold_id=placed.hold.id,
                             reason="closed")


async def test_nothing_to_do_where_the_store_has_no_object_lock(archive: Archive) -> None:
    async with archive.db.session() as session:
        await ensure_tenant(session, T, START)
        await session.commit()
    item = await put(archive)
    await hold(archive, [item])
    report = await reconcile.reconcile(archive, verify=True)
    assert not report.supported
    assert "nothing to do" in str(report)
    assert not await flag(archive, item)


async def test_a_hold_placed_while_s3_is_down_is_locked_by_the_next_pass(
    locked: Archive, unreachable: Archive
) -> None:
    items = [await put(locked) for _ in range(3)]
    placed = await hold(unreachable, items)  # the index is written; the bucket is not
    assert placed.item_count == 3
    with pytest.raises(ConflictError):  # the index alone already protects them
        await locked.destroy(T, items[0].id, reason="erasure", actor=CLERK)
    for item in items:
        assert await object_holds(locked, item) == [False]
        assert not await flag(locked, item)

    failed = await reconcile.reconcile(unreachable, verify=False)
    assert (failed.locks_set, failed.failures) == (0, 3)
    assert "3 failures" in str(failed)

    report = await reconcile.reconcile(locked, verify=False)
    assert (report.locks_set, report.locks_cleared, report.failures) == (3, 0, 0)
    for item in items:
        assert await object_holds(locked, item) == [True]
        assert await flag(locked, item)
    again = await reconcile.reconcile(locked, verify=True)
    assert (again.locks_set, again.locks_cleared, again.repaired, again.failures) == (
        0, 0, 0, 0)
    assert again.objects_checked == 3


async def test_a_release_while_s3_is_down_is_cleared_by_the_next_pass(
    locked: Archive, unreachable: Archive
) -> None:
    item, still_held = await put(locked), await put(locked)
    placed = await hold(locked, [item, still_held])
    await holds.place_hold(locked, tenant=T, actor=CLERK, case_ref="CMP-2",
                           reason="complaint", item_ids=[still_held.id])
    await release(unreachable, placed)
    assert await object_holds(locked, item) == [True]  # left behind
    assert await flag(locked, item)

    report = await reconcile.reconcile(locked, verify=False)
    assert (report.locks_set, report.locks_cleared, report.failures) == (0, 1, 0)
    assert await object_holds(locked, item) == [False]
    assert not await flag(locked, item)
    assert await object_holds(locked, still_held) == [True]  # CMP-2 still holds it


async def test_a_destroyed_item_left_locked_is_unlocked_so_its_object_can_go(
    locked: Archive, unreachable: Archive
) -> None:
    item = await put(locked)
    placed = await hold(locked, [item])
    await release(unreachable, placed)  # the bucket keeps its legal hold: drift
    assert await object_holds(locked, item) == [True]
    # Unheld in the index, so erasure goes ahead; its queued deletion meets the stale legal
    # hold, which the index says nothing needs any more: it is cleared and the object goes.
    await locked.destroy(T, item.id, reason="erasure", actor=CLERK)
    key = object_keys(item)[0]
    assert await locked.store.stat(key) is None

    report = await reconcile.reconcile(locked, verify=True)
    assert report.failures == 0
    assert not await flag(locked, item)


async def test_passes_go_in_batches(locked: Archive, unreachable: Archive,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "BATCH", 2)
    items = [await put(locked) for _ in range(5)]
    placed = await hold(unreachable, items)
    report = await reconcile.reconcile(locked, verify=True)
    assert (report.locks_set, report.objects_checked, report.failures) == (5, 5, 0)
    await release(unreachable, placed)
    report = await reconcile.reconcile(locked, verify=False)
    assert (report.locks_cleared, report.failures) == (5, 0)
    for item in items:
        assert await object_holds(locked, item) == [False]


async def test_the_reconcile_command(locked: Archive, unreachable: Archive, db_url: str,
                                     tmp_path: Path) -> None:
    item = await put(locked)
    await hold(unreachable, [item])
    assert isinstance(locked.store, S3BlobStore)
    env: dict[str, Any] = {
        **os.environ, "ARCHIVE_DATA_DIR": str(tmp_path / "var"),
        "ARCHIVE_DATABASE_URL": db_url, "ARCHIVE_STORE_URL": f"s3://{locked.store.bucket}",
        "ARCHIVE_S3_ENDPOINT_URL": locked.store.endpoint_url or ""}
    command = [str(Path(sys.executable).with_name("archive")), "reconcile", "--verify"]
    proc = await asyncio.create_subprocess_exec(*command, env=env,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == (
        "reconcile: 1 object locks set, 0 cleared; verified 1 objects: 0 items repaired, "
        "0 objects missing; 0 failures")
    assert await object_holds(locked, item) == [True]
