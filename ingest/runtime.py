"""An Ingestor built from the settings, for commands that run outside the web app (the spool,
S3-drop and legacy importers)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from archive.backends import open_archive
from archive.settings import Settings
from ingest.service import Ingestor


@asynccontextmanager
async def open_ingestor(settings: Settings) -> AsyncIterator[Ingestor]:
    """Open the index (migrating it when ``auto_migrate``), the store and the keyring, and
    yield an Ingestor over them."""
    async with open_archive(settings) as archive:
        yield Ingestor.from_settings(archive, settings)
