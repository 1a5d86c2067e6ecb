"""Test data and inspection helpers shared by the storage tests.

Large objects are generated on the fly from a seeded AES-CTR keystream: fast (GB/s), random
enough to defeat any accidental pattern, and seekable, so any slice of a 100 MiB "file" can be
produced without holding the rest.
"""

import hashlib
from collections.abc import AsyncIterator
from typing import Any

from aiobotocore.session import get_session
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from storage.base import BlobStore
from storage.local import LocalBlobStore
from storage.s3 import S3BlobStore, make_config

KIB = 1024
MIB = 1024 * KIB
CHUNK = 64 * KIB
_ZEROS = memoryview(bytes(MIB))


def _keystream(seed: int, offset: int) -> tuple[CipherContext, int]:
    key = hashlib.sha256(f"test-data-{seed}".encode()).digest()
    counter = (offset // 16).to_bytes(16, "big")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    return encryptor, offset % 16


def data(size: int, seed: int = 0, offset: int = 0) -> bytes:
    """Bytes ``[offset, offset + size)`` of the pseudo-random stream named by ``seed``."""
    encryptor, skip = _keystream(seed, offset)
    out = b"".join(_blocks(encryptor, skip + size))
    return out[skip:]


def _blocks(encryptor: CipherContext, size: int) -> list[bytes]:
    return [encryptor.update(_ZEROS[: min(MIB, size - i)]) for i in range(0, size, MIB)]


async def chunks(size: int, seed: int = 0, chunk: int = CHUNK) -> AsyncIterator[bytes]:
    """Yield the stream's first ``size`` bytes in ``chunk``-sized pieces, holding one at a time."""
    encryptor, _ = _keystream(seed, 0)
    zeros = memoryview(bytes(chunk))
    for i in range(0, size, chunk):
        yield encryptor.update(zeros[: min(chunk, size - i)])


def sha256_of(size: int, seed: int = 0) -> str:
    """The SHA-256 of the stream's first ``size`` bytes, computed streamingly."""
    digest = hashlib.sha256()
    encryptor, _ = _keystream(seed, 0)
    for i in range(0, size, MIB):
        digest.update(encryptor.update(_ZEROS[: min(MIB, size - i)]))
    return digest.hexdigest()


async def hash_stream(stream: AsyncIterator[bytes]) -> tuple[str, int]:
    """SHA-256 and length of a byte stream, consumed chunk by chunk."""
    digest = hashlib.sha256()
    size = 0
    async for piece in stream:
        digest.update(piece)
        size += len(piece)
    return digest.hexdigest(), size


async def leftovers(store: BlobStore) -> list[str]:
    """What an interrupted put could have left: temporary files, incomplete multipart uploads."""
    if isinstance(store, LocalBlobStore):
        tmp = store.root / "tmp"
        return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []
    assert isinstance(store, S3BlobStore)
    async with raw_s3_client(store.endpoint_url) as client:
        reply = await client.list_multipart_uploads(Bucket=store.bucket)
    return sorted(u["Key"] for u in reply.get("Uploads", []))


# One session for every test client: each new session loads botocore's models again (~0.1 s).
SESSION = get_session()
# moto accepts any credentials; the suite's autouse fixture also sets these in the environment.
TEST_KEY = "testing"


def raw_s3_client(endpoint_url: str | None) -> Any:
    """An aiobotocore S3 client that bypasses the store, to look at or poke the bucket directly."""
    return SESSION.create_client(
        "s3",
        region_name="eu-west-2",
        endpoint_url=endpoint_url,
        aws_access_key_id=TEST_KEY,
        aws_secret_access_key=TEST_KEY,
        config=make_config(retries=1),
    )
