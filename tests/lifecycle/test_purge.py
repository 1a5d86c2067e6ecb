"""The purge pass, on SQLite and PostgreSQL: expired, unheld items destroyed with everything
the issue lists, held and unexpired ones untouched, idempotence, and object deletions that
survive an unavailable store (the outbox). Also the bulk audit append it relies on, and the
``archive purge`` and ``archive worker --once`` commands through the real executable."""

import json
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from archive import audit, deletions
from archive.clock import ManualClock
from archive.db import Database
from archive.errors import NotFoundError
from archive.ids import uuid7
from archive.models import (
    PERSONAL_FIELDS,
    AuditEvent,
    Channel,
    Destruction,
    Hold,
    Item,
    ItemStatus,
    ItemVersion,
    ObjectDeletion,
)
from archive.service import MEDIA, Actor, Archive, object_keys
from archive.tokens import ensure_tenant
from lifecycle.purge import purge_pass
from storage.base import BlobStore, iter_bytes
from storage.keyring import LocalKeyring
from tests.archive.test_search import add_hold
from tests.conftest import START
from tests.helpers import ARCHIVE_EXE
from tests.storage.conftest import open_s3

T = "camden"
INGEST = Actor("test", "ingest")
PHONE, EMAIL, NAME, POSTCODE = "+447700900123", "ann.smith@example.org", "Ann Smith", "SW1A1AA"
PERSONAL = {"caller_number": PHONE, "called_number": "+441632960001", "customer_name": NAME,
            "customer_name_key": NAME.casefold(), "customer_email": EMAIL,
            "customer_postcode": POSTCODE, "tags": ["vip"], "extra": {"note": NAME},
            "agent_id": "raj", "service": "housing"}


async def add_tenant(archive: Archive, tenant: str = T) -> None:
    async with archive.db.session() as session:
        await ensure_tenant(session, tenant, START)
        await session.commit()


async def ingest(archive: Archive, external_id: str, *, days_ago: int = 400,
                 tenant: str = T, channel: Channel = Channel.CALL,
                 kinds: tuple[str, ...] = ()) -> Item:
    """A real item (encrypted objects in the store) that started ``days_ago`` before START:
    calls are kept 365 days by default, so 400 days ago is expired and 10 is not."""
    started = START - timedelta(days=days_ago)
    async with archive.writer(tenant=tenant, channel=channel, external_id=external_id,
                              started_at=started, actor=INGEST, fields=PERSONAL) as w:
        await w.store(MEDIA, "audio/wav", iter_bytes(b"RIFF" + os.urandom(5000)))
        for kind in kinds:
            await w.store(kind, "audio/wav", iter_bytes(os.urandom(3000)))
    return w.item


async def fetch(db: Database, item_id: uuid.UUID) -> Item:
    async with db.reader() as session:
        item = await session.get(Item, item_id)
    assert item is not None
    return item


async def stored_keys(store: BlobStore) -> list[str]:
    return [info.key async for info in store.list("")]


async def destructions(db: Database) -> list[Destruction]:
    async with db.reader() as session:
        return list((await session.exec(select(Destruction))).all())


async def purge_events(db: Database) -> list[AuditEvent]:
    async with db.reader() as session:
        return list((await session.exec(
            select(AuditEvent).where(AuditEvent.action == "item.purge")
            .order_by(col(AuditEvent.seq)))).all())


async def queued(db: Database) -> list[str]:
    async with db.reader() as session:
        return list((await session.exec(select(ObjectDeletion.key))).all())


async def chain_ok(db: Database) -> bool:
    async with db.reader() as session:
        reports = await audit.verify(session)
    return all(r.ok for r in reports) and bool(reports)


