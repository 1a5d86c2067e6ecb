"""Fixtures of the lifecycle tests: an Archive over an S3 bucket with Object Lock."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from archive.clock import ManualClock
from archive.db import Database
from archive.service import Archive
from archive.tokens import ensure_tenant
from storage.keyring import LocalKeyring
from tests.storage.conftest import open_s3

T = "camden"


@asynccontextmanager
async def locked_archive(db: Database, tmp_path: Path, clock: ManualClock,
                         endpoint: str) -> AsyncIterator[Archive]:
    """An Archive over a new S3 bucket with Object Lock (any index database)."""
    store = await open_s3(endpoint, object_lock=True)
    keys = await LocalKeyring(tmp_path / "keyring.json").open()
    async with db.session() as session:
        await ensure_tenant(session, T, clock.now())
        await session.commit()
    try:
        yield Archive(db, store, keys, clock, segment_size=4096)
    finally:
        await store.close()


@pytest.fixture
async def locked(db: Database, tmp_path: Path, clock: ManualClock,
                 moto_endpoint: str) -> AsyncIterator[Archive]:
    async with locked_archive(db, tmp_path, clock, moto_endpoint) as archive:
        yield archive
