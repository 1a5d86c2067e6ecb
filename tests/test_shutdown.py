"""Graceful shutdown (issue 8): SIGTERM to real ``archive serve`` and ``archive worker``
processes, stopped by PID.

- A large upload in flight when ``archive serve`` gets SIGTERM finishes (201) within
  ``shutdown_timeout``, while new connections are refused; the process exits 0 and, after a
  restart, the item decrypts to the bytes sent.
- An upload that cannot finish within ``shutdown_timeout`` is cut off and rolled back: no row,
  no object, no temporary file, nothing left for the sweeper; the same upload again succeeds.
- ``archive worker`` stopped in the middle of a purge pass over many items (PostgreSQL) exits 0
  with each item destroyed whole or untouched, and the next pass does the rest.
"""

import asyncio
import hashlib
import http.client
import json
import math
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from archive import audit
from archive.db import Database
from bench.purge import Seeded, seed
from storage.keyring import LocalKeyring
from tests.databases import PgTemplate, pg_url_for
from tests.helpers import ARCHIVE_EXE
from tests.ingest import media
from tests.servers import archive_serve, free_port, stop

TENANT = "camden"
MIB = 1024 * 1024
RATE = 8000


def _wav_header(data_size: int) -> bytes:
    """A mono 16-bit PCM WAV header for ``data_size`` bytes of samples."""
    return (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
            + b"data" + struct.pack("<I", data_size))


