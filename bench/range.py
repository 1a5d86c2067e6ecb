"""Time to the first byte of a seek: ``python -m bench.range``.

Starts ``archive serve`` (SQLite index, local encrypted store, a temporary folder) on 127.0.0.1,
uploads a 1 GiB and a 1 MiB recording (8 kHz 16-bit mono WAV headers followed by generated PCM,
streamed as the request body: the large one is never held in memory) with the tenant keeping
originals, then times ``Range: bytes=<middle>-`` requests on each as a player's seek makes them:
from sending the request to holding the first chunk of the body, then the connection is
closed. The two recordings are asked alternately so drift in the machine's load hits both alike.
It prints p50 and p95 of each and the ratio large/small.

Target (issue 4): the ratio stays under 1.5. A range read fetches and decrypts only the segments
holding it, so the time should not depend on the recording's length.

``--cold`` evicts both stored objects from the page cache (``posix_fadvise(DONTNEED)`` on their
files only) before every request, so each seek reads its segment from disk.
"""

import argparse
import asyncio
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.servers import archive_serve, stop

MIB = 1024 * 1024
CHUNK = MIB
TENANT = "bench"
TARGET = 1.5


def wav_header(data_bytes: int, rate: int = 8000) -> bytes:
    """A 44-byte header of a 16-bit mono PCM WAV holding ``data_bytes`` of samples."""
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


async def wav_body(total: int) -> AsyncIterator[bytes]:
    """A WAV of ``total`` bytes, yielded a MiB at a time (PCM from one random block, each chunk
    tagged with its index so that no two chunks are equal)."""
    header = wav_header(total - 44)
    block = bytearray(os.urandom(CHUNK))
    yield header
    sent, index = len(header), 0
    while sent < total:
        size = min(CHUNK, total - sent)
        block[:8] = index.to_bytes(8, "little")
        yield bytes(block[:size])
        sent += size
        index += 1


async def upload(session: aiohttp.ClientSession, base: str, secret: str, external_id: str,
                 total: int) -> str:
    async with session.put(
        f"{base}/v1/recordings/{external_id}", data=wav_body(total),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "audio/wav"},
        params={"started_at": "2026-11-23T09:00:00Z"},
    ) as r:
        body = await r.json()
        if r.status != 201:
            raise RuntimeError(f"upload of {external_id} failed: {r.status} {body}")
        return str(body["id"])


def evict(files: list[Path]) -> None:
    """Drop the page-cache pages of ``files`` (only them: the rest of the machine is untouched)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


async def first_byte(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                     start: int) -> float:
    """Seconds from sending a ``bytes=start-`` request to holding its first body chunk."""
    began = time.perf_counter()
    r = await session.get(url, headers={**headers, "Range": f"bytes={start}-"})
    try:
        chunk = await r.content.readany()
        took = time.perf_counter() - began
        if r.status != 206 or not chunk:
            raise RuntimeError(f"seek answered {r.status} with {len(chunk)} bytes")
    finally:
        r.close()  # a seek abandons the rest, as a player does
    return took


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def token(data_dir: Path, role: str) -> str:
    archive = str(Path(sys.executable).with_name("archive"))
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data_dir)}
    return subprocess.run([archive, "tokens", "create", "--role", role, "--tenant", TENANT],
                          env=env, check=True, capture_output=True, text=True).stdout.strip()


async def run(args: argparse.Namespace, data_dir: Path) -> bool:
    server, base, ingest_secret = await asyncio.to_thread(archive_serve, data_dir, TENANT)
    try:
        reader = await asyncio.to_thread(token, data_dir, "complaints")
        sizes = {"large": args.large_mib * MIB, "small": args.small_mib * MIB}
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            ids = {}
            for name, total in sizes.items():
                began = time.perf_counter()
                ids[name] = await upload(session, base, ingest_secret, f"bench-{name}", total)
                took = time.perf_counter() - began
                print(f"uploaded {name}: {total / MIB:,.0f} MiB in {took:.1f} s "
                      f"({total / MIB / took:,.0f} MiB/s)")
            files = {name: [p for p in (data_dir / "store").rglob(f"*{item_id}*")
                            if p.is_file()] for name, item_id in ids.items()}
            headers = {"Authorization": f"Bearer {reader}", "X-Purpose": "benchmark"}
            times: dict[str, list[float]] = {name: [] for name in sizes}
            for round_ in range(args.warmup + args.repeats):
                for name, total in sizes.items():
                    if args.cold:
                        evict(files[name])
                    url = f"{base}/v1/items/{ids[name]}/media"
                    took = await first_byte(session, url, headers, total // 2)
                    if round_ >= args.warmup:
                        times[name].append(took)
    finally:
        await asyncio.to_thread(stop, server)
    cache = "cold (evicted before each seek)" if args.cold else "warm page cache"
    print(f"time to first byte of a seek to the middle, {args.repeats} seeks each, {cache}:")
    for name, total in sizes.items():
        t = times[name]
        print(f"  {name:5} {total / MIB:>6,.0f} MiB  p50 {pct(t, 50) * 1e3:6.2f} ms  "
              f"p95 {pct(t, 95) * 1e3:6.2f} ms  mean {statistics.fmean(t) * 1e3:6.2f} ms")
    p50 = pct(times["large"], 50) / pct(times["small"], 50)
    p95 = pct(times["large"], 95) / pct(times["small"], 95)
    ok = p50 < TARGET and p95 < TARGET
    print(f"ratio large/small: p50 {p50:.2f}, p95 {p95:.2f} (target < {TARGET}): "
          f"{'met' if ok else 'MISSED'}")
    return ok


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.range", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50, help="timed seeks per size (50)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed seeks first (3)")
    parser.add_argument("--large-mib", type=int, default=1024, help="large recording (1024)")
    parser.add_argument("--small-mib", type=int, default=1, help="small recording (1)")
    parser.add_argument("--cold", action="store_true",
                        help="evict the stored objects from the page cache before each seek")
    parser.add_argument("--dir", type=Path, default=None,
                        help="parent of the temporary data folder (default: the system's)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-range-", dir=args.dir) as folder:
        ok = asyncio.run(run(args, Path(folder)))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
