"""Opens the object store and the keyring that the settings name."""

from pathlib import Path
from urllib.parse import urlparse

from archive.errors import ConfigurationError
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
