"""The index's sessions: readers never wait for a writer; writers of one process take turns."""

import asyncio

import pytest
from sqlmodel import select

from archive.db import Database
from archive.models import Tenant
from archive.tokens import ensure_tenant
from tests.conftest import START

pytestmark = pytest.mark.usefixtures("db")


async def test_a_reader_is_not_held_up_by_an_open_write_transaction(db: Database) -> None:
    async with db.session() as session:
        await ensure_tenant(session, "camden", START)
        await session.commit()
    writing, done = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with db.session() as session:
            row = await session.get(Tenant, "camden")
            assert row is not None
            row.name = "Camden Council"
            session.add(row)
            await session.flush()  # the write lock is held from here to the commit
            writing.set()
            await done.wait()
            await session.commit()

    task = asyncio.create_task(writer())
    await writing.wait()
    async with asyncio.timeout(5), db.reader() as session:
        row = (await session.exec(select(Tenant).where(Tenant.id == "camden"))).one()
    assert row.name == "camden"  # the committed state, not the writer's uncommitted change
    done.set()
    await task
    async with db.reader() as session:
        row = (await session.exec(select(Tenant).where(Tenant.id == "camden"))).one()
    assert row.name == "Camden Council"


async def test_concurrent_writers_all_commit(db: Database) -> None:
    async def create(n: int) -> None:
        async with db.session() as session:
            await ensure_tenant(session, f"council-{n}", START)
            await session.commit()

    await asyncio.gather(*(create(n) for n in range(20)))
    async with db.reader() as session:
        rows = (await session.exec(select(Tenant))).all()
    assert {r.id for r in rows} == {f"council-{n}" for n in range(20)}
