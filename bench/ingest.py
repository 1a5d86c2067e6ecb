"""Ingest throughput through the HTTP API: ``python -m bench.ingest``.

Starts ``archive serve`` (SQLite index, local encrypted store, a temporary folder) on
127.0.0.1 and, from this process, pushes N telephony recordings (8 kHz mono WAV, 5 minutes
each by default) with C concurrent clients, once with the tenant keeping originals and once
keeping Ogg/Opus. It prints recordings/s and MB/s (of WAV received) for each, next to:

- a bare put of the same bytes into the same store with the same concurrency (no HTTP, no
  encryption, no ffmpeg): the ceiling for storing originals. ``--store local`` (the default)
  is the local folder store, ``--store s3`` a moto S3 server on 127.0.0.1 (the production
  shape: the service and the bare put both write through the S3 API);
- the plain ffmpeg command line transcoding the same files to Opus with the same encoder
  settings and the same number of processes at once: the ceiling for the Opus path;
- with the local store, ``bench.minimal_server`` taking the same uploads in its own process:
  first storing each body as received, then through SHA-256 and AES-GCM as well. These rows
  split the originals' distance from the bare put into what HTTP costs on the machine, what
  the hash and cipher every implementation needs cost, and what the archive's bookkeeping
  (token, index, audit, checks) costs.

Targets (issue 3): originals reach at least 0.7x the bare put; Opus at least 0.9x ffmpeg's own
transcode rate.
"""

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path

import aiohttp

from ingest.audio import Rendition, Transcoder, find_ffmpeg
from storage.base import BlobStore, iter_bytes
from storage.local import LocalBlobStore
from storage.s3 import S3BlobStore, create_bucket
from tests.ingest import media
from tests.servers import archive_serve, free_port, moto_server, stop, wait_http

MB = 1e6
# bench.minimal_server's --work modes and their rows: the byte work alone, without the archive
MINIMAL = {"none": "HTTP only, minimal", "sealed": "HTTP+hash+AES, minimal"}
S3_CREDENTIALS = "bench"  # moto accepts anything
_buckets = itertools.count()


