"""One conformance suite run over every blob backend (the ``store`` fixture's parameters)."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC

import pytest

from storage.base import BlobStore, iter_bytes, read_all
from storage.errors import BlobNotFoundError, InvalidKeyError, StorageError
from storage.s3 import MIN_PART_SIZE
from tests.storage.helpers import MIB, chunks, data, leftovers

KEY = "t1/call/2026/11/23/0192f3a0-0000-7000-8000-000000000001"


async def test_put_get_round_trip(store: BlobStore) -> None:
    body = data(300_000, seed=1)
    assert await store.put(KEY, iter_bytes(body, 7_000)) == len(body)
    assert await read_all(store.get(KEY)) == body


async def test_put_of_nothing_stores_an_empty_object(store: BlobStore) -> None:
    assert await store.put(KEY, iter_bytes(b"")) == 0
    assert await read_all(store.get(KEY)) == b""
    info = await store.stat(KEY)
    assert info is not None
    assert info.size == 0


async def test_multipart_sized_round_trip(store: BlobStore) -> None:
    """Bigger than two S3 parts, with chunks that straddle part boundaries."""
    size = 2 * MIN_PART_SIZE + 12_345
    assert await store.put(KEY, chunks(size, seed=2, chunk=100_003)) == size
    assert await read_all(store.get(KEY)) == data(size, seed=2)


async def test_put_replaces(store: BlobStore) -> None:
    await store.put(KEY, iter_bytes(b"first version"))
    await store.put(KEY, iter_bytes(b"second"))
    assert await read_all(store.get(KEY)) == b"second"


async def test_stat(store: BlobStore) -> None:
    assert await store.stat(KEY) is None
    await store.put(KEY, iter_bytes(b"x" * 1234))
    info = await store.stat(KEY)
    assert info is not None
    assert (info.key, info.size, info.legal_hold) == (KEY, 1234, False)
    assert info.modified.tzinfo is not None
    assert info.modified.utcoffset() == UTC.utcoffset(None)


async def test_list_by_prefix_in_key_order(store: BlobStore) -> None:
    keys = [
        "t2/call/2026/01/01/c",
        "t1/chat/2026/01/02/a",
        "t1/call/2026/01/02/b",
        "t1/call/2026/01/02/a",
        "t1/call/2026/01/10/a",
        "t1/call/2025/12/31/z",
    ]
    for n, key in enumerate(keys):
        await store.put(key, iter_bytes(b"x" * n))

    async def listed(prefix: str) -> list[tuple[str, int]]:
        return [(i.key, i.size) async for i in store.list(prefix)]

    sizes = {k: n for n, k in enumerate(keys)}
    assert await listed("") == sorted(sizes.items())
    assert await listed("t1/") == sorted((k, n) for k, n in sizes.items() if k.startswith("t1/"))
    assert await listed("t1/call/2026/01/0") == [
        ("t1/call/2026/01/02/a", 3),
        ("t1/call/2026/01/02/b", 2),
    ]
    assert await listed("t1/call/2026/01/02/a") == [("t1/call/2026/01/02/a", 3)]
    assert await listed("t3/") == []


async def test_list_order_is_bytewise_key_order(store: BlobStore) -> None:
    """'-' and '.' sort before '/', so a key can sort between a folder's name and its contents."""
    keys = ["a0", "a/b", "a.d", "a-c"]
    for key in keys:
        await store.put(key, iter_bytes(b"x"))
    assert [i.key async for i in store.list()] == sorted(keys)


async def test_delete_is_idempotent(store: BlobStore) -> None:
    await store.put(KEY, iter_bytes(b"some bytes"))
    await store.delete(KEY)
    assert await store.stat(KEY) is None
    with pytest.raises(BlobNotFoundError):
        await read_all(store.get(KEY))
    await store.delete(KEY)
    await store.delete("t1/never/stored")
    assert [i async for i in store.list()] == []


RANGES = [
    (0, None),
    (0, 0),
    (0, 1),
    (1, 2),
    (5, 5),
    (10, 3),
    (999, None),
    (1000, 1001),
    (4095, 4097),
    (262_143, 262_145),  # across the local store's read chunk
    (300_000, None),
    (299_999, None),
    (299_999, 400_000),
    (300_000, 300_001),
    (300_001, None),
    (1_000_000, None),
    (1_000_000, 2_000_000),
]


