"""The index database: one async engine per process, sessions, readiness and migrations.

SQLite (aiosqlite) is the embedded default, PostgreSQL (asyncpg) the production one.

On SQLite a write session starts with ``BEGIN IMMEDIATE``: SQLite allows one writer, and a
transaction that reads and then writes would otherwise fail with "database is locked" instead of
waiting for its turn (see SQLAlchemy's pysqlite notes on serializable isolation). Within one
process, writers also queue on an asyncio lock: a writer waiting in SQLite's busy handler
sleeps in steps of up to 100 ms, while one queued in asyncio starts the moment the lock is
free (SQLite's busy timeout still orders writers of different processes). Read sessions
(``Database.reader``) begin a deferred transaction, which in WAL mode never waits for a writer.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from archive.errors import UnavailableError

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant: several processes starting at once take turns to migrate.
_MIGRATION_LOCK = 7_262_010_001
_TENANT_LOCK_SPACE = 726_201  # first key of tenant_lock's advisory locks
_READ_ONLY = "archive_read_only"  # execution option of the reader engine


def _sqlite_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=30000",
                       "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    """The index's engine and session factory."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        # hide_parameters: errors and logs must never carry the personal data in parameters.
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if url.startswith("sqlite"):
            path = sa.make_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            # A server connection can drop between uses (a file cannot).
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine = create_async_engine(url, **kwargs)
        self._read_engine = self.engine.execution_options(**{_READ_ONLY: True})
        self._write_lock: asyncio.Lock | None = None
        if self.is_sqlite:
            self._write_lock = asyncio.Lock()
            _sqlite_setup(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session that may write; its objects stay usable after commit."""
        return self._session(self.engine, self._write_lock)

    def reader(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session that only reads: on SQLite it neither takes nor waits for the write lock."""
        return self._session(self._read_engine, None)

    @asynccontextmanager
    async def _session(
        self, engine: AsyncEngine, lock: asyncio.Lock | None
    ) -> AsyncIterator[AsyncSession]:
        """Unavailability of the database becomes a 503."""
        try:
            async with AsyncExitStack() as stack:
                if lock is not None:
                    await stack.enter_async_context(lock)
                session = await stack.enter_async_context(
                    AsyncSession(engine, expire_on_commit=False))
                yield session
        except (OperationalError, DBAPIError, OSError) as exc:
            if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not isinstance(
                exc, OperationalError
            ):
                raise
            raise UnavailableError("the index database is unavailable") from exc

    async def ping(self) -> None:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (OperationalError, DBAPIError, OSError) as exc:
            raise UnavailableError("the index database is unavailable") from exc

    async def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to ``revision`` (several processes may call this at once)."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:  # SQLite's BEGIN IMMEDIATE already serialises
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            await conn.run_sync(_run_alembic, revision)

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_revision)

    async def close(self) -> None:
        await self.engine.dispose()


async def tenant_lock(session: AsyncSession, tenant: str, *, exclusive: bool) -> None:
    """Order this transaction against others of the tenant that must not interleave with it.

    Changes that apply to a tenant's items as a set (placing a query hold, changing a
    retention window) take it exclusively; an item becoming active takes it shared, so it
    either sees the change or is seen by it, never neither (READ COMMITTED would allow that).
    PostgreSQL: a transaction-scoped advisory lock. SQLite: nothing to do, as a write
    transaction already excludes every other writer.
    """
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        conn = await session.connection()
        await conn.execute(sa.text(f"SELECT {fn}(:space, hashtext(:tenant))").bindparams(
            space=_TENANT_LOCK_SPACE, tenant=tenant))


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _run_alembic(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
