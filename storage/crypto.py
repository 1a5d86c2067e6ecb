"""Streaming envelope encryption: AES-256-GCM in fixed-size segments (Tink's streaming AEAD shape).

Object layout::

    header   = MAGIC (4) | format version (1) | segment size (4, big-endian) | nonce prefix (7)
    segments = seal(plaintext[i*S:(i+1)*S]) for i in 0..n-1, each ciphertext + 16-byte tag

Segment ``i`` is sealed with nonce ``prefix | i (4 bytes, big-endian) | last (1 byte)`` and the
associated data given by the caller (the item id). Every segment but the last holds exactly ``S``
plaintext bytes; the last holds 1..S bytes, or 0 for an empty object, so an object of ``P``
plaintext bytes has ``max(1, ceil(P/S))`` segments. Because the index and the last-segment flag
are in the nonce, reordering, truncating or extending segments fails authentication, and because
the item id is the associated data, an object moved under another item's key fails too. A byte
range maps to whole segments that are fetched and opened alone.

AES-GCM of one 64 KiB segment takes a few microseconds, so sealing runs on the event loop: a
thread hop per segment would cost more than the work.
"""

import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from storage.base import BlobStore
from storage.errors import IntegrityError

MAGIC = b"ARC\x01"
FORMAT_VERSION = 1
PREFIX_SIZE = 7
HEADER = struct.Struct(">4sBI7s")
HEADER_SIZE = HEADER.size  # 16
TAG_SIZE = 16
KEY_SIZE = 32
DEFAULT_SEGMENT_SIZE = 64 * 1024
MIN_SEGMENT_SIZE = 1024
MAX_SEGMENT_SIZE = 16 * 1024 * 1024
_MAX_SEGMENTS = 2**32

Buffer: TypeAlias = bytes | bytearray | memoryview


def new_data_key() -> bytes:
    """Return a fresh random 256-bit data key."""
    return os.urandom(KEY_SIZE)


def derive_object_key(data_key: bytes, kind: str) -> bytes:
    """The key that seals one object of an item: HKDF-SHA256 of the item's data key, with the
    object's kind ("media", "original", "waveform"...) as info.

    An item may have several objects (a playable rendition and the original evidence, a cached
    waveform). Each gets its own key, as Tink's streaming AEAD derives one per object, while
    the item keeps a single wrapped data key: destroying that one key destroys every object.
    """
    if len(data_key) != KEY_SIZE:
        raise ValueError("data key must be 32 bytes")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None,
                info=b"archive-object:" + kind.encode())
    return hkdf.derive(data_key)


@dataclass(frozen=True, slots=True)
class Header:
    """The parsed header of an encrypted object."""

    segment_size: int
    nonce_prefix: bytes

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, FORMAT_VERSION, self.segment_size, self.nonce_prefix)

    @classmethod
    def parse(cls, data: bytes) -> "Header":
        if len(data) < HEADER_SIZE:
            raise IntegrityError("encrypted object is shorter than its header")
        magic, version, segment_size, prefix = HEADER.unpack(data[:HEADER_SIZE])
        if magic != MAGIC or version != FORMAT_VERSION:
            raise IntegrityError("encrypted object has an unknown format")
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise IntegrityError("encrypted object header has an invalid segment size")
        return cls(segment_size, prefix)


