"""Retention policies: versions and audit, the bulk recompute (to the microsecond, on both
databases), the preview and its confirm token, windows fixed by the settings file, a change
racing item activations, and the ``archive policies`` commands."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from archive import audit, retention
from archive.clock import ManualClock
from archive.db import Database, tenant_lock
from archive.errors import BadRequestError, ConflictError, NotFoundError
from archive.ids import uuid7
from archive.models import AuditEvent, Channel, Hold, Item, ItemStatus, Policy
from archive.service import Actor, Archive
from archive.tokens import ensure_tenant
from lifecycle.policies import (
    apply_change,
    format_policies,
    list_policies,
    plan_change,
    sync_settings_policies,
)
from storage.base import iter_bytes
from tests.archive.test_search import add_hold, add_item
from tests.conftest import START
from tests.helpers import run_archive

ADMIN = Actor("token:admin-1", "admin")
INGEST = Actor("test", "ingest")


async def tenant(archive: Archive, name: str) -> None:
    async with archive.db.session() as session:
        await ensure_tenant(session, name, archive.clock.now())
        await session.commit()


async def put(archive: Archive, external_id: str, started_at: datetime, *,
              tenant_: str = "camden", channel: Channel = Channel.CALL,
              ended_at: datetime | None = None) -> Item:
    fields = {"ended_at": ended_at} if ended_at else {}
    return await archive.put(tenant=tenant_, channel=channel, external_id=external_id,
                             started_at=started_at, media_type="audio/wav",
                             chunks=iter_bytes(b"RIFF" + external_id.encode()), actor=INGEST,
                             fields=fields)


async def read(db: Database, item: Item) -> Item:
    async with db.reader() as session:
        found = await session.get(Item, item.id)
    assert found is not None
    return found


async def change(archive: Archive, days: int, *, tenant_: str = "camden",
                 channel: Channel = Channel.CALL, reason: str | None = None) -> int:
    plan = await plan_change(archive, tenant_, channel, days)
    result = await apply_change(archive, tenant=tenant_, channel=channel, days=days,
                                actor=ADMIN, source="api", reason=reason, confirm=plan.confirm)
    return result.recomputed


async def policy_events(db: Database, tenant_: str = "camden") -> list[AuditEvent]:
    async with db.reader() as session:
        return list((await session.exec(
            select(AuditEvent).where(AuditEvent.tenant == tenant_,
                                     AuditEvent.action == "policy.change")
            .order_by(col(AuditEvent.seq)))).all())


async def test_versions_history_and_audit(archive: Archive) -> None:
    await tenant(archive, "camden")
    [view] = [v for v in await list_policies(archive, "camden") if v.channel == Channel.CALL]
    assert (view.days, view.version, view.source, view.policy) == (365, 0, "default", "default")
    plan = await plan_change(archive, "camden", Channel.CALL, 30)
    assert (plan.current_days, plan.current_version, plan.current_source) == (
        365, 0, "default")
    assert "365 -> 30 days" in str(plan) and plan.confirm in str(plan)
    result = await apply_change(archive, tenant="camden", channel=Channel.CALL, days=30,
                                actor=ADMIN, source="api", reason="Records schedule v4 (private)",
                                confirm=plan.confirm)
    assert result.policy.version == 1 and "365 -> 30 days (version 1)" in str(result)
    await change(archive, 400)
    views = {v.channel: v for v in await list_policies(archive, "camden")}
    call = views[Channel.CALL]
    assert (call.days, call.version, call.source, call.set_by) == (400, 2, "api", ADMIN.name)
    assert call.policy == "camden/call" and not call.fixed_by_settings
    assert [(h.version, h.days) for h in call.history] == [(1, 30), (2, 400)]
    assert call.history[0].reason == "Records schedule v4 (private)"
    assert views[Channel.CHAT].days == 730 and views[Channel.CHAT].history == []
    events = await policy_events(archive.db)
    assert [e.detail for e in events] == [
        {"channel": "call", "days": 30, "previous_days": 365, "version": 1, "source": "api",
         "recomputed": 0},
        {"channel": "call", "days": 400, "previous_days": 30, "version": 2, "source": "api",
         "recomputed": 0},
    ]
    assert {(e.actor, e.role) for e in events} == {(ADMIN.name, "admin")}
    async with archive.db.reader() as session:
        assert all(r.ok for r in await audit.verify(session, "camden"))
    table = format_policies(await list_policies(archive, None))
    assert table.endswith("\n")
    rows = [line.split() for line in table.splitlines()]
    assert rows[0][:4] == ["TENANT", "CHANNEL", "DAYS", "VERSION"]
    assert rows[1][:6] == ["camden", "call", "400", "2", "api", ADMIN.name]
    assert rows[2][:5] == ["30", "1", "api", ADMIN.name, "2026-11-23"]  # the earlier version
    assert rows[3][:6] == ["camden", "chat", "730", "0", "default", "-"]
    with pytest.raises(NotFoundError):
        await list_policies(archive, "nowhere")


async def test_recompute_to_the_microsecond_shorter_and_longer(
    archive: Archive, clock: ManualClock
) -> None:
    await tenant(archive, "camden")
    await tenant(archive, "barnet")
    # Fractions that SQLite's millisecond date functions would round into the next second.
    old = await put(archive, "old", START - timedelta(days=200, microseconds=1),
                    ended_at=START - timedelta(days=200) + timedelta(seconds=90,
                                                                     microseconds=999_999))
    recent = await put(archive, "recent", START - timedelta(days=10, microseconds=3))
    late_night = await put(archive, "late", datetime(2026, 3, 28, 23, 59, 59, 999999, UTC))
    chat = await put(archive, "chat", START - timedelta(days=200), channel=Channel.CHAT)
    other = await put(archive, "other", START - timedelta(days=200), tenant_="barnet")
    erased = await put(archive, "erased", START - timedelta(days=300))
    await archive.destroy("camden", erased.id, reason="erasure", actor=ADMIN)
    pending = await add_item(archive.db, START - timedelta(days=300),
                             status=ItemStatus.PENDING)
    before = {i.id: await read(archive.db, i) for i in (chat, other, erased, pending)}
    assert (await read(archive.db, old)).retention_basis == {
        "policy": "default", "version": 0, "days": 365}

    for version, days in ((1, 100), (2, 1000)):  # shorter, then longer
        assert await change(archive, days) == 3
        for item in (old, recent, late_night):
            got = await read(archive.db, item)
            assert got.retain_until == retention.retain_until(item.started_at, item.ended_at,
                                                              days)
            assert got.retention_basis == {"policy": "camden/call", "version": version,
                                           "days": days}
        for item in (chat, other, erased, pending):
            got = await read(archive.db, item)
            assert (got.retain_until, got.retention_basis) == (
                before[item.id].retain_until, before[item.id].retention_basis)
        if days == 100:  # a shorter window applies to old items too: this one is overdue
            shortened = (await read(archive.db, old)).retain_until
            assert shortened is not None and shortened <= clock.now()

    # An item stored after the change is kept on the new basis.
    clock.advance(timedelta(hours=1))
    fresh = await put(archive, "fresh", clock.now() - timedelta(minutes=5),
                      ended_at=clock.now())
    got = await archive.get("camden", fresh.id)
    assert got.retention_basis == {"policy": "camden/call", "version": 2, "days": 1000}
    assert got.retain_until == clock.now() + timedelta(days=1000)


async def test_plan_counts_and_earliest(archive: Archive, clock: ManualClock) -> None:
    await tenant(archive, "camden")
    a = await put(archive, "a", START - timedelta(days=50))
    b = await put(archive, "b", START - timedelta(days=40), ended_at=START - timedelta(days=39))
    await put(archive, "c", START - timedelta(days=5))
    await put(archive, "d", START - timedelta(days=90), channel=Channel.CHAT)
    await add_hold(archive.db, "CMP-1", [b])
    await add_hold(archive.db, "CMP-OLD", [a], status="released")
    plan = await plan_change(archive, "camden", Channel.CALL, 30)
    assert (plan.recomputed, plan.expire_now, plan.expire_now_held) == (3, 2, 1)
    assert plan.earliest == a.started_at + timedelta(days=30)
    assert "2 would be expired at once: 1 destroyed by the next purge pass, 1 kept by legal " \
           "holds" in str(plan)
    # Exactly at the boundary: retain_until == now counts as expired.
    edge = await plan_change(archive, "camden", Channel.CALL, 39)
    assert edge.expire_now == 2
    assert (await plan_change(archive, "camden", Channel.CALL, 3650)).expire_now == 0
    empty = await plan_change(archive, "camden", Channel.CHAT, 100)
    assert (empty.recomputed, empty.expire_now, empty.earliest) == (1, 0,
                                                                     START + timedelta(days=10))


async def test_stale_and_foreign_tokens_change_nothing(archive: Archive) -> None:
    await tenant(archive, "camden")
    item = await put(archive, "a", START - timedelta(days=50))
    first = await plan_change(archive, "camden", Channel.CALL, 30)
    second = await plan_change(archive, "camden", Channel.CALL, 60)
    await apply_change(archive, tenant="camden", channel=Channel.CALL, days=60, actor=ADMIN,
                       source="api", reason=None, confirm=second.confirm)
    with pytest.raises(ConflictError, match="changed since the preview; preview again"):
        await apply_change(archive, tenant="camden", channel=Channel.CALL, days=30,
                           actor=ADMIN, source="api", reason=None, confirm=first.confirm)
    fresh = await plan_change(archive, "camden", Channel.CALL, 30)
    with pytest.raises(ConflictError, match="not from a preview of this change"):
        await apply_change(archive, tenant="camden", channel=Channel.CALL, days=31,
                           actor=ADMIN, source="api", reason=None, confirm=fresh.confirm)
    with pytest.raises(ConflictError, match="not from a preview"):
        await apply_change(archive, tenant="camden", channel=Channel.CHAT, days=30,
                           actor=ADMIN, source="api", reason=None, confirm=fresh.confirm)
    got = await read(archive.db, item)
    assert got.retention_basis == {"policy": "camden/call", "version": 1, "days": 60}
    assert len(await policy_events(archive.db)) == 1
    assert fresh.current_version == 1


async def test_refusals(archive: Archive) -> None:
    await tenant(archive, "camden")
    with pytest.raises(NotFoundError):
        await plan_change(archive, "nowhere", Channel.CALL, 30)
    for days in (0, -1, retention.MAX_DAYS + 1):
        with pytest.raises(BadRequestError) as bad:
            await plan_change(archive, "camden", Channel.CALL, days)
        assert [e.field for e in bad.value.errors] == ["days"]
    with pytest.raises(NotFoundError):
        await apply_change(archive, tenant="nowhere", channel=Channel.CALL, days=30,
                           actor=ADMIN, source="api", reason=None, confirm="x")
    async with archive.db.reader() as session:
        assert (await session.exec(select(Policy))).all() == []


def with_windows(archive: Archive, text: str, db: Database | None = None) -> Archive:
    return Archive(db or archive.db, archive.store, archive.keys, archive.clock,
                   archive.segment_size, windows=retention.Windows.parse(text))


async def test_settings_windows_sync_once_and_cannot_be_changed(
    archive: Archive, db_url: str
) -> None:
    for name in ("camden", "barnet"):
        await tenant(archive, name)
    old_call = await put(archive, "a", START - timedelta(days=200))
    chat = await put(archive, "b", START - timedelta(days=200), channel=Channel.CHAT)
    fixed = with_windows(archive, "call=100,camden.chat=50")
    assert await sync_settings_policies(fixed) == 3  # camden call+chat, barnet call
    assert await sync_settings_policies(fixed) == 0  # idempotent
    got = await read(archive.db, old_call)
    assert got.retention_basis == {"policy": "camden/call", "version": 1, "days": 100}
    assert got.retain_until == old_call.started_at + timedelta(days=100)
    assert (await read(archive.db, chat)).retention_basis == {
        "policy": "camden/chat", "version": 1, "days": 50}
    views = {(v.tenant, v.channel): v for v in await list_policies(fixed, None)}
    call = views["camden", Channel.CALL]
    assert (call.source, call.set_by, call.fixed_by_settings) == ("settings", "settings", True)
    assert not views["barnet", Channel.CHAT].fixed_by_settings
    assert views["barnet", Channel.CHAT].version == 0
    with pytest.raises(ConflictError, match="retention_days"):
        await plan_change(fixed, "camden", Channel.CALL, 30)
    with pytest.raises(ConflictError, match="retention_days"):
        await apply_change(fixed, tenant="camden", channel=Channel.CALL, days=30, actor=ADMIN,
                           source="api", reason=None, confirm="x")
    await change(fixed, 40, tenant_="barnet", channel=Channel.CHAT)  # not fixed: allowed

    # A new value in the settings file: one new version per window it changes, written once
    # even when several processes start together (each with its own connection pool).
    dbs = [Database(db_url) for _ in range(3)]
    try:
        starters = [with_windows(archive, "call=120,camden.chat=50", db) for db in dbs]
        written = await asyncio.gather(*(sync_settings_policies(a) for a in starters))
    finally:
        for db in dbs:
            await db.close()
    assert sum(written) == 2  # camden call, barnet call
    async with archive.db.reader() as session:
        versions = (await session.exec(
            select(Policy.tenant, Policy.channel, Policy.version, Policy.days)
            .order_by(col(Policy.tenant), col(Policy.channel), col(Policy.version)))).all()
    assert list(versions) == [("barnet", "call", 1, 100), ("barnet", "call", 2, 120),
                              ("barnet", "chat", 1, 40),
                              ("camden", "call", 1, 100), ("camden", "call", 2, 120),
                              ("camden", "chat", 1, 50)]
    events = await policy_events(archive.db)
    assert [(e.actor, e.detail["days"] if e.detail else None) for e in events] == [
        ("settings", 100), ("settings", 50), ("settings", 120)]


async def test_a_change_racing_activations_reaches_every_item(archive: Archive) -> None:
    """Items becoming active while the window changes: each either sees the new version or
    is recomputed by it (the tenant lock), never left on the old basis. A live query hold
    (matching nothing) makes each activation do what it does in production between reading
    the policy and committing; the change lands after a different number of steps each round."""
    await tenant(archive, "camden")
    async with archive.db.session() as session:
        session.add(Hold(id=uuid7(), tenant="camden", case_ref="CMP-Q", reason="complaint",
                         query={"agent_id": "nobody"}, placed_by="t", placed_at=START))
        await session.commit()
    await put(archive, "before", START - timedelta(days=3))
    for version, delay in enumerate((0, 1, 2, 3, 5, 7, 9, 12, 15, 20), start=1):
        days = 40 + version
        plan = await plan_change(archive, "camden", Channel.CALL, days)

        async def apply(steps: int, days: int, confirm: str) -> None:
            for _ in range(steps):
                await asyncio.sleep(0)
            await apply_change(archive, tenant="camden", channel=Channel.CALL, days=days,
                               actor=ADMIN, source="api", reason=None, confirm=confirm)

        await asyncio.gather(*(put(archive, f"race-{version}-{n}", START - timedelta(hours=n))
                               for n in range(8)), apply(delay, days, plan.confirm))
        async with archive.db.reader() as session:
            items = (await session.exec(select(Item).where(Item.status == "active"))).all()
        assert len(items) == 1 + 8 * version
        for item in items:
            assert item.retention_basis == {"policy": "camden/call", "version": version,
                                            "days": days}, f"round {version}"
            assert item.retain_until == item.started_at + timedelta(days=days)


async def test_a_change_waits_for_an_activation_in_progress(
    archive: Archive, db_url: str
) -> None:
    """Deterministically: while another transaction holds the tenant's lock as an activation
    does (shared), the change waits, and it applies once that transaction ends."""
    await tenant(archive, "camden")
    plan = await plan_change(archive, "camden", Channel.CALL, 30)
    other = Database(db_url)
    try:
        async with other.session() as activation:
            await activation.exec(select(Policy))  # begins the transaction (SQLite: the writer)
            await tenant_lock(activation, "camden", exclusive=False)
            change = asyncio.create_task(apply_change(
                archive, tenant="camden", channel=Channel.CALL, days=30, actor=ADMIN,
                source="api", reason=None, confirm=plan.confirm))
            await asyncio.sleep(0.3)
            assert not change.done()
            await activation.commit()
        result = await asyncio.wait_for(change, 10)
    finally:
        await other.close()
    assert result.policy.version == 1


# -- the command ----------------------------------------------------------------------------------



async def test_policies_commands(tmp_path: Path) -> None:
    data = tmp_path / "var"
    assert run_archive(["tenants", "create", "camden"], data).returncode == 0
    db = Database(f"sqlite+aiosqlite:///{data / 'archive.db'}")
    try:
        now = datetime.now(UTC)
        async with db.session() as session:
            for n, age in enumerate((400, 200, 10)):
                await add_item_in(session, now - timedelta(days=age), n)
            await session.commit()
    finally:
        await db.close()

    listed = run_archive(["policies", "list"], data)
    assert listed.returncode == 0, listed.stderr
    assert rows_of(listed.stdout)["camden", "call"][2:5] == ["365", "0", "default"]

    preview = run_archive(["policies", "set", "--tenant", "camden", "--channel", "call", "--days",
                   "100"], data)
    assert preview.returncode == 0, preview.stderr
    assert "365 -> 100 days" in preview.stdout
    assert "3 active item(s) get a new retain_until" in preview.stdout
    assert "2 would be expired at once" in preview.stdout
    assert "nothing changed" in preview.stderr
    assert rows_of(run_archive(["policies", "list"], data).stdout)["camden", "call"][2:4] == [
        "365", "0"]

    applied = run_archive(["policies", "set", "--tenant", "camden", "--channel", "call", "--days",
                   "100", "--reason", "schedule v4", "--yes"], data)
    assert applied.returncode == 0, applied.stderr
    assert "(version 1); recomputed retain_until of 3 active item(s)" in applied.stdout
    mine = run_archive(["policies", "list", "--tenant", "camden"], data).stdout
    assert rows_of(mine)["camden", "call"][2:6] == ["100", "1", "cli", "cli"]

    missing = run_archive(["policies", "set", "--tenant", "nowhere", "--channel", "call", "--days",
                   "10", "--yes"], data)
    assert missing.returncode == 2 and "no tenant 'nowhere'" in missing.stderr
    bad = run_archive(["policies", "set", "--tenant", "camden", "--channel", "call", "--days", "0"],
              data)
    assert bad.returncode == 2 and "days" in bad.stderr


async def add_item_in(session: AsyncSession, started_at: datetime, n: int) -> None:
    """An active call of tenant camden with a default-basis retain_until, written directly."""
    session.add(Item(id=uuid7(), tenant="camden", channel="call", external_id=f"cli-{n}",
                     status="active", started_at=started_at, created_at=started_at,
                     updated_at=started_at,
                     retain_until=retention.retain_until(started_at, None, 365),
                     retention_basis=retention.default_basis(Channel.CALL)))


def rows_of(table: str) -> dict[tuple[str, str], list[str]]:
    """The rows of ``archive policies list`` that name a tenant, by (tenant, channel)."""
    rows = [line.split() for line in table.splitlines()[1:]]
    return {(r[0], r[1]): r for r in rows if len(r) > 1 and r[1] in {"call", "chat"}}
