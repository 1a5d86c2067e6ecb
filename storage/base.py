"""The one protocol every blob backend implements, and the checks they share."""

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from storage.errors import InvalidKeyError

# Keys are built by the archive from tenant, channel, date and item id: never from user text.
# Still, every backend refuses anything that could escape its root or prefix.
_KEY_PART = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``InvalidKeyError``."""
    parts = key.split("/")
    if not key or len(key) > 512 or any(
        not _KEY_PART.match(p) or p in {".", ".."} for p in parts
    ):
        raise InvalidKeyError(f"invalid object key {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if empty or a safe key, optionally ending in '/'."""
    if prefix:
        check_key(prefix.rstrip("/"))
    return prefix


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What a backend knows about one stored object."""

    key: str
    size: int
    modified: datetime
    legal_hold: bool = False


@runtime_checkable
class BlobStore(Protocol):
    """A store of immutable objects addressed by key.

    ``put`` is all-or-nothing: the object becomes visible only once every byte is stored, and a
    failed or cancelled put leaves nothing behind. ``get`` reads the half-open byte range
    ``[start, end)`` (``end=None`` reads to the end) and yields chunks as they arrive, so memory
    stays bounded whatever the object's size.
    """

    name: str

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Store the bytes of ``chunks`` under ``key`` (replacing any object); return the size."""
        ...

    def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Yield the bytes ``[start, end)`` of the object; ``BlobNotFoundError`` if absent."""
        ...

    async def delete(self, key: str) -> None:
        """Delete the object and every stored version of it; deleting nothing is not an error."""
        ...

    async def stat(self, key: str) -> BlobInfo | None:
        """Return the object's facts, or ``None`` when there is no such object."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Yield every object whose key starts with ``prefix``, in key order."""
        ...

    @property
    def supports_legal_hold(self) -> bool:
        """Whether ``set_legal_hold`` is enforced by the backend (S3 Object Lock)."""
        ...

    async def set_legal_hold(self, key: str, on: bool) -> None:
        """Set or clear the object-level legal hold; a no-op where unsupported."""
        ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the store can be used now."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    """Join an async byte stream. For small objects and tests only: it holds everything."""
    return b"".join([c async for c in chunks])


async def iter_bytes(data: bytes, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
    """Yield ``data`` in chunks: adapts an in-memory value to the streaming API."""
    for i in range(0, len(data), chunk_size):
        yield data[i : i + chunk_size]
