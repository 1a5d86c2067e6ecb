"""A streaming ZIP writer: entries go out as their bytes arrive, nothing is held or written to disk.

Every entry is STORED (recordings are already compressed; chats are small) with general-purpose
flag bit 3, so its CRC-32 and sizes follow the data in a data descriptor, and bit 11 (UTF-8
names). ZIP64 records are always written: each local header carries a ZIP64 extra field (so the
data descriptor has 8-byte sizes), each central directory entry gives its sizes and offset in a
ZIP64 extra field, and a ZIP64 end-of-central-directory record and locator precede the classic
one. Entries and archives past 4 GiB therefore need no special case. APPNOTE.TXT 6.3.10,
sections 4.3.7-4.3.16 and 4.5.3, describe the records.

The writer also takes each entry's SHA-256 while streaming and keeps it with the size and CRC in
:attr:`ZipWriter.entries`, so a manifest written last can list the entries before it.
"""

import hashlib
import struct
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime

_LOCAL = 0x04034B50
_DESCRIPTOR = 0x08074B50
_CENTRAL = 0x02014B50
_END64 = 0x06064B50
_LOCATOR64 = 0x07064B50
_END = 0x06054B50
_ZIP64_EXTRA = 0x0001
_VERSION = 45  # 4.5: ZIP64
_MADE_BY = (3 << 8) | _VERSION  # Unix, so the external attributes carry a file mode
_FLAGS = 0x0008 | 0x0800  # data descriptor follows; names are UTF-8
_STORED = 0
_FILE_MODE = 0o100644 << 16
_FULL32 = 0xFFFFFFFF
_FULL16 = 0xFFFF


@dataclass(frozen=True, slots=True)
class ZipEntry:
    """What was written for one entry."""

    name: str
    offset: int  # of its local header
    size: int
    crc32: int
    sha256: str


def _dos_time(when: datetime) -> tuple[int, int]:
    """MS-DOS date and time (local fields of ``when``; years before 1980 become 1980)."""
    year = max(when.year, 1980)
    return ((when.hour << 11) | (when.minute << 5) | (when.second // 2),
            ((year - 1980) << 9) | (when.month << 5) | when.day)


def check_name(name: str) -> bytes:
    """The entry name as UTF-8; relative, '/'-separated, no '..' or empty segments."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name
            or any(p in {"", ".", ".."} for p in parts)):
        raise ValueError(f"not a safe ZIP entry name: {name!r}")
    return name.encode("utf-8")


class ZipWriter:
    """Writes one archive: :meth:`add` each entry in turn, then :meth:`finish`.

    Not for concurrent use: the entries of an archive follow one another.
    """

    def __init__(self, when: datetime) -> None:
        self._time, self._date = _dos_time(when)
        self.entries: list[ZipEntry] = []
        self._offset = 0
        self._names: set[str] = set()
        self._finished = False

    @property
    def offset(self) -> int:
        """Bytes produced so far."""
        return self._offset

    async def add(self, name: str, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """Yield the bytes of one entry (header, data as it comes, descriptor)."""
        if self._finished:
            raise ValueError("the archive is finished")
        raw_name = check_name(name)
        if name in self._names:
            raise ValueError(f"duplicate ZIP entry name: {name!r}")
        self._names.add(name)
        start = self._offset
        # ZIP64 extra of a local header: both sizes, zero here (they follow the data).
        extra = struct.pack("<HHQQ", _ZIP64_EXTRA, 16, 0, 0)
        header = struct.pack(
            "<IHHHHHIIIHH", _LOCAL, _VERSION, _FLAGS, _STORED, self._time, self._date,
            0, _FULL32, _FULL32, len(raw_name), len(extra)) + raw_name + extra
        self._offset += len(header)
        yield header
        crc, size, hasher = 0, 0, hashlib.sha256()
        async for chunk in chunks:
            if not chunk:
                continue
            crc = zlib.crc32(chunk, crc)
            hasher.update(chunk)
            size += len(chunk)
            self._offset += len(chunk)
            yield chunk
        descriptor = struct.pack("<IIQQ", _DESCRIPTOR, crc, size, size)
        self._offset += len(descriptor)
        self.entries.append(ZipEntry(name, start, size, crc, hasher.hexdigest()))
        yield descriptor

    def finish(self) -> bytes:
        """The central directory and end records, which close the archive."""
        self._finished = True
        central = bytearray()
        for e in self.entries:
            raw_name = e.name.encode("utf-8")
            extra = struct.pack("<HHQQQ", _ZIP64_EXTRA, 24, e.size, e.size, e.offset)
            central += struct.pack(
                "<IHHHHHHIIIHHHHHII", _CENTRAL, _MADE_BY, _VERSION, _FLAGS, _STORED,
                self._time, self._date, e.crc32, _FULL32, _FULL32, len(raw_name), len(extra),
                0, 0, 0, _FILE_MODE, _FULL32) + raw_name + extra
        cd_offset, cd_size, count = self._offset, len(central), len(self.entries)
        end64_offset = cd_offset + cd_size
        end64 = struct.pack("<IQHHIIQQQQ", _END64, 44, _MADE_BY, _VERSION, 0, 0, count, count,
                            cd_size, cd_offset)
        locator = struct.pack("<IIQI", _LOCATOR64, 0, end64_offset, 1)
        end = struct.pack("<IHHHHIIH", _END, 0, 0, _FULL16, _FULL16, _FULL32, _FULL32, 0)
        tail = bytes(central) + end64 + locator + end
        self._offset += len(tail)
        return tail


async def stream_zip(
    entries: Iterable[tuple[str, AsyncIterable[bytes]]], when: datetime
) -> AsyncIterator[bytes]:
    """A whole archive of ``entries`` (name, chunks), in order."""
    writer = ZipWriter(when)
    for name, chunks in entries:
        async for piece in writer.add(name, chunks):
            yield piece
    yield writer.finish()