def segment_count(plain_size: int, segment_size: int) -> int:
    """How many segments hold ``plain_size`` bytes (an empty object still has one)."""
    return max(1, -(-plain_size // segment_size))


def ciphertext_size(plain_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """The stored size of an object of ``plain_size`` plaintext bytes."""
    return HEADER_SIZE + plain_size + TAG_SIZE * segment_count(plain_size, segment_size)


class _Sealer:
    """Seals or opens the segments of one object."""

    def __init__(self, key: bytes, header: Header, aad: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("data key must be 32 bytes")
        self._aead = AESGCM(key)
        self._prefix = header.nonce_prefix
        self._aad = aad

    def _nonce(self, index: int, last: bool) -> bytes:
        if index >= _MAX_SEGMENTS:
            raise ValueError("object has too many segments")
        return self._prefix + struct.pack(">IB", index, 1 if last else 0)

    def seal(self, plaintext: Buffer, index: int, last: bool) -> bytes:
        return self._aead.encrypt(self._nonce(index, last), plaintext, self._aad)

    def open(self, ciphertext: Buffer, index: int, last: bool) -> bytes:
        try:
            return self._aead.decrypt(self._nonce(index, last), ciphertext, self._aad)
        except InvalidTag:
            raise IntegrityError(
                f"segment {index} failed authentication: the object was altered, "
                "truncated, or belongs to another item"
            ) from None


class _Segmenter:
    """Cuts a byte stream into ``size``-byte segments, holding back the one that may be last.

    A full segment is released only once more bytes arrive, since only the end of the stream
    says which segment is the last. Segments that lie whole inside an incoming chunk are handed
    out as views of it, without copying; only a segment that straddles chunks is assembled.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._held: Buffer | None = None  # a full segment that may turn out to be the last
        self._part = bytearray()  # the start of a segment whose rest has not arrived

    def feed(self, chunk: bytes) -> list[Buffer]:
        """Take ``chunk``; return the segments now known not to be the last, in order."""
        # A view of an immutable chunk is safe to keep; anything else is copied once.
        view = memoryview(chunk if isinstance(chunk, bytes) else bytes(chunk))
        size = self._size
        ready: list[Buffer] = []
        while view:
            if self._held is not None:
                ready.append(self._held)
                self._held = None
            if not self._part and len(view) >= size:
                self._held, view = view[:size], view[size:]
                continue
            take = size - len(self._part)
            self._part += view[:take]
            view = view[take:]
            if len(self._part) == size:
                self._held, self._part = self._part, bytearray()
        return ready

    def finish(self) -> Buffer:
        """The last segment: the held full one, else the partial one (empty if nothing came)."""
        return self._held if self._held is not None else self._part


async def encrypt(
    key: bytes,
    aad: bytes,
    chunks: AsyncIterator[bytes],
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> AsyncIterator[bytes]:
    """Yield the encrypted object for the plaintext ``chunks``: header, then sealed segments.

    At most one incoming chunk, one held segment and one sealed segment are held at a time.
    """
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise ValueError(f"segment size must be {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE} bytes")
    header = Header(segment_size, os.urandom(PREFIX_SIZE))
    sealer = _Sealer(key, header, aad)
    yield header.pack()
    segments = _Segmenter(segment_size)
    index = 0
    async for chunk in chunks:
        for plain in segments.feed(chunk):
            yield sealer.seal(plain, index, False)
            index += 1
    yield sealer.seal(segments.finish(), index, True)


async def decrypt(key: bytes, aad: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield the plaintext of a whole encrypted object, checking every segment and the end.

    Raises ``IntegrityError`` at the first segment that fails, so a caller streaming to a client
    must treat the error as the end of a broken response.
    """
    head = bytearray()
    sealer: _Sealer | None = None
    segments = _Segmenter(MIN_SEGMENT_SIZE)  # replaced once the header names the size
    index = 0
    async for chunk in chunks:
        if sealer is None:
            head += chunk
            if len(head) < HEADER_SIZE:
                continue
            header = Header.parse(bytes(head[:HEADER_SIZE]))
            sealer = _Sealer(key, header, aad)
            segments = _Segmenter(header.segment_size + TAG_SIZE)
            chunk = bytes(head[HEADER_SIZE:])  # noqa: PLW2901  # the rest of the first chunks
            del head
        for sealed in segments.feed(chunk):
            yield sealer.open(sealed, index, False)
            index += 1
    if sealer is None:
        raise IntegrityError("encrypted object is shorter than its header")
    last = segments.finish()
    if len(last) < TAG_SIZE:
        raise IntegrityError("encrypted object is truncated")
    yield sealer.open(last, index, True)


async def decrypt_range(
    store: BlobStore,
    object_key: str,
    *,
    key: bytes,
    aad: bytes,
    plain_size: int,
    start: int,
    end: int | None = None,
) -> AsyncIterator[bytes]:
    """Yield plaintext bytes ``[start, end)`` of an object of ``plain_size`` bytes.

    Reads the header, then only the segments that hold the range, and opens each alone. Every
    segment read is authenticated, and the one holding the object's last byte (by the index's
    ``plain_size``) is opened as the last, so a range that reaches a cut or altered segment fails.
    A range that lies wholly before a cut still reads: only a full ``decrypt`` proves the whole
    object intact (the scrubber's job).
    """
    end = plain_size if end is None else min(end, plain_size)
    if start < 0 or start >= end:
        return
    raw = b"".join([c async for c in store.get(object_key, 0, HEADER_SIZE)])
    header = Header.parse(raw)
    sealer = _Sealer(key, header, aad)
    seg_plain = header.segment_size
    seg_cipher = seg_plain + TAG_SIZE
    last_index = segment_count(plain_size, seg_plain) - 1
    first = start // seg_plain
    final = (end - 1) // seg_plain
    lo = HEADER_SIZE + first * seg_cipher
    hi = HEADER_SIZE + (final + 1) * seg_cipher
    skip = start - first * seg_plain  # bytes to drop from the first opened segment
    remaining = end - start
    buf = bytearray()
    index = first

    def open_one(data: bytes | memoryview) -> bytes:
        nonlocal index, skip
        plain = sealer.open(data, index, index == last_index)
        index += 1
        if skip:
            plain = plain[skip:]
            skip = 0
        return plain

    async for chunk in store.get(object_key, lo, hi):
        buf += chunk
        while len(buf) >= seg_cipher and index <= final:
            plain = open_one(memoryview(buf)[:seg_cipher])
            del buf[:seg_cipher]
            out = plain[:remaining]
            remaining -= len(out)
            yield out
    if remaining > 0:
        # The object's last segment is shorter than a full one, or the object was cut short.
        if index != final or not buf:
            raise IntegrityError("encrypted object is truncated")
        yield open_one(bytes(buf))[:remaining]
