"""Fixtures for the ingest tests: an Ingestor over the test Archive, with its tenant."""

import pytest

from archive.service import Archive
from archive.tokens import ensure_tenant
from ingest.audio import Transcoder
from ingest.service import Ingestor

TENANT = "camden"
UPLOAD_LIMIT = 20 * 1024 * 1024


async def add_tenant(archive: Archive, tenant: str = TENANT) -> None:
    async with archive.db.session() as session:
        await ensure_tenant(session, tenant, archive.clock.now())
        await session.commit()


def new_ingestor(archive: Archive) -> Ingestor:
    """Another Ingestor over the same Archive: a second importer process, say."""
    return Ingestor(archive, Transcoder(), max_upload_bytes=UPLOAD_LIMIT)


@pytest.fixture
async def ingestor(archive: Archive) -> Ingestor:
    await add_tenant(archive)
    return new_ingestor(archive)
