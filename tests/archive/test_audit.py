"""The audit log is a hash chain per tenant: appends chain, tampering of any kind is found."""

import asyncio
import itertools
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import col, select

from archive import audit
from archive.clock import ManualClock
from archive.db import Database
from archive.models import AuditEvent, AuditHead


async def _append(db: Database, clock: ManualClock, tenant: str, n: int) -> None:
    for i in range(n):
        async with db.session() as session:
            await audit.append(session, tenant=tenant, at=clock.now(), actor="token:x",
                               role="admin", action="item.view", item_id=uuid.uuid4(),
                               detail={"i": i, "purpose": "complaint C-1 £ é"})
            await session.commit()
        clock.advance(timedelta(seconds=1))


async def _verify(db: Database, tenant: str | None = None) -> list[audit.ChainReport]:
    async with db.session() as session:
        return await audit.verify(session, tenant)


async def test_appends_form_an_intact_chain_per_tenant(db: Database, clock: ManualClock) -> None:
    await _append(db, clock, "camden", 5)
    await _append(db, clock, "barnet", 3)
    reports = {r.tenant: r for r in await _verify(db)}
    assert reports["camden"].ok and reports["camden"].events == 5
    assert reports["barnet"].ok and reports["barnet"].events == 3
    async with db.session() as session:
        events = (await session.exec(select(AuditEvent).where(AuditEvent.tenant == "camden")
                                     .order_by(col(AuditEvent.seq)))).all()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))


async def test_concurrent_appends_make_one_chain(db: Database, clock: ManualClock) -> None:
    async def one(i: int) -> None:
        async with db.session() as session:
            await audit.append(session, tenant="camden", at=clock.now(), actor=f"a{i}",
                               role="admin", action="item.view")
            await session.commit()

    await asyncio.gather(*(one(i) for i in range(20)))
    [report] = await _verify(db, "camden")
    assert report.ok, report.problems
    assert report.events == 20


async def _tamper(db: Database, stmt: sa.Executable) -> None:
    async with db.session() as session:
        await session.exec(stmt)  # type: ignore[call-overload]
        await session.commit()


async def test_edited_event_is_detected(db: Database, clock: ManualClock) -> None:
    await _append(db, clock, "camden", 4)
    await _tamper(db, sa.update(AuditEvent).where(col(AuditEvent.seq) == 2)
                  .values(actor="someone-else"))
    [report] = await _verify(db, "camden")
    assert not report.ok
    assert any("event 2 was altered" in p for p in report.problems)


async def test_edited_detail_or_time_is_detected(db: Database, clock: ManualClock) -> None:
    await _append(db, clock, "camden", 3)
    await _tamper(db, sa.update(AuditEvent).where(col(AuditEvent.seq) == 1)
                  .values(detail={"i": 99}))
    await _tamper(db, sa.update(AuditEvent).where(col(AuditEvent.seq) == 3)
                  .values(at=clock.now() - timedelta(days=1)))
    [report] = await _verify(db, "camden")
    assert any("event 1 was altered" in p for p in report.problems)
    assert any("event 3 was altered" in p for p in report.problems)


async def test_deleted_event_is_detected(db: Database, clock: ManualClock) -> None:
    await _append(db, clock, "camden", 4)
    await _tamper(db, sa.delete(AuditEvent).where(col(AuditEvent.seq) == 2))
    [report] = await _verify(db, "camden")
    assert any("event 2 is missing" in p for p in report.problems)
    assert any("does not follow" in p for p in report.problems)


async def test_cut_tail_is_detected(db: Database, clock: ManualClock) -> None:
    await _append(db, clock, "camden", 4)
    await _tamper(db, sa.delete(AuditEvent).where(col(AuditEvent.seq) >= 3))
    [report] = await _verify(db, "camden")
    assert any("removed from the end" in p for p in report.problems)


async def test_emptied_chain_is_detected(db: Database, clock: ManualClock) -> None:
    await _append(db, clock, "camden", 3)
    await _tamper(db, sa.delete(AuditEvent).where(col(AuditEvent.tenant) == "camden"))
    [report] = await _verify(db, "camden")
    assert any("removed from the end" in p for p in report.problems)


async def test_forged_head_does_not_hide_an_edit(db: Database, clock: ManualClock) -> None:
    await _append(db, clock, "camden", 3)
    await _tamper(db, sa.update(AuditEvent).where(col(AuditEvent.seq) == 3)
                  .values(action="item.export", hash="f" * 64))
    await _tamper(db, sa.update(AuditHead).values(hash="f" * 64))
    [report] = await _verify(db, "camden")
    assert any("event 3 was altered" in p for p in report.problems)
