"""Streaming envelope encryption over every backend: round trips, ranges, and tampering."""

import hashlib
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.base import BlobStore, iter_bytes, read_all
from storage.crypto import (
    DEFAULT_SEGMENT_SIZE,
    HEADER_SIZE,
    MIN_SEGMENT_SIZE,
    TAG_SIZE,
    ciphertext_size,
    decrypt,
    decrypt_range,
    encrypt,
    new_data_key,
)
from storage.errors import IntegrityError
from tests.storage.helpers import MIB, chunks, data, hash_stream, sha256_of

ITEM = b"\x01\x92\xf3\xa0" + bytes(12)  # the item id's 16 bytes are the associated data
OTHER_ITEM = b"\x01\x92\xf3\xa0" + bytes(11) + b"\x02"
KEY = "t1/call/2026/11/23/0192f3a0-0000-7000-8000-000000000001"
OTHER_KEY = "t1/call/2026/11/23/0192f3a0-0000-7000-8000-000000000002"
S = DEFAULT_SEGMENT_SIZE


async def put_encrypted(
    store: BlobStore,
    key: str,
    dek: bytes,
    plaintext: AsyncIterator[bytes],
    segment_size: int = S,
    *,
    aad: bytes = ITEM,
) -> int:
    return await store.put(key, encrypt(dek, aad, plaintext, segment_size))


async def read_plain(store: BlobStore, key: str, dek: bytes, aad: bytes = ITEM) -> bytes:
    return await read_all(decrypt(dek, aad, store.get(key)))


async def read_range(
    store: BlobStore,
    dek: bytes,
    size: int,
    span: tuple[int, int | None],
    *,
    key: str = KEY,
    aad: bytes = ITEM,
) -> bytes:
    start, end = span
    return await read_all(
        decrypt_range(store, key, key=dek, aad=aad, plain_size=size, start=start, end=end)
    )


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, S - 1, S, S + 1, 5 * S + 17])
async def test_round_trip(store: BlobStore, size: int) -> None:
    dek = new_data_key()
    plain = data(size, seed=size)
    stored = await put_encrypted(store, KEY, dek, iter_bytes(plain, 10_000))
    assert stored == ciphertext_size(size, S)
    info = await store.stat(KEY)
    assert info is not None
    assert info.size == stored
    assert await read_plain(store, KEY, dek) == plain
    assert await read_range(store, dek, size, (0, None)) == plain


async def test_round_trip_100_mib(store: BlobStore) -> None:
    """Generated, stored and read back streamingly; compared by hash, never held whole."""
    size = 100 * MIB
    dek = new_data_key()
    assert await put_encrypted(store, KEY, dek, chunks(size, seed=7)) == ciphertext_size(size)
    assert await hash_stream(decrypt(dek, ITEM, store.get(KEY))) == (sha256_of(size, 7), size)
    # Ranges across segment boundaries deep inside the object.
    for start, end in [(50 * MIB - 5, 50 * MIB + S + 5), (size - S - 1, None), (size - 1, size)]:
        got = await read_range(store, dek, size, (start, end))
        assert got == data((end or size) - start, seed=7, offset=start)


# Small segments make every boundary case cheap: sizes around 0..5 segments of 1 KiB.
SMALL = MIN_SEGMENT_SIZE
SIZES = [0, 1, SMALL - 1, SMALL, SMALL + 1, 2 * SMALL, 3 * SMALL + 500, 5 * SMALL + 77]


@st.composite
def size_and_range(draw: st.DrawFn) -> tuple[int, int, int | None]:
    size = draw(st.sampled_from(SIZES))
    start = draw(st.integers(0, size + SMALL))
    end = draw(st.none() | st.integers(0, size + SMALL))
    return size, start, end


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one store for all examples
)
@given(case=size_and_range())
async def test_every_range_equals_the_slice(
    store: BlobStore, case: tuple[int, int, int | None]
) -> None:
    size, start, end = case
    dek = b"k" * 32
    key = f"t1/sizes/{size}"
    if await store.stat(key) is None:  # each size is stored once, then read many ways
        await put_encrypted(store, key, dek, iter_bytes(data(size, seed=size), 333), SMALL)
    got = await read_range(store, dek, size, (start, end), key=key)
    assert got == data(size, seed=size)[start:end]


# -- tampering --------------------------------------------------------------------------------

# 5 full segments of 1 KiB and a short last one of 300 bytes.
T_SIZE = 5 * SMALL + 300
SEG = SMALL + TAG_SIZE  # stored size of a full segment


def seg_at(index: int) -> int:
    """Offset of stored segment ``index``."""
    return HEADER_SIZE + index * SEG


def flip(offset: int) -> Callable[[bytes], bytes]:
    def mutate(raw: bytes) -> bytes:
        out = bytearray(raw)
        out[offset] ^= 0x01
        return bytes(out)

    return mutate


def cut(length: int) -> Callable[[bytes], bytes]:
    return lambda raw: raw[:length]


def extend(extra: bytes) -> Callable[[bytes], bytes]:
    return lambda raw: raw + extra


def swap(a: int, b: int) -> Callable[[bytes], bytes]:
    def mutate(raw: bytes) -> bytes:
        segs = [raw[seg_at(i) : seg_at(i + 1)] for i in range(6)]
        segs[a], segs[b] = segs[b], segs[a]
        return raw[:HEADER_SIZE] + b"".join(segs)

    return mutate


