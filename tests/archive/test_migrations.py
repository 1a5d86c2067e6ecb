"""Migrations build exactly the schema the models describe, on both databases."""

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import archive.models  # noqa: F401  (registers the tables)
from archive.db import Database


def _diff(connection: Connection) -> list[object]:
    ctx = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(ctx, SQLModel.metadata))


async def test_migrated_schema_matches_models(db: Database) -> None:
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []
    assert await db.current_revision() is not None


async def test_upgrade_is_idempotent_and_safe_to_race(db: Database) -> None:
    before = await db.current_revision()
    others = [Database(db.url) for _ in range(3)]
    try:
        await asyncio.gather(*(o.upgrade() for o in others))
    finally:
        await asyncio.gather(*(o.close() for o in others))
    assert await db.current_revision() == before
