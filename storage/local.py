"""A blob store in a local folder: the embedded default.

Objects live under ``ROOT/objects/KEY``. A put writes a temporary file under ``ROOT/tmp/``,
fsyncs it, renames it into place and fsyncs the folder, so an object is either whole or absent,
even after a crash. All file work runs in threads, batched so that one thread hop moves many
chunks (``os.writev`` writes a batch with one call and no copy).
"""

import asyncio
import errno
import io
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from storage.base import BlobInfo, check_key, check_prefix
from storage.errors import (
    BlobNotFoundError,
    StorageError,
    StoreFullError,
    StoreUnavailableError,
)

T = TypeVar("T")
WRITE_BATCH = 256 * 1024
READ_CHUNK = 256 * 1024


def _translate(exc: OSError, key: str) -> StorageError:
    if exc.errno in {errno.ENOSPC, errno.EDQUOT}:
        return StoreFullError("the local store has no space left")
    if isinstance(exc, FileNotFoundError):
        return BlobNotFoundError(f"no object {key!r}")
    return StorageError(f"local store error on {key!r}: {exc.strerror}")


async def _in_thread(fn: Callable[..., T], *args: object) -> T:
    """Run blocking file work in a thread and, if cancelled, let it finish before returning.

    A thread cannot be stopped; cleaning up a file descriptor it is still writing would race.
    """
    return await _settle(asyncio.get_running_loop().run_in_executor(None, fn, *args))


async def _settle(future: "asyncio.Future[T]") -> T:
    """Await a thread's future; if cancelled meanwhile, wait for the thread, then re-raise."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


async def _file_io(key: str, fn: Callable[..., T], *args: object) -> T:
    return await _settled_io(key, asyncio.get_running_loop().run_in_executor(None, fn, *args))


async def _settled_io(key: str, future: "asyncio.Future[T]") -> T:
    """``_settle`` for the store's own file work, whose ``OSError`` becomes a storage error."""
    try:
        return await _settle(future)
    except OSError as exc:
        raise _translate(exc, key) from None


async def _drain(future: "asyncio.Future[int] | None") -> None:
    """Wait for a write still running in a thread, dropping its outcome: an error is on its way."""
    if future is None:
        return
    await asyncio.wait([future])
    if not future.cancelled():
        future.exception()  # mark it retrieved, so asyncio does not log it as lost


class LocalBlobStore:
    """Objects as files in a folder; see the module docstring for the write path."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._objects = root / "objects"
        self._tmp = root / "tmp"

    async def open(self) -> "LocalBlobStore":
        def make() -> None:
            self._objects.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(parents=True, exist_ok=True)

        await asyncio.to_thread(make)
        return self

    def _path(self, key: str) -> Path:
        return self._objects / check_key(key)

    @property
    def supports_legal_hold(self) -> bool:
        return False

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        path = self._path(key)
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            fd = await _in_thread(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise _translate(exc, key) from None
        size = 0
        placed = False
        # Only the store's own file errors are translated: an error raised by the source
        # (a client that went away, say) reaches the caller as it was.
        # One batch is written in a thread while the next is gathered from ``chunks``, so the
        # source's work (encryption, hashing) overlaps the disk's instead of adding to it.
        writing: asyncio.Future[int] | None = None
        loop = asyncio.get_running_loop()
        try:
            batch: list[bytes | memoryview] = []
            pending = 0
            async for chunk in chunks:
                if not chunk:
                    continue
                batch.append(chunk)
                pending += len(chunk)
                if pending >= WRITE_BATCH:
                    # Write exactly WRITE_BATCH bytes, so every write starts on a page boundary
                    # whatever the chunk sizes (ciphertext segments are 64 KiB + a 16-byte
                    # tag): unaligned writes cost ~10% here. The rest starts the next batch.
                    over = pending - WRITE_BATCH
                    rest: list[bytes | memoryview] = []
                    if over:
                        tail = memoryview(batch[-1])
                        batch[-1], rest = tail[: len(tail) - over], [tail[len(tail) - over :]]
                    if writing is not None:
                        size += await _settled_io(key, writing)
                    writing = loop.run_in_executor(None, _write_all, fd, batch)
                    batch, pending = rest, over
            if writing is not None:
                size += await _settled_io(key, writing)
            writing = None
            size += await _file_io(key, _write_all, fd, batch)
            await _file_io(key, _finish, fd, tmp, path)
            placed = True
        finally:
            await _drain(writing)
            await _in_thread(_close, fd, None if placed else tmp)
        return size

    async def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            f = await _in_thread(io.FileIO, path, "r")  # unbuffered, like open(path, "rb", 0)
        except OSError as exc:
            raise _translate(exc, key) from None
        try:
            await _in_thread(f.seek, start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                data = await _in_thread(f.read, want)
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data
        except OSError as exc:
            raise _translate(exc, key) from None
        finally:
            await _in_thread(f.close)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await _in_thread(path.unlink, True)
        except OSError as exc:
            raise _translate(exc, key) from None

    async def stat(self, key: str) -> BlobInfo | None:
        path = self._path(key)
        try:
            st = await _in_thread(os.stat, path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _translate(exc, key) from None
        return BlobInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        check_prefix(prefix)
        # Start at the deepest folder the prefix names whole, then filter by the rest.
        base = prefix.rpartition("/")[0]
        async for info in self._walk(base):
            if info.key.startswith(prefix):
                yield info

    async def _walk(self, rel: str) -> AsyncIterator[BlobInfo]:
        folder = self._objects / rel if rel else self._objects

        def scan() -> list[tuple[str, bool, int, float]]:
            try:
                with os.scandir(folder) as it:
                    rows = []
                    for e in it:
                        is_dir = e.is_dir(follow_symlinks=False)
                        st = None if is_dir else e.stat(follow_symlinks=False)
                        rows.append((e.name, is_dir, st.st_size if st else 0,
                                     st.st_mtime if st else 0.0))
                # Keys in byte order, as S3 lists them: a folder's keys all start with
                # "name/", so it sorts as that ("a-c" < "a/b" < "a0").
                return sorted(rows, key=lambda r: r[0] + "/" if r[1] else r[0])
            except (FileNotFoundError, NotADirectoryError):
                return []

        for name, is_dir, size, mtime in await _in_thread(scan):
            key = f"{rel}/{name}" if rel else name
            if is_dir:
                async for info in self._walk(key):
                    yield info
            else:
                yield BlobInfo(key, size, datetime.fromtimestamp(mtime, UTC))

    async def set_legal_hold(self, key: str, on: bool) -> None:
        check_key(key)  # a folder cannot enforce a hold; the index does

    async def ping(self) -> None:
        ok = await asyncio.to_thread(os.access, self._objects, os.W_OK)
        if not ok:
            raise StoreUnavailableError(f"local store {self.root} is not writable")

    async def close(self) -> None:
        return None



def _write_all(fd: int, batch: list[bytes | memoryview]) -> int:
    total = sum(len(b) for b in batch)
    written = 0
    views = [memoryview(b) for b in batch]
    while written < total:
        n = os.writev(fd, views)
        written += n
        # A short write (rare on files) leaves the rest to write again.
        while n and views:
            if n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0
    return total


def _finish(fd: int, tmp: Path, path: Path) -> None:
    os.fsync(fd)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _close(fd: int, discard: Path | None) -> None:
    os.close(fd)
    if discard is not None:
        discard.unlink(missing_ok=True)
