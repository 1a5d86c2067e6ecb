"""The Archive service keeps the index and the encrypted store together."""

import hashlib
import os
from collections.abc import AsyncIterator

import pytest
from sqlmodel import select

from archive.errors import ConflictError, IntegrityFailureError, NotFoundError
from archive.ids import uuid7
from archive.models import Channel, Destruction, Hold, HoldItem, Item, ItemStatus
from archive.service import Actor, Archive
from archive.tokens import ensure_tenant
from storage.base import iter_bytes, read_all
from storage.local import LocalBlobStore

ACTOR = Actor("token:test", "ingest")


async def _put(archive: Archive, data: bytes, external_id: str = "call-1",
               tenant: str = "camden", **fields: object) -> Item:
    return await archive.put(
        tenant=tenant, channel=Channel.CALL, external_id=external_id,
        started_at=archive.clock.now(), media_type="audio/wav", chunks=iter_bytes(data, 1000),
        actor=ACTOR, fields=fields)


@pytest.fixture
async def tenants(archive: Archive) -> None:
    async with archive.db.session() as session:
        for t in ("camden", "barnet"):
            await ensure_tenant(session, t, archive.clock.now())
        await session.commit()


async def _rows(archive: Archive) -> list[Item]:
    async with archive.db.session() as session:
        return list((await session.exec(select(Item))).all())


async def _objects(archive: Archive) -> list[str]:
    return [info.key async for info in archive.store.list("")]


@pytest.mark.usefixtures("tenants")
async def test_put_then_read_round_trips(archive: Archive) -> None:
    data = os.urandom(50_000)
    item = await _put(archive, data, caller_number="+442079460000")
    assert item.status == "active"
    assert item.plain_size == len(data)
    assert item.sha256 == hashlib.sha256(data).hexdigest()
    assert item.object_key == f"camden/call/2026/11/23/{item.id}"
    stored = await archive.store.stat(item.object_key)
    assert stored is not None and stored.size == item.stored_size
    got = await archive.get("camden", item.id)
    assert await read_all(archive.read(got)) == data
    assert await read_all(archive.read(got, 4095, 8193)) == data[4095:8193]


@pytest.mark.usefixtures("tenants")
async def test_stored_object_holds_no_plaintext_or_personal_data(archive: Archive) -> None:
    data = b"caller said: my card is 4111 1111 1111 1111 " * 200
    item = await _put(archive, data, caller_number="+442079460000")
    assert item.object_key is not None
    raw = await read_all(archive.store.get(item.object_key))
    assert b"4111" not in raw and b"caller said" not in raw
    assert "+44" not in item.object_key


@pytest.mark.usefixtures("tenants")
async def test_another_tenant_cannot_get_an_item(archive: Archive) -> None:
    item = await _put(archive, b"x" * 10)
    with pytest.raises(NotFoundError):
        await archive.get("barnet", item.id)
    with pytest.raises(NotFoundError):
        await archive.get("camden", uuid7())


@pytest.mark.usefixtures("tenants")
async def test_failed_upload_leaves_nothing_behind(archive: Archive) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"a" * 10_000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await archive.put(tenant="camden", channel=Channel.CALL, external_id="call-1",
                          started_at=archive.clock.now(), media_type="audio/wav",
                          chunks=broken(), actor=ACTOR)
    assert await _rows(archive) == []
    assert await _objects(archive) == []
    assert isinstance(archive.store, LocalBlobStore)
    assert list((archive.store.root / "tmp").iterdir()) == []
    # The same external id can then be stored.
    item = await _put(archive, b"ok")
    assert item.status == "active"


@pytest.mark.usefixtures("tenants")
async def test_duplicate_external_id_is_a_conflict_and_changes_nothing(archive: Archive) -> None:
    first = await _put(archive, b"first")
    with pytest.raises(ConflictError):
        await _put(archive, b"second")
    rows = await _rows(archive)
    assert [r.id for r in rows] == [first.id]
    assert await _objects(archive) == [first.object_key]
    # The same id in another tenant or channel is another item.
    other = await _put(archive, b"second", tenant="barnet")
    assert other.id != first.id


@pytest.mark.usefixtures("tenants")
async def test_an_item_for_an_unknown_tenant_is_refused_and_leaves_nothing(
    archive: Archive,
) -> None:
    with pytest.raises(NotFoundError, match="no tenant 'hackney'"):
        await _put(archive, b"data", tenant="hackney")
    assert await _rows(archive) == []
    assert await _objects(archive) == []


@pytest.mark.usefixtures("tenants")
async def test_the_writer_sees_the_tenant_it_writes_for(archive: Archive) -> None:
    async with archive.writer(tenant="barnet", channel=Channel.CALL, external_id="c-1",
                              started_at=archive.clock.now(), actor=ACTOR) as w:
        assert w.tenant.id == "barnet"
        assert w.tenant.media_policy == "original"
        await w.store("media", "audio/wav", iter_bytes(b"data"))


