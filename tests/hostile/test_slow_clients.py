"""Slow clients against a real ``archive serve``: a slowloris that sends its headers one byte a
second, and a client that connects and sends nothing, must be cut off by a timeout, or a few
hundred of them hold every connection slot and file descriptor of the service.

aiohttp has no separate header-read timeout: its one guard is ``keepalive_timeout``, armed when
a connection opens and re-armed after each answer, which closes a connection still waiting for
a complete request when it fires (aiohttp/web_protocol.py ``_process_keepalive``). The
``AppRunner`` default is 3,630 s; ``run_app`` passes 75 s; ``archive serve`` passes nothing.
"""

import socket
import time
from collections.abc import Iterator

import pytest

from tests.servers import archive_serve, stop

# A client must have sent a whole request head within this; the fix sets 15 s.
CUT_OFF = 20.0


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("slow")
    proc, url, _ = archive_serve(data, "camden", stderr=data / "serve.log")
    try:
        yield url
    finally:
        stop(proc)


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.settimeout(1.0)
    return sock


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes) -> float | None:
    """Send ``trickle`` one byte a second until the server closes (the seconds it took) or
    ``seconds`` pass (``None``)."""
    start = time.monotonic()
    for byte in trickle:
        if time.monotonic() - start > seconds:
            return None
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue  # a second passed with no answer: send the next byte
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
    return None


def test_the_server_answers_a_normal_request(base: str) -> None:
    """The control: the same socket code gets an answer from a client that is not slow."""
    with _connect(base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: archive\r\nConnection: close\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")


def test_a_slowloris_is_cut_off(base: str) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: archive\r\n" + b"X-Slow: " + b"a" * 200
    with _connect(base) as sock:
        took = _closed_within(sock, CUT_OFF, head)
    assert took is not None, f"the server still waited for the request head after {CUT_OFF}s"


def test_a_silent_connection_is_cut_off(base: str) -> None:
    with _connect(base) as sock:
        sock.settimeout(CUT_OFF)
        start = time.monotonic()
        try:
            data = sock.recv(4096)
        except TimeoutError:
            data = None
        except ConnectionResetError:
            data = b""
    assert data == b"", (
        f"the server kept a connection that sent nothing open for {time.monotonic() - start:.0f}s")
