"""A fault-injecting TCP proxy on 127.0.0.1, run on its own event loop in a thread so that real
``archive serve`` processes (and the test's own synchronous code) can use it.

Modes, switchable while it runs (``set``); switching cuts every open connection, so a pooled
keep-alive connection cannot carry the old mode past the switch:

- ``pass``: forward bytes both ways.
- ``refuse``: accept, then close at once (the client sees a reset or an empty answer).
- ``drop``: forward, then cut the connection (both sides, with a reset) once ``drop_after``
  bytes have gone ``up`` (client to target: mid-upload) or ``down`` (target to client:
  mid-download) on that connection.
- ``delay``: forward, sleeping ``delay`` seconds before each chunk in each direction.
- ``http_error``: never reach the target; read each HTTP/1.1 request (headers, then a
  ``Content-Length`` or chunked body) and answer it with an S3 error document (``503 SlowDown``
  or ``500 InternalError``), keeping the connection alive when the request allows it.
"""

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Mode = Literal["pass", "refuse", "drop", "delay", "http_error"]
Direction = Literal["up", "down"]
CHUNK = 64 * 1024

S3_ERRORS: dict[int, tuple[str, str, str]] = {
    503: ("Service Unavailable", "SlowDown", "Please reduce your request rate."),
    500: ("Internal Server Error", "InternalError",
          "We encountered an internal error. Please try again."),
}


@dataclass(frozen=True)
class Fault:
    mode: Mode = "pass"
    drop_after: int = 0
    direction: Direction = "up"
    delay: float = 0.0
    status: int = 503


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port`` under the current fault."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.fault = Fault()
        self.port = 0
        self.connections = 0  # accepted so far
        self.requests_answered = 0  # by http_error
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="fault-proxy")
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    # -- control, from any thread ------------------------------------------------------------

    def start(self) -> "FaultProxy":
        self._thread.start()
        self._server = self._call(self._listen())
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def set(self, mode: Mode, *, drop_after: int = 0, direction: Direction = "up",
            delay: float = 0.0, status: int = 503) -> None:
        """Switch the fault and cut every open connection."""
        self.fault = Fault(mode, drop_after, direction, delay, status)
        self.cut()

    def cut(self) -> None:
        """Reset every connection open now (new ones follow the current fault)."""
        self._call(self._cut())

    @contextlib.contextmanager
    def fault_of(self, mode: Mode, *, drop_after: int = 0, direction: Direction = "up",
                 delay: float = 0.0, status: int = 503) -> Iterator["FaultProxy"]:
        """Apply a fault for the ``with`` block, then go back to ``pass``."""
        self.set(mode, drop_after=drop_after, direction=direction, delay=delay, status=status)
        try:
            yield self
        finally:
            self.set("pass")

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- the proxy, on its own loop ----------------------------------------------------------

    async def _listen(self) -> asyncio.Server:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._cut()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:  # connection handlers still waiting on a socket
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self._server.wait_closed()

    async def _cut(self) -> None:
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        fault = self.fault
        if fault.mode == "refuse":
            _reset(writer)
            return
        self._open.add(writer)
        try:
            if fault.mode == "http_error":
                await self._answer_errors(reader, writer, fault)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                _reset(writer)
                return
            self._open.add(up_writer)
            try:
                await asyncio.gather(
                    self._pump(reader, up_writer, fault, "up", writer),
                    self._pump(up_reader, writer, fault, "down", up_writer),
                )
            finally:
                self._open.discard(up_writer)
                _close(up_writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._open.discard(writer)
            _close(writer)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, fault: Fault,
                    direction: Direction, other: asyncio.StreamWriter) -> None:
        sent = 0
        limit = fault.drop_after if fault.mode == "drop" and fault.direction == direction else -1
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                if fault.mode == "delay" and fault.delay:
                    await asyncio.sleep(fault.delay)
                if limit >= 0 and sent + len(data) >= limit:
                    dst.write(data[: limit - sent])
                    with contextlib.suppress(OSError):
                        await dst.drain()
                    _reset(dst)
                    _reset(other)
                    return
                sent += len(data)
                dst.write(data)
                await dst.drain()
        except OSError:
            _reset(dst)
            _reset(other)

    async def _answer_errors(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             fault: Fault) -> None:
        reason, code, message = S3_ERRORS[fault.status]
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed its keep-alive connection
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0].upper()
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            expects = headers.get("expect", "").lower() == "100-continue"
            keep = headers.get("connection", "").lower() != "close" and not expects
            if not expects:  # the body was sent: read it, so the next request can follow
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    await _skip_chunked(reader)
                else:
                    await reader.readexactly(int(headers.get("content-length", "0") or 0))
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
            ).encode()
            answer = (
                f"HTTP/1.1 {fault.status} {reason}\r\n"
                "Content-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"x-amz-request-id: {uuid.uuid4().hex[:16].upper()}\r\n"
                f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
            ).encode() + (b"" if method == "HEAD" else body)
            writer.write(answer)
            await writer.drain()
            self.requests_answered += 1
            if not keep:
                return


async def _skip_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the blank line
                pass
            return
        await reader.readexactly(size + 2)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort a connection (RST where the platform does it), dropping what is buffered."""
    with contextlib.suppress(OSError, RuntimeError):
        writer.transport.abort()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()