@pytest.mark.usefixtures("tenants")
async def test_pending_items_are_invisible(archive: Archive) -> None:
    item = await _put(archive, b"data")
    async with archive.db.session() as session:
        row = await session.get(Item, item.id)
        assert row is not None
        row.status = ItemStatus.PENDING.value
        session.add(row)
        await session.commit()
    with pytest.raises(NotFoundError):
        await archive.get("camden", item.id)


@pytest.mark.usefixtures("tenants")
async def test_rotation_rewraps_keys_and_keeps_objects_readable(archive: Archive) -> None:
    items = [await _put(archive, f"call {i}".encode() * 100, external_id=f"c{i}")
             for i in range(3)]
    object_bytes = {i.id: await read_all(archive.store.get(i.object_key or "")) for i in items}
    old_kek = items[0].kek_id
    new_kek, count = await archive.rotate_keys("camden")
    assert count == 3 and new_kek != old_kek
    for i, original in enumerate(items):
        fresh = await archive.get("camden", original.id)
        assert fresh.kek_id == new_kek
        assert fresh.wrapped_key != original.wrapped_key
        assert await read_all(archive.read(fresh)) == f"call {i}".encode() * 100
        # Objects were not re-encrypted: only the wrapped key changed.
        assert await read_all(archive.store.get(fresh.object_key or "")) == object_bytes[fresh.id]
    newer = await _put(archive, b"after rotation", external_id="c-new")
    assert newer.kek_id == new_kek
    assert await archive.rewrap_keys("camden") == 0  # nothing left to do


@pytest.mark.usefixtures("tenants")
async def test_destroy_shreds_the_key_and_keeps_a_record_without_personal_data(
    archive: Archive,
) -> None:
    item = await _put(archive, b"secret audio" * 100, caller_number="+442079460000",
                      customer_name="Ann Example", customer_email="ann@example.org",
                      agent_id="agent-7")
    before_obj = await read_all(archive.store.get(item.object_key or ""))
    record = await archive.destroy("camden", item.id, reason="erasure", actor=ACTOR)
    async with archive.db.session() as session:
        row = await session.get(Item, item.id)
        stored_record = await session.get(Destruction, record.id)
    assert row is not None and stored_record is not None
    assert row.status == "erased"
    assert row.wrapped_key is None and row.kek_id is None
    assert row.caller_number is None and row.customer_name is None
    assert row.customer_email is None
    assert await archive.store.stat(item.object_key or "") is None
    text = stored_record.model_dump_json()
    for personal in ("+442079460000", "Ann", "ann@example.org"):
        assert personal not in text
    assert stored_record.stored_sha256 == item.sha256
    with pytest.raises(NotFoundError):
        await read_all(archive.read(row))
    with pytest.raises(ConflictError):
        await archive.destroy("camden", item.id, reason="erasure", actor=ACTOR)
    # A copy of the object kept elsewhere (a backup) holds no key and no plaintext.
    assert b"secret audio" not in before_obj
    assert item.wrapped_key is not None and item.wrapped_key not in before_obj


@pytest.mark.usefixtures("tenants")
async def test_destroy_is_refused_while_a_hold_is_active(archive: Archive) -> None:
    item = await _put(archive, b"evidence")
    hold = Hold(id=uuid7(), tenant="camden", case_ref="C-2026-001", reason="complaint",
                placed_by="token:x", placed_at=archive.clock.now())
    async with archive.db.session() as session:
        session.add(hold)
        await session.flush()
        session.add(HoldItem(hold_id=hold.id, item_id=item.id, added_by="token:x",
                             added_at=archive.clock.now()))
        await session.commit()
    with pytest.raises(ConflictError, match="C-2026-001"):
        await archive.destroy("camden", item.id, reason="erasure", actor=ACTOR)
    assert await read_all(archive.read(await archive.get("camden", item.id))) == b"evidence"
    async with archive.db.session() as session:
        hold.status = "released"
        session.add(hold)
        await session.commit()
    await archive.destroy("camden", item.id, reason="erasure", actor=ACTOR)


@pytest.mark.usefixtures("tenants")
async def test_tampered_object_is_refused(archive: Archive) -> None:
    item = await _put(archive, os.urandom(20_000))
    other = await _put(archive, os.urandom(20_000), external_id="call-2")
    # Move the other item's object under this item's key: authentication must fail.
    moved = await read_all(archive.store.get(other.object_key or ""))
    await archive.store.put(item.object_key or "", iter_bytes(moved))
    with pytest.raises(IntegrityFailureError):
        await read_all(archive.read(item))