async def test_an_expired_item_is_destroyed_with_everything(archive: Archive) -> None:
    await add_tenant(archive)
    item = await ingest(archive, "call-1", kinds=("original",))
    keep = await ingest(archive, "call-2", days_ago=10)
    async with archive.db.session() as session:  # a rectification kept the old metadata
        session.add(ItemVersion(id=uuid7(), item_id=item.id, tenant=T, version=1,
                                fields={"caller_number": PHONE}, replaced_by="t",
                                replaced_at=START))
        await session.commit()
    assert len(await stored_keys(archive.store)) == 3

    report = await purge_pass(archive, batch_size=100)

    assert (report.destroyed, report.objects_deleted, report.failures) == (1, 2, 0)
    assert str(report).startswith("purge: 1 item(s) destroyed, 2 object(s) deleted, "
                                  "0 deletion failure(s) in ")
    assert "items/s" in str(report)
    gone = await fetch(archive.db, item.id)
    assert gone.status == ItemStatus.PURGED.value
    assert gone.wrapped_key is None and gone.kek_id is None
    assert all(getattr(gone, name) is None for name in PERSONAL_FIELDS)
    async with archive.db.reader() as session:  # SQL NULL, not a JSON null, in the index
        connection = await session.connection()
        items = sa.table("items", sa.column("id", sa.Uuid()),
                         *(sa.column(n) for n in PERSONAL_FIELDS))
        nulls = (await connection.execute(
            sa.select(*(items.c[n].is_(None) for n in PERSONAL_FIELDS))
            .where(items.c.id == item.id))).one()
        assert all(nulls)
        assert (await session.exec(select(ItemVersion))).all() == []
    assert await stored_keys(archive.store) == object_keys(keep)
    assert await queued(archive.db) == []
    with pytest.raises(NotFoundError):
        [c async for c in archive.read(gone)]

    [record] = await destructions(archive.db)
    assert record.item_id == item.id and record.tenant == T and record.channel == "call"
    assert record.reason == "retention" and record.actor == "lifecycle"
    assert record.retention_basis == item.retention_basis == {
        "policy": "default", "version": 0, "days": 365}
    assert record.retain_until == item.retain_until
    assert record.destroyed_at == START
    assert record.stored_sha256 == item.sha256
    text = json.dumps(record.model_dump(mode="json"))
    assert not any(value in text for value in (PHONE, EMAIL, NAME, POSTCODE, "vip"))

    [event] = await purge_events(archive.db)
    assert event.item_id == item.id and event.actor == "lifecycle"
    assert event.detail == {"destruction_id": str(record.id), "reason": "retention"}
    assert await chain_ok(archive.db)
    kept = await fetch(archive.db, keep.id)
    assert kept.status == ItemStatus.ACTIVE.value and kept.caller_number == PHONE


async def test_held_and_unexpired_items_are_kept_until_released_or_due(
    archive: Archive, clock: ManualClock,
) -> None:
    await add_tenant(archive)
    held = await ingest(archive, "held")
    twice = await ingest(archive, "held-twice")
    released = await ingest(archive, "released-hold")
    young = await ingest(archive, "young", days_ago=10)
    await add_hold(archive.db, "CMP-1", [held, twice])
    await add_hold(archive.db, "CMP-2", [twice])
    await add_hold(archive.db, "CMP-OLD", [released], status="released")

    report = await purge_pass(archive, batch_size=1)  # one per transaction: several batches

    assert report.destroyed == 1
    assert (await fetch(archive.db, released.id)).status == ItemStatus.PURGED.value
    for item in (held, twice, young):
        row = await fetch(archive.db, item.id)
        assert row.status == ItemStatus.ACTIVE.value and row.wrapped_key is not None
        assert row.caller_number == PHONE
        assert set(object_keys(item)) <= set(await stored_keys(archive.store))

    async with archive.db.session() as session:  # CMP-1 released: "twice" is still held
        await session.exec(sa.update(Hold).where(col(Hold.case_ref) == "CMP-1")
                           .values(status="released", released_by="t", released_at=START))
        await session.commit()
    assert (await purge_pass(archive, batch_size=10)).destroyed == 1
    assert (await fetch(archive.db, held.id)).status == ItemStatus.PURGED.value
    assert (await fetch(archive.db, twice.id)).status == ItemStatus.ACTIVE.value

    assert young.retain_until is not None
    clock.set(young.retain_until - timedelta(seconds=1))
    assert (await purge_pass(archive, batch_size=10)).destroyed == 0
    clock.set(young.retain_until)
    assert (await purge_pass(archive, batch_size=10)).destroyed == 1
    assert (await fetch(archive.db, young.id)).status == ItemStatus.PURGED.value
    assert {d.item_id for d in await destructions(archive.db)} == {
        released.id, held.id, young.id}
    assert await chain_ok(archive.db)


async def test_a_pass_is_idempotent(archive: Archive) -> None:
    await add_tenant(archive)
    items = [await ingest(archive, f"call-{n}") for n in range(5)]
    first = await purge_pass(archive, batch_size=2)
    again = await purge_pass(archive, batch_size=2)
    assert (first.destroyed, first.objects_deleted) == (5, 5)
    assert (again.destroyed, again.objects_deleted, again.failures) == (0, 0, 0)
    assert sorted(d.item_id for d in await destructions(archive.db)) == sorted(
        i.id for i in items)
    assert len(await purge_events(archive.db)) == 5
    assert await stored_keys(archive.store) == []
    assert await chain_ok(archive.db)


