"""Several real ``archive worker --once`` processes over one PostgreSQL index (issue 5, "done
when"): 20,000 expired items, one in ten held, each with a real encrypted object in a local
store. Four workers started together destroy every unheld item exactly once. One of them
killed with SIGKILL mid-pass (inside a destroying transaction, or while deleting the objects
of a batch it committed) loses nothing and duplicates nothing once another pass has run.

PostgreSQL only (FOR UPDATE SKIP LOCKED is what lets workers share the work); with CI=true an
unreachable server fails the run (the ``pg_template`` fixture)."""

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from archive import audit
from archive.db import Database
from bench.purge import Seeded, seed
from storage.keyring import LocalKeyring
from tests.databases import PgTemplate, pg_url_for
from tests.helpers import ARCHIVE_EXE

ITEMS = 20_000
HELD_EVERY = 10
TENANT = "camden"


@dataclass
class Setup:
    url: str  # plain postgresql:// URL of the test's database
    env: dict[str, str]
    store: Path
    seeded: Seeded


@pytest.fixture
async def setup(pg_template: PgTemplate, tmp_path: Path) -> AsyncIterator[Setup]:
    name = await pg_template.clone()
    url = pg_url_for(name)
    store = tmp_path / "store"
    keyring_path = tmp_path / "keyring.json"
    keyring = await LocalKeyring(keyring_path).open()
    try:
        seeded = await seed(url, store, keyring, items=ITEMS, expired=ITEMS,
                            held_every=HELD_EVERY, now=datetime.now(UTC), tenant=TENANT)
        assert len(seeded.expired) == ITEMS and len(seeded.held) == ITEMS // HELD_EVERY
        env = {**os.environ, "ARCHIVE_DATABASE_URL": url,
               "ARCHIVE_DATA_DIR": str(tmp_path / "var"),
               "ARCHIVE_STORE_URL": f"file://{store}",
               "ARCHIVE_KEYRING_PATH": str(keyring_path), "ARCHIVE_LOG_LEVEL": "WARNING"}
        yield Setup(url, env, store, seeded)
    finally:
        await pg_template.drop(name)


def start_worker(setup: Setup, log: Path) -> "subprocess.Popen[bytes]":
    with log.open("wb") as out:
        return subprocess.Popen([ARCHIVE_EXE, "worker", "--once"], env=setup.env,
                                stdout=out, stderr=subprocess.STDOUT)


def destroyed_by(log: Path) -> int:
    """The count a worker printed ("purge: N item(s) destroyed, ...")."""
    first = log.read_text().split("purge: ", 1)[1]
    return int(first.split(" ", 1)[0])


async def wait_all(procs: list["subprocess.Popen[bytes]"], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(p.poll() is None for p in procs):
        if time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            pytest.fail("a worker did not finish in time")
        await asyncio.sleep(0.1)


def client_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (its database connections among them),
    from /proc: how a PostgreSQL backend (``client_port``) is matched to a worker."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def check_invariants(setup: Setup) -> None:
    """Every unheld item destroyed exactly once, with its object gone and nothing queued;
    every held item intact; the audit chain whole."""
    held = set(setup.seeded.held)
    unheld = [i for i in setup.seeded.expired if i not in held]
    conn = await asyncpg.connect(setup.url)
    try:
        rows = await conn.fetch("SELECT id, status, wrapped_key IS NULL AS shredded, "
                                "caller_number IS NULL AS stripped FROM items")
        by_id = {r["id"]: r for r in rows}
        for item_id in unheld:
            row = by_id[item_id]
            assert row["status"] == "purged" and row["shredded"] and row["stripped"]
        for item_id in held:
            row = by_id[item_id]
            assert row["status"] == "active" and not row["shredded"] and not row["stripped"]
        destructions = await conn.fetch("SELECT item_id, count(*) AS n FROM destructions "
                                        "GROUP BY item_id")
        assert len(destructions) == len(unheld)
        assert all(r["n"] == 1 for r in destructions)
        assert {r["item_id"] for r in destructions} == set(unheld)
        events = await conn.fetch("SELECT item_id, count(*) AS n FROM audit_events "
                                  "WHERE action = 'item.purge' GROUP BY item_id")
        assert len(events) == len(unheld) and all(r["n"] == 1 for r in events)
        assert await conn.fetchval("SELECT count(*) FROM object_deletions") == 0
    finally:
        await conn.close()
    objects = setup.store / "objects"
    for item_id in unheld:
        assert not (objects / setup.seeded.keys[item_id]).exists()
    for item_id in held:
        assert (objects / setup.seeded.keys[item_id]).exists()
    db = Database(setup.url.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        async with db.reader() as session:
            [chain] = await audit.verify(session, TENANT)
        assert chain.ok and chain.events == len(unheld)
    finally:
        await db.close()


async def test_four_workers_destroy_each_unheld_item_exactly_once(
    setup: Setup, tmp_path: Path,
) -> None:
    logs = [tmp_path / f"worker-{n}.log" for n in range(4)]
    procs = [start_worker(setup, log) for log in logs]
    await wait_all(procs, 150)
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log.read_text()
    counts = [destroyed_by(log) for log in logs]
    assert sum(counts) == ITEMS - ITEMS // HELD_EVERY
    assert sum(1 for c in counts if c) >= 2, f"the work was not shared: {counts}"
    await check_invariants(setup)


# What the victim's database connection holds when it is killed: a row-exclusive lock on items
# (its UPDATE: inside a destroying transaction, which must roll back whole), or a row-share
# lock on object_deletions after having destroyed (deleting a batch's objects after commit:
# its destroyed items' deletions stay queued for another pass).
DESTROYING = ("items", "RowExclusiveLock")
DRAINING = ("object_deletions", "RowShareLock")


async def wait_until_holding(url: str, pid: int, lock: tuple[str, str]) -> None:
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + 60
        while not await conn.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE a.datname = current_database() AND a.client_port = ANY($1::int[]) "
                "AND l.relation = $2::regclass AND l.mode = $3 AND l.granted",
                list(client_ports(pid)), *lock):
            assert time.monotonic() < deadline, "the worker was never caught at it"
            await asyncio.sleep(0.002)
    finally:
        await conn.close()


@pytest.mark.parametrize("moment", ["destroying", "draining"])
async def test_a_worker_killed_mid_pass_loses_and_duplicates_nothing(
    setup: Setup, tmp_path: Path, moment: str,
) -> None:
    logs = [tmp_path / f"worker-{n}.log" for n in range(4)]
    procs = [start_worker(setup, log) for log in logs]
    victim = procs[0]
    await wait_until_holding(setup.url, victim.pid, DESTROYING)
    if moment == "draining":
        await wait_until_holding(setup.url, victim.pid, DRAINING)
    assert victim.poll() is None, "the worker finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    await wait_all(procs, 150)
    assert victim.returncode == -signal.SIGKILL
    for proc, log in zip(procs[1:], logs[1:], strict=True):
        assert proc.returncode == 0, log.read_text()

    final_log = tmp_path / "worker-final.log"
    final = start_worker(setup, final_log)
    await wait_all([final], 150)
    assert final.returncode == 0, final_log.read_text()
    await check_invariants(setup)
