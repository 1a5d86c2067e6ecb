"""Index databases for tests: a fresh SQLite file, or a PostgreSQL database cloned per test from
a migrated template (cloning is much faster than migrating each time)."""

import asyncio
import os
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import asyncpg
import sqlalchemy as sa

from archive.db import Database

T = TypeVar("T")

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def pg_admin_url() -> str:
    return os.environ.get("ARCHIVE_TEST_DATABASE_URL", DEFAULT_PG)


def pg_url_for(name: str) -> str:
    url = sa.make_url(pg_admin_url()).set(database=name)
    return url.render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(pg_admin_url(), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run(coro: Coroutine[object, object, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop (the session
    fixtures below may first be requested from an async test's fixture)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def pg_reachable() -> str | None:
    """``None`` if the test server answers, else why not."""
    try:
        _run(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {pg_admin_url()} is not reachable: {exc}"
    return None


class PgTemplate:
    """A migrated template database; ``clone()`` gives each test its own copy."""

    def __init__(self) -> None:
        self.name = f"archive_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    def create(self) -> None:
        _run(self._create())

    async def _create(self) -> None:
        await _admin(f'CREATE DATABASE "{self.name}"')
        db = Database(pg_url_for(self.name).replace("postgresql://", "postgresql+asyncpg://"))
        try:
            await db.upgrade()
        finally:
            await db.close()

    async def clone(self) -> str:
        name = f"archive_t_{uuid.uuid4().hex[:12]}"
        await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"')
        return name

    @staticmethod
    async def drop(name: str) -> None:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        _run(self.drop(self.name))
