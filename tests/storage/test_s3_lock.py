"""Object Lock: a legal hold set through the store is enforced by S3 itself."""

from typing import Any

import pytest
from botocore.exceptions import ClientError

from storage.base import iter_bytes, read_all
from storage.errors import LegalHoldError
from storage.s3 import S3BlobStore

KEY = "t1/call/2026/11/23/0192f3a0-0000-7000-8000-00000000000a"


async def versions_of(client: Any, store: S3BlobStore, full_key: str) -> list[str]:
    reply = await client.list_object_versions(Bucket=store.bucket, Prefix=full_key)
    entries = [*reply.get("Versions", []), *reply.get("DeleteMarkers", [])]
    return [e["VersionId"] for e in entries if e["Key"] == full_key]


async def test_legal_hold_blocks_deletion_until_cleared(
    locked_store: S3BlobStore, s3_client: Any
) -> None:
    store = locked_store
    assert store.supports_legal_hold
    await store.put(KEY, iter_bytes(b"recording"))
    await store.set_legal_hold(KEY, True)
    info = await store.stat(KEY)
    assert info is not None
    assert info.legal_hold

    with pytest.raises(LegalHoldError):
        await store.delete(KEY)
    assert await read_all(store.get(KEY)) == b"recording"

    # Going round the archive does not help: S3 refuses to delete the held version.
    [version] = await versions_of(s3_client, store, KEY)
    with pytest.raises(ClientError) as refused:
        await s3_client.delete_object(Bucket=store.bucket, Key=KEY, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert await versions_of(s3_client, store, KEY) == [version]

    await store.set_legal_hold(KEY, False)
    info = await store.stat(KEY)
    assert info is not None
    assert not info.legal_hold
    await store.delete(KEY)
    assert await store.stat(KEY) is None
    assert await versions_of(s3_client, store, KEY) == []
    await store.delete(KEY)  # still idempotent


async def test_delete_removes_every_version_and_delete_marker(
    locked_store: S3BlobStore, s3_client: Any
) -> None:
    store = locked_store
    other = KEY + "-other"  # shares the key as a prefix and must survive
    await store.put(KEY, iter_bytes(b"v1"))
    await store.put(KEY, iter_bytes(b"v2"))
    await s3_client.delete_object(Bucket=store.bucket, Key=KEY)  # a delete marker
    await store.put(KEY, iter_bytes(b"v3"))
    await store.put(other, iter_bytes(b"keep"))
    assert len(await versions_of(s3_client, store, KEY)) == 4

    await store.delete(KEY)
    assert await versions_of(s3_client, store, KEY) == []
    assert await read_all(store.get(other)) == b"keep"


async def test_a_held_old_version_blocks_deleting_any_version(
    locked_store: S3BlobStore, s3_client: Any
) -> None:
    """Delete checks every version first, so it never leaves an object half-deleted."""
    store = locked_store
    await store.put(KEY, iter_bytes(b"v1"))
    await store.set_legal_hold(KEY, True)
    await store.put(KEY, iter_bytes(b"v2"))  # the newest version is not held
    with pytest.raises(LegalHoldError):
        await store.delete(KEY)
    assert len(await versions_of(s3_client, store, KEY)) == 2
    assert await read_all(store.get(KEY)) == b"v2"
