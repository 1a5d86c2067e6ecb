"""Throughput of the blob stores, bare and encrypted: ``python -m bench.storage``.

For the local store (in a temporary folder) and for S3 (a moto server started for the run), it
times putting and getting the same bytes bare and through the streaming cipher, plus an
encrypted put that also hashes the plaintext (as the archive does), and prints the median of
the repeats in MB/s (10^6 bytes per second) with each encrypted/bare time ratio.

The target from the issue: for 64 MiB objects, encryption adds under 15% to a bare local put.
"""

import argparse
import asyncio
import hashlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from storage.base import BlobStore
from storage.crypto import decrypt, encrypt, new_data_key
from storage.local import LocalBlobStore
from storage.s3 import S3BlobStore, create_bucket
from tests.servers import moto_server

CHUNK = 64 * 1024
MIB = 1024 * 1024
KEY = "bench/call/2026/11/23/object"
ITEM = bytes(16)
TARGET = 1.15  # encrypted local put within 15% of the bare one
BENCH_CREDENTIALS = "bench"  # moto accepts anything


async def feed(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def drain(stream: AsyncIterator[bytes]) -> None:
    async for _ in stream:
        pass


async def hashed(chunks: list[bytes], digest: "hashlib._Hash") -> AsyncIterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def operations(
    store: BlobStore, chunks: list[bytes], dek: bytes
) -> dict[str, Callable[[], Awaitable[object]]]:
    """The timed operations, in the order they run (each get reads what its put stored)."""
    bare_key, enc_key = KEY + "-bare", KEY + "-enc"
    return {
        "bare put": lambda: store.put(bare_key, feed(chunks)),
        "bare get": lambda: drain(store.get(bare_key)),
        "encrypted put": lambda: store.put(enc_key, encrypt(dek, ITEM, feed(chunks))),
        "encrypted get": lambda: drain(decrypt(dek, ITEM, store.get(enc_key))),
        "encrypted put + SHA-256": lambda: store.put(
            enc_key, encrypt(dek, ITEM, hashed(chunks, hashlib.sha256()))
        ),
    }


async def measure(store: BlobStore, chunks: list[bytes], repeat: int) -> dict[str, float]:
    """Median seconds of each operation over ``repeat`` rounds (rounds interleave the kinds)."""
    ops = operations(store, chunks, new_data_key())
    for op in ops.values():  # warm up: first-use costs (connections, page cache) skew round 1
        await op()
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(repeat):
        for name, op in ops.items():
            start = time.perf_counter()
            await op()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def report(backend: str, size: int, seconds: dict[str, float]) -> list[str]:
    def rate(name: str) -> str:
        return f"{size / seconds[name] / 1e6:8.0f} MB/s"

    ratio = {
        "encrypted put": seconds["encrypted put"] / seconds["bare put"],
        "encrypted get": seconds["encrypted get"] / seconds["bare get"],
        "encrypted put + SHA-256": seconds["encrypted put + SHA-256"] / seconds["bare put"],
    }
    lines = [f"{backend}:"]
    for name in seconds:
        extra = ""
        if name in ratio:
            base = "bare get" if "get" in name else "bare put"
            extra = f"   {ratio[name]:.2f}x the time of {base} ({(ratio[name] - 1) * 100:+.0f}%)"
        lines.append(f"  {name:<24} {rate(name)}{extra}")
    return lines


async def bench_local(chunks: list[bytes], repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as folder:
        store = await LocalBlobStore(Path(folder)).open()
        try:
            return await measure(store, chunks, repeat)
        finally:
            await store.close()


async def bench_s3(chunks: list[bytes], repeat: int, endpoint: str) -> dict[str, float]:
    key = BENCH_CREDENTIALS
    await create_bucket("bench", endpoint_url=endpoint, access_key=key, secret_key=key)
    store = await S3BlobStore("bench", endpoint_url=endpoint, access_key=key, secret_key=key).open()
    try:
        return await measure(store, chunks, repeat)
    finally:
        await store.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=64, help="object size (default 64)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--no-s3", action="store_true", help="skip the moto S3 run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    size = args.size_mib * MIB
    data = os.urandom(size)
    chunks = [data[i : i + CHUNK] for i in range(0, size, CHUNK)]
    del data
    print(
        f"storage benchmark: {args.size_mib} MiB objects fed in {CHUNK // 1024} KiB chunks, "
        f"median of {args.repeat}; Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    local = asyncio.run(bench_local(chunks, args.repeat))
    lines = report("local (fsync'd files in a temporary folder)", size, local)
    if not args.no_s3:
        with (
            tempfile.TemporaryDirectory(prefix="bench-moto-") as logs,
            moto_server(Path(logs)) as endpoint,
        ):
            s3 = asyncio.run(bench_s3(chunks, args.repeat, endpoint))
        lines += report("s3 (moto server over HTTP on 127.0.0.1)", size, s3)
    print("\n".join(lines))
    overhead = local["encrypted put"] / local["bare put"]
    verdict = "meets" if overhead < TARGET else "MISSES"
    print(
        f"target: encrypted local put within +{(TARGET - 1) * 100:.0f}% of bare: "
        f"{(overhead - 1) * 100:+.1f}%, {verdict} it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
