"""Load test: ``python -m bench.load [--clients 50] [--seconds 300]``.

Starts a real ``archive serve`` (PostgreSQL index in a new database, local encrypted store,
its lifecycle worker purging every few seconds) on 127.0.0.1 and, for ``--seconds``, has
``--clients`` concurrent producers push recordings (PUT, a few seconds of WAV each) and
webchat transcripts (one in ten dated long ago, so that the purge has work), while readers
search by number, read byte ranges of stored calls, and place and release legal holds.

Afterwards it checks that every acknowledged upload is present: each acknowledged call's
audio, read back, has the SHA-256 of what was sent; each recent chat is active; each old chat
is active, held or purged by the worker (never lost any other way). It prints throughput,
p50/p99 latency per operation, errors by status, and the server's peak resident memory.
Traffic goes to 127.0.0.1 only; the run is bounded by ``--seconds`` and ``--max-uploads``.
"""

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import aiohttp

from bench.search import admin
from tests.ingest import media
from tests.servers import free_port, stop, wait_http

ARCHIVE = str(Path(sys.executable).with_name("archive"))
TENANT = "load"
SERVER = "postgresql://postgres@127.0.0.1:5432"


@dataclass(frozen=True)
class Target:
    base: str
    ingest: str  # tokens
    complaints: str
    until: float  # time.monotonic() at which clients stop
    limit: int  # uploads at most


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    calls: dict[str, str] = field(default_factory=dict)  # item id -> sha256 sent
    chats: dict[str, bool] = field(default_factory=dict)  # item id -> dated long ago
    uploads: int = 0
    upload_bytes: int = 0

    def timed(self, op: str, started: float, status: int, ok: set[int]) -> bool:
        self.latencies[op].append(time.perf_counter() - started)
        if status not in ok:
            self.errors[f"{op} {status}"] += 1
            return False
        return True


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([ARCHIVE, *args], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


async def producer(session: aiohttp.ClientSession, t: Target, audio: list[bytes],
                   tally: Tally) -> None:
    base, headers = t.base, {"Authorization": f"Bearer {t.ingest}"}
    rng = random.Random()
    while time.monotonic() < t.until and tally.uploads < t.limit:
        tally.uploads += 1
        external_id = uuid.uuid4().hex
        number = f"+44207946{rng.randrange(10_000):04d}"
        started = time.perf_counter()
        if rng.random() < 0.7:
            body = rng.choice(audio)
            query = urlencode({"started_at": datetime.now(UTC).isoformat(),
                               "caller_number": number, "agent_id": f"a{rng.randrange(20)}",
                               "service": "council-tax"})
            async with session.put(f"{base}/v1/recordings/{external_id}?{query}", data=body,
                                   headers={**headers, "Content-Type": "audio/wav"}) as r:
                answer = await r.json()
                if tally.timed("push call", started, r.status, {201}):
                    tally.calls[answer["id"]] = hashlib.sha256(body).hexdigest()
                    tally.upload_bytes += len(body)
        else:
            old = rng.random() < 0.1
            at = datetime.now(UTC) - timedelta(days=800 if old else 0)
            chat = {"external_id": external_id, "started_at": at.isoformat(),
                    "customer": {"name": "Load Test", "email": "load@example.org"},
                    "messages": [{"at": at.isoformat(), "from": "customer",
                                  "text": "My bin was not collected " * 20}]}
            async with session.post(f"{base}/v1/transcripts", json=chat, headers=headers) as r:
                answer = await r.json()
                if tally.timed("push chat", started, r.status, {201}):
                    tally.chats[answer["id"]] = old


async def reader(session: aiohttp.ClientSession, t: Target, tally: Tally) -> None:
    base, headers = t.base, {"Authorization": f"Bearer {t.complaints}"}
    rng = random.Random()
    while time.monotonic() < t.until:
        started = time.perf_counter()
        if rng.random() < 0.5 or not tally.calls:
            number = f"020 7946 {rng.randrange(10_000):04d}"
            async with session.get(f"{base}/v1/items", params={"caller_number": number},
                                   headers=headers) as r:
                await r.read()
                tally.timed("search", started, r.status, {200})
        else:
            item_id = rng.choice(list(tally.calls))
            async with session.get(f"{base}/v1/items/{item_id}/media",
                                   headers={**headers, "Range": "bytes=1000-40999"}) as r:
                await r.read()
                tally.timed("range read", started, r.status, {206})


async def holder(session: aiohttp.ClientSession, t: Target, tally: Tally) -> None:
    base, headers = t.base, {"Authorization": f"Bearer {t.complaints}"}
    while time.monotonic() < t.until:
        await asyncio.sleep(2)
        chosen = list(tally.chats)[-5:] + list(tally.calls)[-5:]
        if not chosen:
            continue
        started = time.perf_counter()
        async with session.post(f"{base}/v1/holds", headers=headers, json={
                "case_ref": f"LOAD-{uuid.uuid4().hex[:6]}", "reason": "load test",
                "item_ids": chosen}) as r:
            hold = await r.json()
            if not tally.timed("place hold", started, r.status, {201}):
                continue
        await asyncio.sleep(1)
        started = time.perf_counter()
        async with session.post(f"{base}/v1/holds/{hold['id']}/release", headers=headers,
                                json={"reason": "load test over"}) as r:
            await r.read()
            tally.timed("release hold", started, r.status, {200})


async def verify(session: aiohttp.ClientSession, base: str, token: str,
                 tally: Tally) -> tuple[int, list[str]]:
    """Every acknowledged upload present; calls decrypt to what was sent."""
    headers = {"Authorization": f"Bearer {token}"}
    problems: list[str] = []
    checked = 0
    gate = asyncio.Semaphore(16)

    async def one_call(item_id: str, sha: str) -> None:
        nonlocal checked
        async with gate, session.get(f"{base}/v1/items/{item_id}/media",
                                     headers=headers) as r:
            data = await r.read()
            checked += 1
            if r.status != 200 or hashlib.sha256(data).hexdigest() != sha:
                problems.append(f"call {item_id}: {r.status}, sha256 differs or missing")

    async def one_chat(item_id: str, old: bool) -> None:
        nonlocal checked
        async with gate, session.get(f"{base}/v1/items/{item_id}", headers=headers) as r:
            body = await r.json()
            checked += 1
            allowed = {"active", "purged"} if old else {"active"}
            if r.status != 200 or body.get("status") not in allowed:
                problems.append(f"chat {item_id}: {r.status} {body.get('status')}")

    await asyncio.gather(*(one_call(i, s) for i, s in tally.calls.items()),
                         *(one_chat(i, o) for i, o in tally.chats.items()))
    return checked, problems


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def load(args: argparse.Namespace, base: str, tokens: tuple[str, str], pid: int) -> int:
    audio = [media.wav(seconds) for seconds in (2.0, 3.5, 5.0)]
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=args.clients + 8)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        began = time.monotonic()
        t = Target(base, *tokens, until=began + args.seconds, limit=args.max_uploads)
        await asyncio.gather(*(producer(session, t, audio, tally) for _ in range(args.clients)),
                             *(reader(session, t, tally) for _ in range(4)),
                             holder(session, t, tally))
        elapsed = time.monotonic() - began
        peak = peak_rss_mib(pid)
        checked, problems = await verify(session, base, t.complaints, tally)
    stored = len(tally.calls) + len(tally.chats)
    print(f"{args.clients} clients for {elapsed:.0f} s against 127.0.0.1 (PostgreSQL "
          "index, local store, worker purging every 5 s)")
    print(f"uploads acknowledged: {stored} ({len(tally.calls)} calls, "
          f"{len(tally.chats)} chats): {stored / elapsed:.1f}/s, "
          f"{tally.upload_bytes / elapsed / 2**20:.2f} MiB/s of audio")
    for op, values in sorted(tally.latencies.items()):
        print(f"  {op:<13} n={len(values):>6}  p50 {pct(values, 0.5):8.1f} ms  "
              f"p99 {pct(values, 0.99):8.1f} ms  mean {statistics.mean(values) * 1000:7.1f}")
    print(f"errors: {dict(tally.errors) or 'none'}")
    print(f"server peak memory (VmHWM): {peak:.0f} MiB")
    print(f"verified afterwards: {checked} items; lost or corrupted: {len(problems)}")
    for problem in problems[:20]:
        print("  " + problem)
    return 1 if problems or tally.errors else 0


def run(args: argparse.Namespace) -> int:
    name = f"archive_bench_load_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(f"{SERVER}/postgres", f'CREATE DATABASE "{name}"'))
    data_dir = Path(tempfile.mkdtemp(prefix="archive-load-"))
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data_dir),
           "ARCHIVE_DATABASE_URL": f"{SERVER}/{name}",
           "ARCHIVE_PURGE_INTERVAL": "5", "ARCHIVE_LOG_LEVEL": "WARNING"}
    proc = None
    try:
        cli(env, "db", "upgrade")
        cli(env, "tenants", "create", TENANT)
        tokens = (cli(env, "tokens", "create", "--role", "ingest", "--tenant", TENANT),
                  cli(env, "tokens", "create", "--role", "complaints", "--tenant", TENANT))
        port = free_port()
        proc = subprocess.Popen([ARCHIVE, "serve", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/readyz", 30.0, proc)
        return asyncio.run(load(args, base, tokens, proc.pid))
    finally:
        if proc is not None:
            stop(proc)
        asyncio.run(admin(f"{SERVER}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--max-uploads", type=int, default=200_000,
                        help="stop pushing after this many uploads (a bound on the run)")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
