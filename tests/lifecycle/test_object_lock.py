"""Legal holds carried into S3 Object Lock, against moto's S3 with an Object Lock bucket: a held
object cannot be deleted through the S3 API until its last hold is released, and the reconciler
puts right what was changed behind the archive's back."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from archive.models import Channel, Item
from archive.service import MEDIA, Actor, Archive, object_keys
from lifecycle import holds
from lifecycle.reconcile import reconcile
from storage.base import iter_bytes, read_all
from storage.s3 import S3BlobStore
from tests.storage.helpers import raw_s3_client
from tests.storage.test_s3_lock import versions_of

T = "camden"
CLERK = Actor("token:clerk", "complaints")
NUMBER = "+442079460000"


@pytest.fixture
async def s3(moto_endpoint: str) -> AsyncIterator[Any]:
    async with raw_s3_client(moto_endpoint) as client:
        yield client


def bucket(archive: Archive) -> str:
    assert isinstance(archive.store, S3BlobStore)
    return archive.store.bucket


async def put(archive: Archive, *, original: bool = False, **fields: Any) -> Item:
    """An item with its media (and, if ``original``, a second object kept beside it)."""
    async with archive.writer(tenant=T, channel=Channel.CALL, external_id=str(uuid.uuid4()),
                              started_at=archive.clock.now(), actor=Actor("t", "ingest"),
                              fields=fields) as w:
        await w.store(MEDIA, "audio/ogg", iter_bytes(b"OggS rendition"))
        if original:
            await w.store("original", "audio/wav", iter_bytes(b"RIFF evidence"))
    return w.item


async def object_holds(archive: Archive, item: Item) -> list[bool]:
    """The store's legal hold on each of the item's objects, as S3 reports it."""
    infos = [await archive.store.stat(key) for key in object_keys(item)]
    assert all(info is not None for info in infos)
    return [info.legal_hold for info in infos if info is not None]


async def flag(archive: Archive, item: Item) -> bool:
    async with archive.db.reader() as session:
        row = await session.get(Item, item.id)
    assert row is not None
    return row.object_lock


async def delete_versions(s3: Any, archive: Archive, key: str) -> None:
    """Delete every version of an object through the S3 API, as a bucket operator could."""
    for version in await versions_of(s3, archive.store, key):  # type: ignore[arg-type]
        await s3.delete_object(Bucket=bucket(archive), Key=key, VersionId=version)


async def test_a_held_object_cannot_be_deleted_through_s3_until_release(
    locked: Archive, s3: Any
) -> None:
    archive = locked
    item = await put(archive, original=True)
    assert await object_holds(archive, item) == [False, False]
    placed = await holds.place_hold(archive, tenant=T, actor=CLERK, case_ref="CMP-1",
                                    reason="complaint", item_ids=[item.id])
    assert await object_holds(archive, item) == [True, True]
    assert await flag(archive, item)

    for key in object_keys(item):
        [version] = await versions_of(s3, archive.store, key)  # type: ignore[arg-type]
        with pytest.raises(ClientError) as refused:
            await s3.delete_object(Bucket=bucket(archive), Key=key, VersionId=version)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert await read_all(archive.read(item)) == b"OggS rendition"
    assert await read_all(archive.read(item, kind="original")) == b"RIFF evidence"

    await holds.release_hold(archive, tenant=T, actor=CLERK, hold_id=placed.hold.id,
                             reason="closed")
    assert await object_holds(archive, item) == [False, False]
    assert not await flag(archive, item)
    for key in object_keys(item):
        await delete_versions(s3, archive, key)
        assert await archive.store.stat(key) is None


async def test_the_lock_stays_until_the_last_hold_is_released(locked: Archive) -> None:
    archive = locked
    item = await put(archive, agent_id="a1")
    first = await holds.place_hold(archive, tenant=T, actor=CLERK, case_ref="CMP-1",
                                   reason="complaint", item_ids=[item.id])
    second = await holds.place_hold(archive, tenant=T, actor=CLERK, case_ref="CMP-2",
                                    reason="complaint", query={"agent_id": "a1"})
    await holds.release_hold(archive, tenant=T, actor=CLERK, hold_id=first.hold.id,
                             reason="closed")
    assert await object_holds(archive, item) == [True]
    assert await flag(archive, item)
    await holds.release_hold(archive, tenant=T, actor=CLERK, hold_id=second.hold.id,
                             reason="closed")
    assert await object_holds(archive, item) == [False]
    # Unheld and unlocked: erasure deletes every version of its object.
    await archive.destroy(T, item.id, reason="erasure", actor=CLERK)
    assert await archive.store.stat(object_keys(item)[0]) is None


async def test_adding_an_item_to_a_hold_locks_its_objects(locked: Archive) -> None:
    archive = locked
    first, second = await put(archive), await put(archive)
    placed = await holds.place_hold(archive, tenant=T, actor=CLERK, case_ref="CMP-1",
                                    reason="complaint", item_ids=[first.id])
    assert await object_holds(archive, second) == [False]
    await holds.add_items(archive, tenant=T, actor=CLERK, hold_id=placed.hold.id,
                          item_ids=[second.id])
    assert await object_holds(archive, second) == [True]
    assert await flag(archive, second)


async def test_a_live_query_hold_locks_an_item_as_it_arrives(locked: Archive) -> None:
    archive = locked
    await holds.place_hold(archive, tenant=T, actor=CLERK, case_ref="CMP-1",
                           reason="complaint", query={"caller_number": "020 7946 0000"})
    matching = await put(archive, caller_number=NUMBER)
    other = await put(archive, caller_number="+447700900123")
    assert await object_holds(archive, matching) == [True]
    assert await flag(archive, matching)
    assert await object_holds(archive, other) == [False]
    assert not await flag(archive, other)


async def test_reconcile_verify_restores_a_lock_cleared_through_s3(
    locked: Archive, s3: Any
) -> None:
    archive = locked
    item, untouched = await put(archive), await put(archive)
    await holds.place_hold(archive, tenant=T, actor=CLERK, case_ref="CMP-1",
                           reason="complaint", item_ids=[item.id, untouched.id])
    key = object_keys(item)[0]
    await s3.put_object_legal_hold(Bucket=bucket(archive), Key=key,
                                   LegalHold={"Status": "OFF"})
    assert await object_holds(archive, item) == [False]

    # Without verify the index alone agrees with itself: the drift is not seen.
    quick = await reconcile(archive, verify=False)
    assert (quick.locks_set, quick.locks_cleared, quick.failures) == (0, 0, 0)
    assert await object_holds(archive, item) == [False]

    report = await reconcile(archive, verify=True)
    assert (report.repaired, report.objects_checked, report.failures) == (1, 2, 0)
    assert "1 items repaired" in str(report)
    assert await object_holds(archive, item) == [True]
    assert await object_holds(archive, untouched) == [True]
    assert await flag(archive, item)
    [version] = await versions_of(s3, archive.store, key)  # type: ignore[arg-type]
    with pytest.raises(ClientError):
        await s3.delete_object(Bucket=bucket(archive), Key=key, VersionId=version)


async def test_reconcile_verify_clears_a_stray_lock_set_through_s3(
    locked: Archive, s3: Any
) -> None:
    """A lock the index has (flag set) but no hold justifies: someone set it in the bucket
    and the flag, or a release could not clear it. The index is the authority."""
    archive = locked
    item = await put(archive)
    placed = await holds.place_hold(archive, tenant=T, actor=CLERK, case_ref="CMP-1",
                                    reason="complaint", item_ids=[item.id])
    await holds.release_hold(archive, tenant=T, actor=CLERK, hold_id=placed.hold.id,
                             reason="closed")
    key = object_keys(item)[0]
    await s3.put_object_legal_hold(Bucket=bucket(archive), Key=key,
                                   LegalHold={"Status": "ON"})
    await holds.set_lock_flag(archive, item, True)
    assert await object_holds(archive, item) == [True]

    report = await reconcile(archive, verify=True)
    assert (report.locks_cleared, report.failures) == (1, 0)
    assert await object_holds(archive, item) == [False]
    assert not await flag(archive, item)
    await delete_versions(s3, archive, key)
    assert await archive.store.stat(key) is None