async def test_ranged_get_equals_slicing(store: BlobStore) -> None:
    body = data(300_000, seed=3)
    await store.put(KEY, iter_bytes(body))
    for start, end in RANGES:
        got = await read_all(store.get(KEY, start, end))
        assert got == body[start:end], (start, end)


async def test_ranged_get_of_an_empty_object(store: BlobStore) -> None:
    await store.put(KEY, iter_bytes(b""))
    for start, end in [(0, None), (0, 10), (3, None)]:
        assert await read_all(store.get(KEY, start, end)) == b""


@pytest.mark.parametrize(("start", "end"), [(0, None), (0, 10), (5, 5), (100, None)])
async def test_missing_key(store: BlobStore, start: int, end: int | None) -> None:
    with pytest.raises(BlobNotFoundError):
        await read_all(store.get(KEY, start, end))
    assert await store.stat(KEY) is None


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "", "a/../b", "a/./b", "a/", "a b"])
async def test_invalid_keys_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        await store.put(key, iter_bytes(b"x"))
    with pytest.raises(InvalidKeyError):
        await read_all(store.get(key))
    with pytest.raises(InvalidKeyError):
        await store.stat(key)
    with pytest.raises(InvalidKeyError):
        await store.delete(key)
    assert await leftovers(store) == []


@pytest.mark.parametrize("prefix", ["../", "/abs", "a//b/"])
async def test_invalid_list_prefix_is_refused(store: BlobStore, prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        [i async for i in store.list(prefix)]


class SourceFailedError(Exception):
    """Raised by a test's byte source midway through a put."""


async def failing_source(
    size: int, error: type[Exception] = SourceFailedError
) -> AsyncIterator[bytes]:
    async for chunk in chunks(size, seed=4):
        yield chunk
    raise error


async def assert_nothing_left(store: BlobStore, key: str) -> None:
    assert await store.stat(key) is None
    assert [i.key async for i in store.list()] == []
    assert await leftovers(store) == []


# Below one part (S3: one PutObject) and past two parts (S3: a multipart upload).
SIZES = [100 * 1024, 2 * MIN_PART_SIZE + MIB]


@pytest.mark.parametrize("size", SIZES)
async def test_failed_put_leaves_nothing(store: BlobStore, size: int) -> None:
    with pytest.raises(SourceFailedError):
        await store.put(KEY, failing_source(size))
    await assert_nothing_left(store, KEY)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("error", [ConnectionResetError, TimeoutError])
async def test_a_source_error_reaches_the_caller_as_it_was(
    store: BlobStore, size: int, error: type[Exception]
) -> None:
    """Errors that look like I/O failures but come from the source are not the store's."""
    with pytest.raises(error) as raised:
        await store.put(KEY, failing_source(size, error))
    assert not isinstance(raised.value, StorageError)
    await assert_nothing_left(store, KEY)


async def test_failed_put_keeps_the_previous_object(store: BlobStore) -> None:
    await store.put(KEY, iter_bytes(b"previous"))
    with pytest.raises(SourceFailedError):
        await store.put(KEY, failing_source(SIZES[1]))
    assert await read_all(store.get(KEY)) == b"previous"
    assert await leftovers(store) == []


@pytest.mark.parametrize("size", SIZES)
async def test_cancelled_put_leaves_nothing(store: BlobStore, size: int) -> None:
    reached = asyncio.Event()

    async def stalling_source() -> AsyncIterator[bytes]:
        async for chunk in chunks(size, seed=5):
            yield chunk
        reached.set()
        await asyncio.Event().wait()  # a client that stops sending
        yield b"never"

    task = asyncio.create_task(store.put(KEY, stalling_source()))
    await asyncio.wait_for(reached.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_nothing_left(store, KEY)


async def test_legal_hold_is_a_no_op_without_object_lock(store: BlobStore) -> None:
    assert not store.supports_legal_hold
    await store.put(KEY, iter_bytes(b"x"))
    await store.set_legal_hold(KEY, True)
    await store.delete(KEY)
    assert await store.stat(KEY) is None


async def test_ping(store: BlobStore) -> None:
    await store.ping()


def test_every_backend_is_a_blob_store(store: BlobStore) -> None:
    assert isinstance(store, BlobStore)
    assert store.name in {"local", "s3"}
