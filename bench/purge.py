"""Purge throughput and the cost of an empty pass: ``python -m bench.purge``.

Seeds a PostgreSQL database (``archive_bench_purge_seed``; COPY) with ``--items`` calls of
one tenant, of which ``--expired`` (the oldest) are past their retention window, each of
those with a real small encrypted object in a local store (written as files, as the local
store lays them out) and a data key wrapped by a local keyring; one expired item in a hundred
sits under a legal hold. Then, on a copy of that database (``CREATE DATABASE ... TEMPLATE``)
and a hard-linked copy of the store, it runs one full purge pass (``purge_pass``, batches of
``--batch-size``, as a worker does) and reports items destroyed per second, and then times
empty passes over what is left (nothing expired) and reports their median.

Targets (issue 5): at least 2,000 items destroyed per second, and an empty pass over
1,000,000 items under 50 ms (its cost must grow with what is expired, not with the archive).

``--keep`` keeps the seeded database and ``--data-dir`` (store and keyring) for later runs;
``--reuse`` runs on them without seeding again. Without ``--keep`` everything is dropped.
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from archive.clock import SystemClock
from archive.db import Database
from archive.ids import uuid7
from archive.service import Archive, object_key
from bench.search import admin
from lifecycle.purge import claim, purge_pass
from storage import crypto
from storage.base import iter_bytes
from storage.keyring import LocalKeyring
from storage.local import LocalBlobStore

TARGET_RATE = 2_000.0  # items destroyed per second
TARGET_EMPTY_MS = 50.0
TENANT = "bench"
SEGMENT = 4096
BASIS = json.dumps({"policy": "default", "version": 0, "days": 365})
COLUMNS = ["id", "tenant", "channel", "external_id", "status", "started_at", "ended_at",
           "duration", "direction", "caller_number", "called_number", "agent_id", "service",
           "object_key", "media_type", "plain_size", "stored_size", "sha256", "wrapped_key",
           "kek_id", "retain_until", "retention_basis", "object_lock", "created_at",
           "updated_at", "special_category"]


@dataclass
class Seeded:
    """What ``seed`` wrote: the ids of the expired items, held ones apart."""

    expired: list[uuid.UUID]
    held: list[uuid.UUID]
    keys: dict[uuid.UUID, str]  # object key of each expired item


async def seed(
    url: str, store_root: Path, keyring: LocalKeyring, *, items: int, expired: int,
    held_every: int, now: datetime, tenant: str = TENANT, plain_size: int = 200,
) -> Seeded:
    """Write ``items`` active calls of ``tenant`` into a migrated PostgreSQL database
    (``url``, a plain postgresql:// URL), the first ``expired`` of them past their window with
    a real encrypted object each under ``store_root``; every ``held_every``-th expired item
    (0: none) is put under one active legal hold."""
    rng = random.Random(20261123)
    seeded = Seeded([], [], {})
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO tenants (id, name, created_at, media_policy) "
                           "VALUES ($1, $1, $2, 'original') ON CONFLICT DO NOTHING",
                           tenant, now)
        batch: list[tuple[Any, ...]] = []
        span = 3 * 365 * 86_400
        for n in range(items):
            # Oldest first, as contacts arrive: the first ``expired`` ended over a year ago.
            if n < expired:
                started = now - timedelta(days=800) + timedelta(
                    seconds=n * (400 * 86_400) / max(expired, 1))
            else:
                started = now - timedelta(days=360) + timedelta(
                    seconds=(n - expired) * span / max(items - expired, 1))
            batch.append(_row(tenant, n, started, now, rng))
            if len(batch) == 10_000 or n == items - 1:
                await _store_objects(batch, store_root, keyring, seeded, plain_size)
                await conn.copy_records_to_table("items", records=batch, columns=COLUMNS)
                batch = []
        if held_every:
            seeded.held = seeded.expired[::held_every]
            hold_id = uuid7()
            await conn.execute(
                "INSERT INTO holds (id, tenant, case_ref, reason, status, placed_by, placed_at) "
                "VALUES ($1, $2, 'CMP-BENCH', 'complaint', 'active', 'bench', $3)",
                hold_id, tenant, now)
            await conn.copy_records_to_table(
                "hold_items", records=[(hold_id, i, "bench", now) for i in seeded.held],
                columns=["hold_id", "item_id", "added_by", "added_at"])
            await conn.execute("UPDATE items SET held = true WHERE id = ANY($1::uuid[])",
                               seeded.held)
        await conn.execute("VACUUM ANALYZE")  # autovacuum would, in service
    finally:
        await conn.close()
    return seeded


def _row(tenant: str, n: int, started: datetime, now: datetime, rng: random.Random
         ) -> tuple[Any, ...]:
    item_id = uuid7(int(started.timestamp() * 1000))
    ended = started + timedelta(seconds=rng.uniform(30, 1200))
    retain = ended + timedelta(days=365)
    caller = f"+447700{rng.randrange(1_000_000):06d}"
    return (item_id, tenant, "call", f"{tenant}-{n}", "active", started, ended,
            (ended - started).total_seconds(), "inbound", caller, "+442079460000",
            f"agent-{n % 50:02d}", "housing", None, None, None, None, None, None, None,
            retain, BASIS, False, ended, ended, False)


async def _store_objects(batch: list[tuple[Any, ...]], root: Path, keyring: LocalKeyring,
                         seeded: Seeded, plain_size: int) -> None:
    """Give each expired row of ``batch`` (retain_until in the past) a wrapped data key and a
    real encrypted object, written where the local store keeps it."""
    now = datetime.now(UTC)
    todo = [i for i, row in enumerate(batch) if row[20] <= now]
    if not todo:
        return
    data_keys = [crypto.new_data_key() for _ in todo]
    wrapped = await asyncio.gather(*(keyring.wrap(batch[i][1], data_key, str(batch[i][0]))
                                     for i, data_key in zip(todo, data_keys, strict=True)))
    files: list[tuple[Path, bytes]] = []
    for i, data_key, wrap in zip(todo, data_keys, wrapped, strict=True):
        row = list(batch[i])
        item_id, tenant, started = row[0], row[1], row[5]
        key = object_key(tenant, "call", started, item_id)
        plain = os.urandom(plain_size)
        sealed = b"".join([c async for c in crypto.encrypt(
            crypto.derive_object_key(data_key, "media"), item_id.bytes, iter_bytes(plain),
            SEGMENT)])
        files.append((root / "objects" / key, sealed))
        row[13:20] = [key, "audio/wav", plain_size, len(sealed),
                      hashlib.sha256(plain).hexdigest(), wrap.blob, wrap.kek_id]
        batch[i] = tuple(row)
        seeded.expired.append(item_id)
        seeded.keys[item_id] = key
    await asyncio.to_thread(_write_files, files)


def _write_files(files: list[tuple[Path, bytes]]) -> None:
    folders: set[Path] = set()
    for path, data in files:
        if path.parent not in folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            folders.add(path.parent)
        path.write_bytes(data)


# -- the run -------------------------------------------------------------------------------

async def explain_claim(url: str, batch_size: int) -> str:
    """The plan of one claim as PostgreSQL runs it now (in a transaction rolled back)."""
    stmt = claim(datetime.now(UTC), batch_size)
    engine = Database(url.replace("postgresql://", "postgresql+asyncpg://")).engine
    compiled = stmt.compile(dialect=engine.dialect)  # no connection: only its SQL
    await engine.dispose()
    params = [compiled.params[name] for name in compiled.positiontup or []]
    conn = await asyncpg.connect(url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}", *params)
        await transaction.rollback()  # EXPLAIN ANALYZE took the row locks: let them go
    finally:
        await conn.close()
    return "\n".join(r[0] for r in rows)


async def run(args: argparse.Namespace) -> int:
    server = args.url.rstrip("/")
    admin_url = f"{server}/postgres"
    seed_db, run_db = f"{args.database}_seed", args.database
    data: Path = args.data_dir
    keyring_path, seed_store, run_store = data / "keyring.json", data / "seed-store", data / "store"
    if args.reuse:
        if not seed_store.is_dir():
            print(f"--reuse: nothing kept in {data}; run with --keep first", file=sys.stderr)
            return 2
    else:
        await admin(admin_url, f'DROP DATABASE IF EXISTS "{seed_db}" WITH (FORCE)')
        await admin(admin_url, f'CREATE DATABASE "{seed_db}"')
        shutil.rmtree(data, ignore_errors=True)
        await asyncio.to_thread(data.mkdir, parents=True)
        db = Database(f"{server}/{seed_db}".replace("postgresql://", "postgresql+asyncpg://"))
        await db.upgrade()
        await db.close()
        keyring = await LocalKeyring(keyring_path).open()
        started = time.perf_counter()
        seeded = await seed(f"{server}/{seed_db}", seed_store, keyring, items=args.items,
                            expired=args.expired, held_every=100, now=datetime.now(UTC))
        print(f"seeded {args.items:,} items, {len(seeded.expired):,} expired with objects "
              f"({len(seeded.held):,} of them held) in {time.perf_counter() - started:.0f} s",
              flush=True)
    try:
        await admin(admin_url, f'DROP DATABASE IF EXISTS "{run_db}" WITH (FORCE)')
        await admin(admin_url, f'CREATE DATABASE "{run_db}" TEMPLATE "{seed_db}"')
        shutil.rmtree(run_store, ignore_errors=True)
        await asyncio.to_thread(  # hard links: the purge deletes the copy's, not the seed's
            subprocess.run, ["cp", "-al", str(seed_store), str(run_store)], check=True)
        await admin(f"{server}/{run_db}", "ANALYZE")
        plan = await explain_claim(f"{server}/{run_db}", args.batch_size)
        full, empties = await measure(f"{server}/{run_db}", run_store, keyring_path, args)
        empty_plan = await explain_claim(f"{server}/{run_db}", args.batch_size)
    finally:
        await admin(admin_url, f'DROP DATABASE IF EXISTS "{run_db}" WITH (FORCE)')
        shutil.rmtree(run_store, ignore_errors=True)
        if not args.keep:
            await admin(admin_url, f'DROP DATABASE IF EXISTS "{seed_db}" WITH (FORCE)')
            shutil.rmtree(data, ignore_errors=True)
    return report(args, full, empties, plan, empty_plan)


async def measure(url: str, store_root: Path, keyring_path: Path, args: argparse.Namespace
                  ) -> tuple[Any, list[float]]:
    db = Database(url.replace("postgresql://", "postgresql+asyncpg://"))
    store = await LocalBlobStore(store_root).open()
    keyring = await LocalKeyring(keyring_path).open()
    archive = Archive(db, store, keyring, SystemClock(), SEGMENT)
    try:
        full = await purge_pass(archive, batch_size=args.batch_size)
        for _ in range(3):  # warm the pool and caches: a worker's steady state
            await purge_pass(archive, batch_size=args.batch_size)
        empties = []
        for _ in range(args.repeats):
            empty = await purge_pass(archive, batch_size=args.batch_size)
            assert empty.destroyed == 0
            empties.append(empty.seconds * 1000)
    finally:
        await db.close()
    return full, empties


def report(args: argparse.Namespace, full: Any, empties: list[float], plan: str,
           empty_plan: str) -> int:
    empty_ms = statistics.median(empties)
    rate_ok = full.rate >= TARGET_RATE
    empty_ok = empty_ms < TARGET_EMPTY_MS
    print(f"\ncommand: python -m bench.purge {' '.join(sys.argv[1:])}".rstrip())
    print(f"archive: {args.items:,} items, {args.expired:,} expired (1 in 100 held); "
          f"PostgreSQL, local store; batch size {args.batch_size}")
    print(f"\nclaim plan (first batch):\n{_indent(plan)}")
    print(f"\nclaim plan (nothing expired):\n{_indent(empty_plan)}")
    print(f"\nfull pass:  {full}\n")
    print(f"{'what':<32}{'measured':>14}{'target':>14}{'ratio':>9}  verdict")
    print(f"{'items destroyed per second':<32}{full.rate:>14,.0f}{'>= 2,000':>14}"
          f"{full.rate / TARGET_RATE:>8.2f}x  {'ok' if rate_ok else 'MISS'}")
    print(f"{'empty pass, median of ' + str(len(empties)):<32}{empty_ms:>11.1f} ms"
          f"{'< 50 ms':>14}{empty_ms / TARGET_EMPTY_MS:>8.2f}x  {'ok' if empty_ok else 'MISS'}")
    print(f"empty passes (ms): min {min(empties):.1f}, max {max(empties):.1f}")
    return 0 if rate_ok and empty_ok else 1


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432",
                        help="PostgreSQL server URL, without a database")
    parser.add_argument("--database", default="archive_bench_purge")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--expired", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=21, help="empty passes timed")
    parser.add_argument("--data-dir", default="var/bench-purge",
                        help="store and keyring of the seeded archive")
    parser.add_argument("--keep", action="store_true",
                        help="keep the seeded database and data dir for --reuse")
    parser.add_argument("--reuse", action="store_true", help="use what --keep kept")
    args = parser.parse_args()
    args.data_dir = Path(args.data_dir).resolve()
    if not 0 <= args.expired <= args.items:
        parser.error("--expired must be between 0 and --items")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
