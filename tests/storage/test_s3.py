"""What only the S3 backend has: bucket checks, key prefixes, part boundaries, error mapping."""

import asyncio
from typing import Any

import pytest

from storage.base import iter_bytes, read_all
from storage.errors import StoreUnavailableError
from storage.s3 import MIN_PART_SIZE
from tests.servers import free_port
from tests.storage.conftest import bucket_name, open_s3, s3_store
from tests.storage.helpers import chunks, data, hash_stream, sha256_of


async def test_open_refuses_a_missing_bucket(moto_endpoint: str) -> None:
    name = bucket_name()
    with pytest.raises(StoreUnavailableError, match=name):
        await s3_store(moto_endpoint, name).open()


async def test_unreachable_endpoint_is_unavailable() -> None:
    store = s3_store(f"http://127.0.0.1:{free_port()}", bucket_name())
    with pytest.raises(StoreUnavailableError, match="cannot be reached"):
        await store.open()


async def test_ping_fails_once_the_bucket_is_gone(moto_endpoint: str, s3_client: Any) -> None:
    store = await open_s3(moto_endpoint)
    try:
        await store.ping()
        await s3_client.delete_bucket(Bucket=store.bucket)
        with pytest.raises(StoreUnavailableError):
            await store.ping()
        with pytest.raises(StoreUnavailableError, match=store.bucket):
            await store.put("a/b", iter_bytes(b"x"))
    finally:
        await store.close()


async def test_prefix_confines_the_store(moto_endpoint: str, s3_client: Any) -> None:
    store = await open_s3(moto_endpoint, prefix="archive")
    try:
        await s3_client.put_object(Bucket=store.bucket, Key="elsewhere/a", Body=b"not ours")
        await s3_client.put_object(Bucket=store.bucket, Key="archive-old/a", Body=b"not ours")
        await store.put("t1/a", iter_bytes(b"ours"))
        raw = await s3_client.get_object(Bucket=store.bucket, Key="archive/t1/a")
        async with raw["Body"] as body:
            assert await body.read() == b"ours"
        assert [i.key async for i in store.list()] == ["t1/a"]
        assert await store.stat("elsewhere/a") is None
    finally:
        await store.close()


async def test_listing_pages_through_many_objects(moto_endpoint: str) -> None:
    store = await open_s3(moto_endpoint)
    try:
        keys = [f"t1/{n:04d}" for n in range(1005)]  # more than one 1000-key page
        await asyncio.gather(*(store.put(key, iter_bytes(b"")) for key in keys))
        assert [i.key async for i in store.list("t1/")] == keys
    finally:
        await store.close()


@pytest.mark.parametrize(
    "size", [MIN_PART_SIZE - 1, MIN_PART_SIZE, MIN_PART_SIZE + 1, 2 * MIN_PART_SIZE]
)
async def test_sizes_around_a_part(moto_endpoint: str, s3_client: Any, size: int) -> None:
    """Up to one part goes up with PutObject; past it, as a multipart upload (ETag 'x-N')."""
    store = await open_s3(moto_endpoint)
    try:
        assert await store.put("t1/obj", chunks(size, seed=size)) == size
        assert await hash_stream(store.get("t1/obj")) == (sha256_of(size, size), size)
        head = await s3_client.head_object(Bucket=store.bucket, Key="t1/obj")
        parts = -(-size // MIN_PART_SIZE)
        assert head["ETag"].strip('"').endswith(f"-{parts}") == (parts > 1)
        tail = await read_all(store.get("t1/obj", size - 3))
        assert tail == data(3, seed=size, offset=size - 3)
    finally:
        await store.close()


async def test_open_detects_object_lock(moto_endpoint: str) -> None:
    plain = await open_s3(moto_endpoint)
    locked = await open_s3(moto_endpoint, object_lock=True)
    try:
        assert not plain.supports_legal_hold
        assert locked.supports_legal_hold
    finally:
        await plain.close()
        await locked.close()