def in_segment(index: int) -> tuple[int, int]:
    """A plaintext range of a few bytes inside segment ``index``."""
    return index * SMALL + 10, index * SMALL + 20


TAMPERING = {
    "magic": (flip(0), in_segment(2)),
    "version": (flip(4), in_segment(2)),
    "segment size": (flip(7), in_segment(2)),
    "nonce prefix": (flip(12), in_segment(2)),
    "first segment": (flip(seg_at(0) + 3), in_segment(0)),
    "middle segment": (flip(seg_at(2) + SMALL // 2), in_segment(2)),
    "last segment": (flip(seg_at(5) + 100), in_segment(5)),
    "a tag": (flip(seg_at(2) - 1), in_segment(1)),
    "last tag": (flip(seg_at(5) + 300 + TAG_SIZE - 1), in_segment(5)),
    "cut at a segment boundary": (cut(seg_at(5)), in_segment(5)),
    "cut at an earlier boundary": (cut(seg_at(3)), in_segment(3)),
    "cut mid-segment": (cut(seg_at(2) + 500), in_segment(2)),
    "cut inside the last tag": (cut(seg_at(5) + 300 + 5), in_segment(5)),
    "cut inside the header": (cut(HEADER_SIZE - 3), in_segment(0)),
    "extended by a few bytes": (extend(b"\x00" * 7), in_segment(5)),
    "extended by a segment": (extend(bytes(SEG)), in_segment(5)),
    "segments 1 and 2 swapped": (swap(1, 2), in_segment(1)),
    "segments 4 and 5 swapped": (swap(4, 5), in_segment(4)),
}


async def tamper(store: BlobStore, key: str, mutate: Callable[[bytes], bytes]) -> None:
    raw = await read_all(store.get(key))
    await store.put(key, iter_bytes(mutate(raw)))


@pytest.fixture
async def sealed(store: BlobStore) -> tuple[BlobStore, bytes, bytes]:
    """An encrypted object of six 1 KiB segments under KEY: (store, data key, plaintext)."""
    dek = new_data_key()
    plain = data(T_SIZE, seed=11)
    await put_encrypted(store, KEY, dek, iter_bytes(plain), SMALL)
    return store, dek, plain


async def test_untampered_object_reads(sealed: tuple[BlobStore, bytes, bytes]) -> None:
    """The control for the cases below: the same reads succeed on the intact object."""
    store, dek, plain = sealed
    assert await read_plain(store, KEY, dek) == plain
    for _mutate, (start, end) in TAMPERING.values():
        assert await read_range(store, dek, T_SIZE, (start, end)) == plain[start:end]


@pytest.mark.parametrize("case", TAMPERING)
async def test_tampering_is_detected(sealed: tuple[BlobStore, bytes, bytes], case: str) -> None:
    store, dek, _ = sealed
    mutate, span = TAMPERING[case]
    await tamper(store, KEY, mutate)
    with pytest.raises(IntegrityError):
        await read_plain(store, KEY, dek)
    with pytest.raises(IntegrityError):
        await read_range(store, dek, T_SIZE, span)


async def test_an_object_moved_to_another_item_is_rejected(
    sealed: tuple[BlobStore, bytes, bytes],
) -> None:
    """Copied under another item's key and opened as that item (its id is the aad)."""
    store, dek, _ = sealed
    await store.put(OTHER_KEY, store.get(KEY))
    with pytest.raises(IntegrityError):
        await read_plain(store, OTHER_KEY, dek, aad=OTHER_ITEM)
    for span in [in_segment(0), in_segment(5)]:
        with pytest.raises(IntegrityError):
            await read_range(store, dek, T_SIZE, span, key=OTHER_KEY, aad=OTHER_ITEM)


async def test_plaintext_never_appears_in_stored_bytes(store: BlobStore) -> None:
    phrase = b"caller +447700900123 gave card 4929 0000 0000 6 "
    plain = phrase * (3 * S // len(phrase))
    await put_encrypted(store, KEY, new_data_key(), iter_bytes(plain))
    raw = await read_all(store.get(KEY))
    assert b"447700900123" not in raw
    assert b"4929 0000" not in raw
    for i in range(0, len(plain) - 16, 997):
        assert plain[i : i + 16] not in raw
    # Same plaintext, same item, fresh data key: nothing in common either.
    await put_encrypted(store, OTHER_KEY, new_data_key(), iter_bytes(plain))
    other = await read_all(store.get(OTHER_KEY))
    assert raw[HEADER_SIZE : HEADER_SIZE + 64] != other[HEADER_SIZE : HEADER_SIZE + 64]


async def test_without_its_data_key_an_object_is_unreadable(
    sealed: tuple[BlobStore, bytes, bytes],
) -> None:
    """Destroying the wrapped key is destruction: no other key opens the object."""
    store, dek, _ = sealed
    near = bytes([dek[0] ^ 0x80]) + dek[1:]
    for other in [near, bytes(32), b"\xff" * 32, *(new_data_key() for _ in range(5))]:
        with pytest.raises(IntegrityError):
            await read_plain(store, KEY, other)
        with pytest.raises(IntegrityError):
            await read_range(store, other, T_SIZE, in_segment(3))


def test_hash_helpers_agree() -> None:
    """The generated test data is what the streaming hash says it is."""
    assert sha256_of(3 * MIB + 5, 9) == hashlib.sha256(data(3 * MIB + 5, 9)).hexdigest()
    assert data(100, 9, offset=1_000_003) == data(1_000_103, 9)[1_000_003:]