async def timed(jobs: list[Callable[[], Awaitable[object]]], concurrency: int) -> float:
    """Seconds to run every job with at most ``concurrency`` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            await job()

    start = time.perf_counter()
    await asyncio.gather(*(one(j) for j in jobs))
    return time.perf_counter() - start


@contextlib.contextmanager
def s3_environment(endpoint: str) -> Iterator[None]:
    """Point the ``archive`` processes this bench starts at the moto server."""
    saved = dict(os.environ)
    os.environ.update({"ARCHIVE_S3_ENDPOINT_URL": endpoint,
                       "AWS_ACCESS_KEY_ID": S3_CREDENTIALS,
                       "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def new_bucket(endpoint: str) -> str:
    bucket = f"bench-{next(_buckets)}"
    await create_bucket(bucket, endpoint_url=endpoint, access_key=S3_CREDENTIALS,
                        secret_key=S3_CREDENTIALS)
    return bucket


async def bare_put(files: list[bytes], concurrency: int, s3: str | None) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as folder:
        store: BlobStore
        if s3 is None:
            store = await LocalBlobStore(Path(folder)).open()
        else:
            store = await S3BlobStore(await new_bucket(s3), endpoint_url=s3,
                                      access_key=S3_CREDENTIALS,
                                      secret_key=S3_CREDENTIALS).open()
        try:
            return await timed([partial(store.put, f"bare/{i}", iter_bytes(f))
                                for i, f in enumerate(files)], concurrency)
        finally:
            await store.close()


def ffmpeg_cli(paths: list[Path], out: Path, concurrency: int) -> float:
    """The plain command line, ``concurrency`` processes at a time, same encoder settings."""
    args = Rendition.OPUS.output_args()
    start = time.perf_counter()
    running: list[subprocess.Popen[bytes]] = []
    for i, path in enumerate(paths):
        if len(running) >= concurrency:
            running.pop(0).wait()
        running.append(subprocess.Popen(
            [find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i",
             str(path), *args, str(out / f"{i}.ogg")]))
    for proc in running:
        proc.wait()
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process and its reaped children (ffmpeg), from
    ``/proc/PID/stat`` (fields 14-17)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    user, system, child_user, child_system = (int(f) / tick for f in fields[11:15])
    return user + child_user, system + child_system


async def through_http(
    files: list[bytes], policy: str, clients: int, data_dir: Path, s3: str | None
) -> tuple[float, float, float]:
    """Seconds for ``clients`` concurrent uploads of every file to a real ``archive serve``
    process (the clients run here, apart from the service, as producers do), and the service's
    user and system CPU seconds per upload meanwhile."""
    if s3 is not None:
        os.environ["ARCHIVE_STORE_URL"] = f"s3://{await new_bucket(s3)}/archive"
    server, base, secret = await asyncio.to_thread(archive_serve, data_dir / policy, "bench",
                                                   policy)
    try:
        headers = {"Authorization": f"Bearer {secret}"}
        meta = json.dumps({"started_at": "2026-11-23T09:00:00Z", "caller_number": "02079460000"})
        async with aiohttp.ClientSession(base) as http:

            async def push(i: int, data: bytes) -> None:
                async with http.put(f"/v1/recordings/bench-{i}", data=data,
                                    headers={**headers, "X-Archive-Metadata": meta}) as r:
                    if r.status != 201:
                        raise RuntimeError(f"upload {i}: {r.status} {await r.text()}")

            user0, system0 = cpu_seconds(server.pid)
            seconds = await timed([partial(push, i, f) for i, f in enumerate(files)], clients)
            user1, system1 = cpu_seconds(server.pid)
            n = len(files)
            return seconds, (user1 - user0) / n, (system1 - system0) / n
    finally:
        await asyncio.to_thread(stop, server)


async def through_minimal(files: list[bytes], clients: int, data_dir: Path, work: str) -> float:
    """Seconds for the same uploads to ``bench.minimal_server`` doing ``work`` (``none``: HTTP
    into the local store; ``sealed``: with SHA-256 and AES-GCM too) and nothing else, in its own
    process as ``archive serve`` is."""
    port = free_port()
    server = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "bench.minimal_server", "--port", str(port), "--work", work,
         str(data_dir)],
        stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_http, base + "/healthz", proc=server)
        async with aiohttp.ClientSession(base) as http:

            async def push(i: int, data: bytes) -> None:
                async with http.put(f"/r/bench-{i}", data=data) as r:
                    if r.status != 201:
                        raise RuntimeError(f"upload {i}: {r.status} {await r.text()}")

            return await timed([partial(push, i, f) for i, f in enumerate(files)], clients)
    finally:
        await asyncio.to_thread(stop, server)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--count", type=int, default=16, help="recordings per run (16)")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of each (5)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent uploads (4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs, median kept (3)")
    parser.add_argument("--store", choices=("local", "s3"), default="local",
                        help="where the service and the bare put store: a local folder "
                             "(default) or a moto S3 server")
    args = parser.parse_args(argv)
    if args.store == "local":
        asyncio.run(run(args, None))
        return
    with (tempfile.TemporaryDirectory(prefix="bench-moto-") as logs,
          moto_server(Path(logs)) as endpoint, s3_environment(endpoint)):
        asyncio.run(run(args, endpoint))


async def run(args: argparse.Namespace, s3: str | None) -> None:
    cores = os.cpu_count() or 1
    one = media.wav(args.minutes * 60)
    # Distinct files (so nothing is deduplicated), same size and content shape.
    files = [one[:-8] + i.to_bytes(8, "big") for i in range(args.count)]
    total = sum(len(f) for f in files)
    print(f"ingest benchmark: {args.count} recordings of {args.minutes:g} min 8 kHz mono WAV "
          f"({len(one) / MB:.1f} MB each), {args.store} store, {args.clients} clients, "
          f"{cores} cores, "
          f"ffmpeg {find_ffmpeg()}, median of {args.repeat}; Python {sys.version.split()[0]}")
    results: dict[str, list[float]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder:
        root = Path(folder)
        paths = []
        for i, data in enumerate(files):
            path = root / f"in-{i}.wav"
            path.write_bytes(data)
            paths.append(path)
        (root / "cli").mkdir()
        await Transcoder().probe(iter_bytes(files[0]))  # warm the binary's page cache
        for r in range(args.repeat):
            results.setdefault("bare put", []).append(await bare_put(files, args.clients, s3))
            results.setdefault("ffmpeg CLI -> opus", []).append(
                ffmpeg_cli(paths, root / "cli", cores))
            if s3 is None:  # the minimal server has only the local store
                for work, name in MINIMAL.items():
                    results.setdefault(name, []).append(
                        await through_minimal(files, args.clients, root / f"{work}{r}", work))
            for policy in ("original", "opus"):
                seconds, user, system = await through_http(files, policy, args.clients,
                                                           root / f"run{r}", s3)
                results.setdefault(f"HTTP, keep {policy}", []).append(seconds)
                cpu.setdefault(policy, []).append((user, system))
    secs = {k: statistics.median(v) for k, v in results.items()}
    for name, s in secs.items():
        print(f"  {name:<22} {args.count / s:7.1f} recordings/s {total / s / MB:8.1f} MB/s")
    for policy, samples in cpu.items():
        user = statistics.median(u for u, _ in samples) * 1000
        system = statistics.median(s for _, s in samples) * 1000
        print(f"  service CPU per upload, keep {policy}: user {user:.1f} ms, "
              f"system {system:.1f} ms (with its ffmpeg children)")
    original = secs["bare put"] / secs["HTTP, keep original"]
    if s3 is None:
        plain, sealed = (secs["bare put"] / secs[name] for name in MINIMAL.values())
        print(f"where the originals' time goes: HTTP alone reaches {plain:.2f}x the bare put; "
              f"with SHA-256 and AES-GCM {sealed:.2f}x; the archive's bookkeeping (token, "
              f"index, audit, checks) takes that to {original:.2f}x")
    opus = secs["ffmpeg CLI -> opus"] / secs["HTTP, keep opus"]
    print(f"originals: {original:.2f}x the bare put's throughput (target >= 0.70): "
          f"{'meets' if original >= 0.7 else 'MISSES'} it")
    print(f"opus: {opus:.2f}x ffmpeg's own transcode rate (target >= 0.90): "
          f"{'meets' if opus >= 0.9 else 'MISSES'} it")


if __name__ == "__main__":
    main(sys.argv[1:])
