"""Stores for the storage tests: every backend behind one parametrized fixture.

S3 runs against the session's moto server over HTTP, one fresh bucket per test. Parts are 5 MiB
(S3's minimum) so that multipart uploads are exercised by objects of modest size.
"""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage.base import BlobStore
from storage.local import LocalBlobStore
from storage.s3 import MIN_PART_SIZE, S3BlobStore, create_bucket
from tests.storage.helpers import SESSION, TEST_KEY, raw_s3_client

BACKENDS = ["local", "s3"]


def bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:24]}"


async def open_s3(endpoint: str, *, object_lock: bool = False, prefix: str = "") -> S3BlobStore:
    bucket = bucket_name()
    await create_bucket(
        bucket,
        endpoint_url=endpoint,
        object_lock=object_lock,
        retries=1,
        session=SESSION,
        access_key=TEST_KEY,
        secret_key=TEST_KEY,
    )
    return await s3_store(endpoint, bucket, prefix).open()


def s3_store(endpoint: str, bucket: str, prefix: str = "") -> S3BlobStore:
    """An unopened S3 store with the tests' settings: smallest parts, one retry."""
    return S3BlobStore(
        bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        part_size=MIN_PART_SIZE,
        retries=1,
        session=SESSION,
        access_key=TEST_KEY,
        secret_key=TEST_KEY,
    )


async def open_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if name == "local":
        return await LocalBlobStore(tmp_path / "store").open()
    # Only S3 tests start moto: a local-only run (-k local) needs no server.
    endpoint: str = request.getfixturevalue("moto_endpoint")
    return await open_s3(endpoint, prefix="archive")


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """An empty store of each backend in turn (S3 under the key prefix ``archive/``)."""
    opened = await open_backend(request.param, request, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def locked_store(moto_endpoint: str) -> AsyncIterator[S3BlobStore]:
    """An S3 store on a bucket with Object Lock (hence versioning) enabled."""
    opened = await open_s3(moto_endpoint, object_lock=True)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def s3_client(moto_endpoint: str) -> AsyncIterator[Any]:
    """A raw S3 client on the moto server, to check what a store did from outside it."""
    async with raw_s3_client(moto_endpoint) as client:
        yield client