async def test_bad_batch_size_is_refused(archive: Archive) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        await purge_pass(archive, batch_size=0)


@contextmanager
def store_broken(root: Path) -> Iterator[None]:
    """Make the local store's object folder unusable for real (a file where the folder should
    be: every delete under it fails, whoever runs the test, root included)."""
    objects = root / "objects"
    away = root / "objects.away"
    objects.rename(away)
    objects.write_bytes(b"not a folder")
    try:
        yield
    finally:
        objects.unlink()
        away.rename(objects)


async def test_store_failure_leaves_deletions_queued_for_the_next_pass(
    archive: Archive, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    await add_tenant(archive)
    items = [await ingest(archive, f"call-{n}") for n in range(3)]
    keys = sorted(k for i in items for k in object_keys(i))
    with store_broken(tmp_path / "store"), caplog.at_level(logging.WARNING):
        report = await purge_pass(archive, batch_size=10)
    # Destroyed all the same: the wrapped keys are gone, so every copy is unreadable.
    assert (report.destroyed, report.objects_deleted, report.failures) == (3, 0, 3)
    assert "3 deletion failure(s) (queued for the next pass)" in str(report)
    for item in items:
        assert (await fetch(archive.db, item.id)).wrapped_key is None
    assert sorted(await queued(archive.db)) == keys
    assert sorted(await stored_keys(archive.store)) == keys
    assert "3 object deletion(s) failed" in caplog.text
    assert not any(k in caplog.text for k in keys)  # counts and types, not keys

    again = await purge_pass(archive, batch_size=10)
    assert (again.destroyed, again.objects_deleted, again.failures) == (0, 3, 0)
    assert await queued(archive.db) == []
    assert await stored_keys(archive.store) == []
    assert len(await destructions(archive.db)) == 3


async def test_drain_only_touches_the_keys_it_is_given(archive: Archive) -> None:
    await add_tenant(archive)
    a = await ingest(archive, "a", days_ago=10)
    b = await ingest(archive, "b", days_ago=10)
    async with archive.db.session() as session:
        await deletions.queue(session, T, object_keys(a) + object_keys(b), START)
        await deletions.queue(session, T, object_keys(a), START)  # queued twice: once
        await deletions.queue(session, T, [], START)
        await session.commit()
    assert await deletions.drain(archive.db, archive.store, keys=object_keys(a)) == (1, 0)
    assert await queued(archive.db) == object_keys(b)
    assert await stored_keys(archive.store) == object_keys(b)
    assert await deletions.drain(archive.db, archive.store, limit=1) == (1, 0)
    assert await queued(archive.db) == []


async def test_append_many_chains_exactly_like_append(db: Database) -> None:
    async with db.session() as session:
        for tenant in ("camden", "barnet"):
            await ensure_tenant(session, tenant, START)
        await audit.append(session, tenant="camden", at=START, actor="t", role="admin",
                           action="one")
        await session.commit()
    events = [AuditEvent(tenant=tenant, at=START + timedelta(seconds=n), actor="lifecycle",
                         role="system", action="item.purge", item_id=uuid7(),
                         detail={"n": n}, seq=0, prev_hash="", hash="")
              for n in range(4) for tenant in ("camden", "barnet")]
    async with db.session() as session:
        await audit.append_many(session, events)
        await audit.append(session, tenant="barnet", at=START, actor="t", role="admin",
                           action="after")
        await session.commit()
    async with db.session() as session:
        await audit.append_many(session, [])
        reports = {r.tenant: r for r in await audit.verify(session)}
        rows = (await session.exec(select(AuditEvent).where(AuditEvent.tenant == "camden")
                                   .order_by(col(AuditEvent.seq)))).all()
    assert reports["camden"].ok and reports["camden"].events == 5
    assert reports["barnet"].ok and reports["barnet"].events == 5
    assert [r.action for r in rows] == ["one"] + ["item.purge"] * 4
    assert [r.detail for r in rows[1:]] == [{"n": n} for n in range(4)]
    async with db.session() as session:  # an edited event still breaks the chain
        await session.exec(sa.update(AuditEvent).where(col(AuditEvent.tenant) == "camden",
                                                       col(AuditEvent.seq) == 3)
                           .values(detail={"n": 99}))
        await session.commit()
        reports = {r.tenant: r for r in await audit.verify(session)}
    assert not reports["camden"].ok and reports["barnet"].ok


async def test_a_stale_store_legal_hold_does_not_keep_a_destroyed_items_object(
    db: Database, clock: ManualClock, tmp_path: Path, moto_endpoint: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """S3 Object Lock: the store's legal hold of an item no hold keeps any more (its clearing
    failed at release) is cleared once the item is destroyed; a held item's is honoured."""
    store = await open_s3(moto_endpoint, object_lock=True)
    keyring = await LocalKeyring(tmp_path / "keyring.json").open()
    archive = Archive(db, store, keyring, clock, segment_size=4096)
    try:
        await add_tenant(archive)
        stale = await ingest(archive, "stale")
        held = await ingest(archive, "held")
        await add_hold(db, "CMP-1", [held])
        await archive.set_object_lock(stale, True)
        await archive.set_object_lock(held, True)
        async with db.session() as session:  # queued by mistake: the hold must win
            await deletions.queue(session, T, object_keys(held), START)
            await session.commit()
        with caplog.at_level(logging.WARNING):
            report = await purge_pass(archive, batch_size=10)
        assert (report.destroyed, report.objects_deleted, report.failures) == (1, 1, 1)
        assert await store.stat(object_keys(stale)[0]) is None
        assert (await fetch(db, stale.id)).object_lock is False
        info = await store.stat(object_keys(held)[0])
        assert info is not None and info.legal_hold
        assert (await fetch(db, held.id)).status == ItemStatus.ACTIVE.value
        assert await queued(db) == object_keys(held)
        assert f"item {stale.id} still had the store's legal hold" in caplog.text
        assert "LegalHoldError: 1" in caplog.text
    finally:
        await store.close()


# -- the commands, through the real executable ---------------------------------------------

def cli_env(db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Settings for ``archive`` commands over the ``archive`` fixture's index, store and
    keyring."""
    return {**os.environ, "ARCHIVE_DATA_DIR": str(tmp_path / "var"),
            "ARCHIVE_DATABASE_URL": db_url, "ARCHIVE_STORE_URL": f"file://{tmp_path / 'store'}",
            "ARCHIVE_KEYRING_PATH": str(tmp_path / "keyring.json"), **extra}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ARCHIVE_EXE, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


async def real_time_item(archive: Archive, external_id: str, *, years_ago: int) -> Item:
    """An item dated by the real clock: the commands run with the system's time."""
    archive.clock = ManualClock(datetime.now(UTC))
    started = datetime.now(UTC) - timedelta(days=365 * years_ago)
    return await archive.put(tenant=T, channel=Channel.CALL, external_id=external_id,
                             started_at=started, media_type="audio/wav",
                             chunks=iter_bytes(b"RIFF" + os.urandom(2000)), actor=INGEST,
                             fields=PERSONAL)


async def test_purge_and_worker_once_commands(
    archive: Archive, db_url: str, tmp_path: Path,
) -> None:
    await add_tenant(archive)
    old = await real_time_item(archive, "old", years_ago=2)
    held = await real_time_item(archive, "held", years_ago=2)
    new = await real_time_item(archive, "new", years_ago=0)
    await add_hold(archive.db, "CMP-9", [held])
    env = cli_env(db_url, tmp_path)

    done = run_cli(env, "purge")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("purge: 1 item(s) destroyed, 1 object(s) deleted")
    assert PHONE not in done.stdout + done.stderr
    assert (await fetch(archive.db, old.id)).status == ItemStatus.PURGED.value

    once = run_cli(env, "worker", "--once")
    assert once.returncode == 0, once.stderr
    lines = once.stdout.splitlines()
    assert lines[0].startswith("purge: 0 item(s) destroyed")
    assert lines[1].startswith("sweep: 0 abandoned upload(s) removed")
    assert PHONE not in once.stdout + once.stderr
    for item in (held, new):
        assert (await fetch(archive.db, item.id)).status == ItemStatus.ACTIVE.value
    assert sorted(await stored_keys(archive.store)) == sorted(
        object_keys(held) + object_keys(new))

    bad = run_cli(env, "purge", "--tenant", T)
    assert bad.returncode == 2 and "--dry-run only" in bad.stderr
