"""Opens the object store and the keyring that the settings name, and an Archive over them
for commands that run outside the web app (which wires the same parts in cleanup contexts)."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from urllib.parse import urlparse

from archive.clock import Clock, SystemClock
from archive.db import Database
from archive.errors import ConfigurationError
from archive.service import Archive
from archive.settings import Settings
from storage.base import BlobStore
from storage.keyring import KeyProvider, LocalKeyring


async def open_store(settings: Settings) -> BlobStore:
    url = urlparse(settings.resolved_store_url)
    if url.scheme == "file":
        from storage.local import LocalBlobStore

        return await LocalBlobStore(Path(url.path)).open()
    if url.scheme == "s3":
        from storage.s3 import S3BlobStore

        if not url.netloc:
            raise ConfigurationError("setting store_url: s3:// needs a bucket name")
        return await S3BlobStore(
            bucket=url.netloc,
            prefix=url.path.strip("/"),
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
        ).open()
    raise ConfigurationError("setting store_url: expected file:///path or s3://bucket/prefix")


async def open_keyring(settings: Settings) -> KeyProvider:
    if settings.keyring == "kms":
        from storage.kms import KmsKeyring

        return await KmsKeyring(
            endpoint_url=settings.kms_endpoint_url or None,
            region=settings.kms_region,
            alias_prefix=settings.kms_alias_prefix,
        ).open()
    return await LocalKeyring(settings.resolved_keyring_path).open()


@asynccontextmanager
async def open_archive(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Archive]:
    """The index (migrated when ``auto_migrate``), store and keyring, as one Archive; closed in
    reverse order on leaving."""
    async with AsyncExitStack() as stack:
        db = Database(settings.resolved_database_url)
        stack.push_async_callback(db.close)
        if settings.auto_migrate:
            await db.upgrade()
        store = await open_store(settings)
        stack.push_async_callback(store.close)
        keys = await open_keyring(settings)
        stack.push_async_callback(keys.close)
        yield Archive(db, store, keys, clock or SystemClock(), settings.segment_size,
                      windows=settings.retention_windows)
