"""An Ingestor built from the settings, for commands that run outside the web app (the spool,
S3-drop and legacy importers): the same wiring as ``web.app``'s cleanup contexts, as one async
context manager that closes what it opened in reverse order."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from archive.backends import open_keyring, open_store
from archive.clock import SystemClock
from archive.db import Database
from archive.service import Archive
from archive.settings import Settings
from ingest.audio import Transcoder
from ingest.service import Ingestor


@asynccontextmanager
async def open_ingestor(settings: Settings) -> AsyncIterator[Ingestor]:
    """Open the index (migrating it when ``auto_migrate``), the store and the keyring, and
    yield an Ingestor over them."""
    async with AsyncExitStack() as stack:
        db = Database(settings.resolved_database_url)
        stack.push_async_callback(db.close)
        if settings.auto_migrate:
            await db.upgrade()
        store = await open_store(settings)
        stack.push_async_callback(store.close)
        keys = await open_keyring(settings)
        stack.push_async_callback(keys.close)
        archive = Archive(db, store, keys, SystemClock(), settings.segment_size)
        transcoder = Transcoder(settings.ffmpeg or None, settings.transcode_concurrency or None)
        yield Ingestor(archive, transcoder, settings.max_upload_bytes)