def _tone() -> bytes:
    """One MiB of a 440 Hz tone, a whole number of frames."""
    return b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / RATE)))
                    for i in range(MIB // 2))


def _metadata() -> str:
    return json.dumps({"started_at": datetime.now(UTC).isoformat(), "direction": "inbound"})


@dataclass
class Upload:
    """A raw ``PUT /v1/recordings/{external_id}`` of a WAV of ``mib`` MiB, sent from a thread
    through http.client so the test controls the pace: the first ``first_mib`` MiB at once,
    then ``in_flight`` is set and the rest, sent slowly, waits for ``resume``; with ``stall``
    nothing more is sent and the thread only waits for the server to answer or hang up."""

    port: int
    secret: str
    external_id: str
    mib: int
    first_mib: int
    stall: bool = False
    in_flight: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    status: int | None = None
    body: bytes = b""
    error: str = ""
    sha256: str = ""
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"upload-{self.external_id}")
        self.thread.start()

    def join(self, timeout: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the upload did not end"

    def _run(self) -> None:
        data_size = self.mib * MIB
        header, tone = _wav_header(data_size), _tone()
        digest = hashlib.sha256(header)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        try:
            conn.putrequest("PUT", f"/v1/recordings/{self.external_id}")
            conn.putheader("Authorization", f"Bearer {self.secret}")
            conn.putheader("X-Archive-Metadata", _metadata())
            conn.putheader("Content-Type", "audio/wav")
            conn.putheader("Content-Length", str(len(header) + data_size))
            conn.endheaders()
            conn.send(header)
            for n in range(self.mib):
                if n == self.first_mib:
                    self.in_flight.set()
                    if self.stall:
                        self._wait_for_server(conn)
                        return
                    if not self.resume.wait(300):
                        break
                conn.send(tone)
                digest.update(tone)
                self.sent += MIB
                if n >= self.first_mib:
                    time.sleep(0.01)  # slowly: the drain must wait for it
            self.sha256 = digest.hexdigest()
            response = conn.getresponse()
            self.status, self.body = response.status, response.read()
        except OSError as exc:  # the server cut the connection
            self.error = type(exc).__name__
        finally:
            self.in_flight.set()
            conn.close()

    def _wait_for_server(self, conn: http.client.HTTPConnection) -> None:
        """Read whatever the server sends (an answer, or nothing before it hangs up)."""
        assert conn.sock is not None
        received = b""
        while chunk := conn.sock.recv(65536):
            received += chunk
        if received.startswith(b"HTTP/1.1 "):
            self.status = int(received[9:12])
        self.body = received


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def store_files(data_dir: Path) -> tuple[list[Path], list[Path]]:
    """The objects and the temporary files in the embedded local store."""
    root = data_dir / "store"
    objects = [p for p in (root / "objects").rglob("*") if p.is_file()]
    tmp = list((root / "tmp").iterdir()) if (root / "tmp").exists() else []
    return objects, tmp


def index_rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data_dir / "archive.db") as db:
        return db.execute(sql).fetchall()


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def json_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list["subprocess.Popen[bytes]"]]:
    """The ``archive serve`` processes a test starts; any still running at the end are
    stopped by PID."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        stop(proc, 60)


@pytest.mark.slow
def test_sigterm_lets_a_large_upload_finish_and_refuses_new_connections(
    tmp_path: Path, served: list["subprocess.Popen[bytes]"],
) -> None:
    data_dir, log = tmp_path / "var", tmp_path / "serve.log"
    env = {"ARCHIVE_SHUTDOWN_TIMEOUT": "120", "ARCHIVE_PURGE_INTERVAL": "1",
           "ARCHIVE_LOG_LEVEL": "INFO"}
    proc, base, secret = archive_serve(data_dir, TENANT, role="admin", extra_env=env,
                                       worker=True, stderr=log)
    served.append(proc)
    port = port_of(base)
    upload = Upload(port, secret, "big-1", mib=300, first_mib=40)
    upload.start()
    assert upload.in_flight.wait(120) and not upload.error
    os.kill(proc.pid, signal.SIGTERM)
    wait_until(lambda: refused(port), 10, "the listening socket to close")
    # Draining: the process waits for the upload, whose client has not even sent it all.
    assert proc.poll() is None and upload.sent < 300 * MIB
    upload.resume.set()
    upload.join(300)
    assert upload.status == 201, (upload.status, upload.body[:500], upload.error)
    item = json.loads(upload.body)
    assert item["media"]["size"] == 300 * MIB + 44
    assert item["media"]["sha256"] == upload.sha256
    assert proc.wait(60) == 0
    # In the log: the drain began with the upload in flight, the worker stopped at once, the
    # upload was answered during the drain, and nothing was cut off.
    messages = [d["message"] for d in json_lines(log)]
    draining = messages.index("stopping: new connections refused; 1 request(s) in flight "
                              "have 120 s to finish")
    assert messages.index("lifecycle worker stopped") > draining
    assert any(m.startswith("PUT put_recording 201 ") for m in messages[draining:])
    assert not any("cut off" in m for m in messages) and messages[-1] == "stopped"

    # After a restart the item is there, whole: it decrypts to the bytes sent.
    proc, base, secret = archive_serve(data_dir, TENANT, role="admin", stderr=log)
    served.append(proc)

    async def read_back() -> str:
        digest = hashlib.sha256()
        async with (
            aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {secret}"},
                                  timeout=aiohttp.ClientTimeout(total=300)) as http_,
            http_.get(f"/v1/items/{item['id']}/media") as r,
        ):
            assert r.status == 200
            async for chunk in r.content.iter_chunked(MIB):
                digest.update(chunk)
        return digest.hexdigest()

    assert asyncio.run(read_back()) == upload.sha256
    assert index_rows(data_dir, "SELECT status, count(*) FROM items GROUP BY status") == [
        ("active", 1)]


def test_sigterm_cuts_off_an_upload_that_cannot_finish_and_rolls_it_back(
    tmp_path: Path, served: list["subprocess.Popen[bytes]"],
) -> None:
    data_dir, log = tmp_path / "var", tmp_path / "serve.log"
    env = {"ARCHIVE_SHUTDOWN_TIMEOUT": "2", "ARCHIVE_LOG_LEVEL": "DEBUG"}
    proc, base, secret = archive_serve(data_dir, TENANT, role="admin", extra_env=env,
                                       stderr=log)
    served.append(proc)
    upload = Upload(port_of(base), secret, "stalled-1", mib=64, first_mib=8, stall=True)
    upload.start()
    assert upload.in_flight.wait(60) and not upload.error
    # The upload is being written: a pending row and a temporary file in the store.
    wait_until(lambda: bool(store_files(data_dir)[1]), 30, "the upload's temporary file")
    assert index_rows(data_dir, "SELECT status FROM items") == [("pending",)]
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0
    # Cut off after shutdown_timeout (2 s), not at once and not much later.
    assert 1.5 < time.monotonic() - started < 20
    upload.join(30)
    assert upload.status != 201 and upload.sent < 64 * MIB
    # Rolled back: no row, no object, no temporary file, nothing queued for the sweeper.
    assert index_rows(data_dir, "SELECT count(*) FROM items") == [(0,)]
    assert index_rows(data_dir, "SELECT count(*) FROM object_deletions") == [(0,)]
    assert store_files(data_dir) == ([], [])
    # JSON to the end; the cut-off named with its route and request id, nothing else.
    lines = json_lines(log)
    [cut] = [d for d in lines if d["message"].startswith("request cut off by shutdown")]
    assert cut["message"] == "request cut off by shutdown: PUT put_recording"
    assert cut["route"] == "put_recording" and cut["tenant"] == TENANT
    assert len(cut["request_id"]) == 32
    assert lines[-2]["message"] == "stopping: cut off 1 request(s) not finished within 2 s"
    assert lines[-1]["message"] == "stopped"

    # The producer retries the same recording: one item.
    proc, base, secret = archive_serve(data_dir, TENANT, role="admin", stderr=log)
    served.append(proc)
    wav = media.wav(1.0)

    async def retry() -> list[Any]:
        async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {secret}"}) \
                as http_:
            headers = {"X-Archive-Metadata": json.dumps({"started_at": "2026-11-23T09:00:00Z"})}
            async with http_.put("/v1/recordings/stalled-1", data=wav, headers=headers) as r:
                assert r.status == 201, await r.text()
            async with http_.put("/v1/recordings/stalled-1", data=wav, headers=headers) as r:
                assert r.status == 200, await r.text()  # the same upload: the same item
            async with http_.get("/readyz") as r:
                assert r.status == 200
            async with http_.get("/v1/items", params={"from": "2026-11-01"}) as r:
                items: list[Any] = (await r.json())["items"]
                return items

    items = asyncio.run(retry())
    assert [i["external_id"] for i in items] == ["stalled-1"]
    assert index_rows(data_dir, "SELECT status, count(*) FROM items GROUP BY status") == [
        ("active", 1)]
    objects, tmp = store_files(data_dir)
    assert len(objects) == 1 and tmp == []


# -- archive worker ----------------------------------------------------------------------------

ITEMS = 3000
HELD_EVERY = 10


@dataclass
class Seeding:
    url: str
    env: dict[str, str]
    store: Path
    seeded: Seeded


@pytest.fixture
async def seeding(pg_template: PgTemplate, tmp_path: Path) -> AsyncIterator[Seeding]:
    name = await pg_template.clone()
    url = pg_url_for(name)
    store, keyring_path = tmp_path / "store", tmp_path / "keyring.json"
    keyring = await LocalKeyring(keyring_path).open()
    try:
        seeded = await seed(url, store, keyring, items=ITEMS, expired=ITEMS,
                            held_every=HELD_EVERY, now=datetime.now(UTC), tenant=TENANT)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
        env.update({"ARCHIVE_DATABASE_URL": url, "ARCHIVE_DATA_DIR": str(tmp_path / "var"),
                    "ARCHIVE_STORE_URL": f"file://{store}",
                    "ARCHIVE_KEYRING_PATH": str(keyring_path), "ARCHIVE_LOG_LEVEL": "INFO",
                    "ARCHIVE_PURGE_BATCH_SIZE": "25", "ARCHIVE_PURGE_INTERVAL": "3600"})
        yield Seeding(url, env, store, seeded)
    finally:
        await pg_template.drop(name)


async def _destroyed_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM destructions")
        return count
    finally:
        await conn.close()


async def _check_whole_or_untouched(s: Seeding) -> set[Any]:
    """Each item destroyed whole (purged, key and personal fields gone, one destruction, one
    audit event, object deleted) or untouched (active, key, fields and object there); nothing
    queued; the audit chain whole. Returns the ids destroyed."""
    conn = await asyncpg.connect(s.url)
    try:
        rows = {r["id"]: r for r in await conn.fetch(
            "SELECT id, status, wrapped_key IS NULL AS shredded, "
            "caller_number IS NULL AS stripped FROM items")}
        destructions = {r["item_id"]: r["n"] for r in await conn.fetch(
            "SELECT item_id, count(*) AS n FROM destructions GROUP BY item_id")}
        events = {r["item_id"]: r["n"] for r in await conn.fetch(
            "SELECT item_id, count(*) AS n FROM audit_events WHERE action = 'item.purge' "
            "GROUP BY item_id")}
        assert await conn.fetchval("SELECT count(*) FROM object_deletions") == 0
    finally:
        await conn.close()
    destroyed = set()
    for item_id in s.seeded.expired:
        row, on_disk = rows[item_id], (s.store / "objects" / s.seeded.keys[item_id]).exists()
        if row["status"] == "purged":
            assert row["shredded"] and row["stripped"] and not on_disk
            assert destructions.get(item_id) == 1 and events.get(item_id) == 1
            destroyed.add(item_id)
        else:
            assert row["status"] == "active", row
            assert not row["shredded"] and not row["stripped"] and on_disk
            assert item_id not in destructions and item_id not in events
    assert not destroyed & set(s.seeded.held)
    db = Database(s.url.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        async with db.reader() as session:
            [chain] = await audit.verify(session, TENANT)
        assert chain.ok and chain.events == len(destroyed)
    finally:
        await db.close()
    return destroyed


COMMANDS = ("worker", "worker-once", "serve")  # serve: its in-process worker


def start(env: dict[str, str], out: Path, command: str) -> "subprocess.Popen[bytes]":
    args = {"worker": ["worker"], "worker-once": ["worker", "--once"],
            "serve": ["serve", "--port", str(free_port())]}[command]
    with out.open("wb") as sink:
        return subprocess.Popen([ARCHIVE_EXE, *args], env=env, stdout=sink,
                                stderr=subprocess.STDOUT)


@pytest.mark.parametrize("command", COMMANDS)
async def test_sigterm_stops_a_worker_between_batches_mid_pass(
    seeding: Seeding, tmp_path: Path, command: str,
) -> None:
    out = tmp_path / "worker.log"
    proc = start(seeding.env, out, command)
    try:
        deadline = time.monotonic() + 120
        while await _destroyed_count(seeding.url) == 0:
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "the purge did not start"
            await asyncio.sleep(0.02)
        os.kill(proc.pid, signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0, out.read_text()
    finally:
        stop(proc)
    unheld = len(seeding.seeded.expired) - len(seeding.seeded.held)
    destroyed = await _check_whole_or_untouched(seeding)
    assert 0 < len(destroyed) < unheld, "the pass was not stopped in the middle"
    if command == "worker-once":  # its report
        assert f"purge: {len(destroyed)} item(s) destroyed" in out.read_text()
    if command == "serve":
        messages = [json.loads(line)["message"] for line in out.read_text().splitlines()
                    if line.startswith("{")]  # stdout too: "Archive listening on..."
        assert messages.index("lifecycle worker stopped") > next(
            n for n, m in enumerate(messages) if m.startswith("stopping: new connections"))

    # The next pass finishes the work.
    done = await asyncio.to_thread(
        subprocess.run, [ARCHIVE_EXE, "worker", "--once"], env=seeding.env,
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert len(await _check_whole_or_untouched(seeding)) == unheld
