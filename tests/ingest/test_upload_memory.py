"""A 2 GiB recording streams through a real ``archive serve`` process in bounded memory."""

import asyncio
import json
import math
import re
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.servers import archive_serve, stop

GIB = 1024**3
RATE, CHANNELS = 44_100, 2
CHUNK = 1024 * 1024


def _peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def _wav_header(data_size: int) -> bytes:
    block = CHANNELS * 2
    return (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, CHANNELS, RATE, RATE * block, block, 16)
            + b"data" + struct.pack("<I", data_size))


def _tone_chunk() -> bytes:
    """One MiB of a stereo tone (a whole number of frames), repeated to make the upload."""
    frames = CHUNK // (CHANNELS * 2)
    out = bytearray()
    for i in range(frames):
        left = int(8000 * math.sin(2 * math.pi * 440 * i / RATE))
        right = int(8000 * math.sin(2 * math.pi * 660 * i / RATE))
        out += struct.pack("<hh", left, right)
    return bytes(out)


async def _wav_stream(size: int) -> AsyncIterator[bytes]:
    yield _wav_header(size)
    chunk = _tone_chunk()
    for _ in range(size // CHUNK):
        yield chunk


async def test_two_gib_upload_keeps_peak_memory_bounded(tmp_path: Path) -> None:
    proc, base, secret = await asyncio.to_thread(archive_serve, tmp_path / "var", "camden")
    try:
        headers = {"Authorization": f"Bearer {secret}",
                   "X-Archive-Metadata": json.dumps({"started_at": "2026-11-23T09:00:00Z"})}
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(base, timeout=timeout) as http:
            # Warm up every code path (ffmpeg, crypto, index) before the baseline.
            async with http.put("/v1/recordings/warm-up", data=_wav_stream(8 * CHUNK),
                                headers=headers) as r:
                assert r.status == 201, await r.text()
            before = _peak_rss_kib(proc.pid)
            async with http.put("/v1/recordings/big", data=_wav_stream(2 * GIB),
                                headers=headers) as r:
                body = await r.json()
                assert r.status == 201, body
            after = _peak_rss_kib(proc.pid)
        assert body["media"]["size"] == 2 * GIB + 44
        assert abs(body["duration"] - 2 * GIB / (RATE * CHANNELS * 2)) < 1
        grew_mib = (after - before) / 1024
        assert grew_mib < 100, f"peak RSS grew by {grew_mib:.0f} MiB for a 2 GiB upload"
    finally:
        await asyncio.to_thread(stop, proc)
