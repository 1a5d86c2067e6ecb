"""Fan one byte stream out to several consumers with bounded memory.

``tee(source, n)`` returns ``n`` branches. Each branch yields exactly the chunks of ``source``, in
order. A branch buffers at most ``max_buffered`` chunks; the source is read only when every open
branch has room, so the fastest consumer waits for the slowest and memory stays bounded at about
``n * max_buffered`` chunks.

Ownership and cancellation:

- The tee owns ``source`` from the moment a branch is first iterated: a reader task (one per tee)
  is started lazily then, and it is the only thing that iterates ``source``. Nothing is read before
  that, so building a tee and dropping it costs nothing.
- If ``source`` raises, every open branch first yields what it already holds and then raises that
  same exception object.
- A branch leaves the tee when it is closed (``await branch.aclose()``), when the task consuming it
  is cancelled while waiting for a chunk, or when the branch is garbage-collected. The others carry
  on without it: a departed branch never holds the reader back.
- When the last branch leaves, the reader task is cancelled and ``source`` is closed (its
  ``aclose()`` is awaited if it has one), so an abandoned upload stops being read.
- If the reader task is cancelled from outside while branches are still open (the event loop is
  shutting down), those branches raise :class:`TeeReaderCancelledError` rather than wait for ever.
"""

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable


class TeeReaderCancelledError(RuntimeError):
    """The tee's source reader was cancelled before the source ended."""


class _Shared:
    """State shared by the branches of one tee and its reader task."""

    def __init__(self, source: AsyncIterator[bytes], n: int, max_buffered: int) -> None:
        self.source = source
        self.max_buffered = max_buffered
        self.queues: list[deque[bytes]] = [deque() for _ in range(n)]
        self.open = [True] * n
        self.ended = False  # no more chunks will be queued
        self.error: BaseException | None = None
        self.reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    # Waiting: every change of state sets the current event and replaces it with a fresh one, so
    # waiters wake up, look again, and wait on the new event if they still cannot go on. Nothing
    # else is needed: all of this runs on one event loop thread.

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self._changed.wait()

    def start(self) -> None:
        if self.reader is None:
            self.reader = asyncio.get_running_loop().create_task(self._read(), name="tee-reader")

    def leave(self, index: int) -> None:
        """Branch ``index`` is gone: drop its chunks; stop reading when nobody is left."""
        if not self.open[index]:
            return
        self.open[index] = False
        self.queues[index].clear()
        if not any(self.open) and self.reader is not None and not self.reader.done():
            # RuntimeError: the loop is already closed (a branch collected at interpreter exit).
            with contextlib.suppress(RuntimeError):
                self.reader.cancel()
        self.notify()

    def _has_room(self) -> bool:
        return all(
            len(q) < self.max_buffered or not is_open
            for q, is_open in zip(self.queues, self.open, strict=True)
        )

    async def _read(self) -> None:
        exhausted = False
        try:
            async for chunk in self.source:
                await self.wait_until(self._has_room)
                if not any(self.open):
                    break
                for queue, is_open in zip(self.queues, self.open, strict=True):
                    if is_open:
                        queue.append(chunk)
                self.notify()
            else:
                exhausted = True
        except asyncio.CancelledError:
            if any(self.open):
                self.error = TeeReaderCancelledError(TeeReaderCancelledError.__doc__)
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the source is handed to every branch
            self.error = exc
        finally:
            self.ended = True
            self.notify()
            if not exhausted:
                aclose = getattr(self.source, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()


class TeeBranch:
    """One consumer's view of a tee: an async iterator with ``aclose()``."""

    def __init__(self, shared: _Shared, index: int) -> None:
        self._shared = shared
        self._index = index
        # A branch dropped without being closed must not hold the others back.
        weakref.finalize(self, shared.leave, index)

    def __aiter__(self) -> "TeeBranch":
        return self

    async def __anext__(self) -> bytes:
        shared, i = self._shared, self._index
        if not shared.open[i]:
            raise StopAsyncIteration
        shared.start()
        queue = shared.queues[i]
        try:
            await shared.wait_until(lambda: bool(queue) or shared.ended)
        except asyncio.CancelledError:
            shared.leave(i)
            raise
        if queue:
            chunk = queue.popleft()
            shared.notify()
            return chunk
        if shared.error is not None:
            raise shared.error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Leave the tee; the other branches continue."""
        self._shared.leave(self._index)


def tee(source: AsyncIterator[bytes], n: int, max_buffered: int = 8) -> list[AsyncIterator[bytes]]:
    """Split ``source`` into ``n`` branches that each yield every chunk (see the module doc)."""
    if n < 1:
        raise ValueError("a tee needs at least one branch")
    if max_buffered < 1:
        raise ValueError("max_buffered must be at least 1")
    shared = _Shared(source, n, max_buffered)
    return [TeeBranch(shared, i) for i in range(n)]
