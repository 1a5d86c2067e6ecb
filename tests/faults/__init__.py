"""Fault injection between the service and its dependencies (S3, PostgreSQL, the disk), and
process death: the archive either does a thing whole or answers a clean error and leaves
nothing half-written.

The helpers below run real ``archive`` processes (stopped by PID) and look at the index and the
store directly, bypassing the service, to check what a fault left behind.
"""

import asyncio
import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa

from archive.db import Database
from tests.servers import free_port, stop, wait_http

ARCHIVE = str(Path(sys.executable).with_name("archive"))
TENANT = "camden"
NUMBER = "+442079460123"
PROBLEM = "application/problem+json"


def clean_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment without ``AWS_*``/``ARCHIVE_*``, plus test credentials, the
    data folder and ``settings`` (``ARCHIVE_*`` names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCHIVE_"))}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "eu-west-2", "ARCHIVE_DATA_DIR": str(data_dir),
                "ARCHIVE_LOG_FORMAT": "text", **settings})
    return env


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    error: str = ""  # set when the connection broke before the whole answer arrived

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def is_problem(self) -> bool:
        return self.content_type.startswith(PROBLEM) and self.json()["status"] == self.status


def call(base: str, token: str, method: str, path: str, body: bytes | None = None, *,
         content_type: str = "application/json", timeout: float = 60.0) -> Answer:
    """One request; a connection cut mid-answer is reported in ``error``, never raised."""
    request = urllib.request.Request(base + path, data=body, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, ctype = answer.status, answer.headers.get("Content-Type", "")
            try:
                return Answer(status, ctype, answer.read())
            except (OSError, http.client.HTTPException) as exc:  # IncompleteRead
                return Answer(status, ctype, b"", error=type(exc).__name__)
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers.get("Content-Type", ""), exc.read())
    except OSError as exc:
        return Answer(0, "", b"", error=type(exc).__name__)


def put_call(base: str, token: str, external_id: str, audio: bytes,
             started_at: str = "2026-11-20T10:00:00+00:00", *, timeout: float = 60.0) -> Answer:
    """PUT a recording from NUMBER, as a PBX's post-call script does."""
    query = urlencode({"started_at": started_at, "caller_number": NUMBER})
    return call(base, token, "PUT", f"/v1/recordings/{external_id}?{query}", audio,
                content_type="audio/wav", timeout=timeout)


def push_expired_chat(base: str, token: str, n: int) -> None:
    """POST chat ``chat-{n}``, started 800 days ago: past the 730-day default, so the next
    purge pass destroys it."""
    old = (datetime.now(UTC) - timedelta(days=800)).isoformat()
    answer = call(base, token, "POST", "/v1/transcripts", json.dumps({
        "external_id": f"chat-{n}", "started_at": old,
        "customer": {"name": "Ann Example", "email": "ann@example.org"},
        "messages": [{"at": old, "from": "customer", "text": "My bin was missed"}],
    }).encode())
    assert answer.status == 201, answer


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Service:
    """``archive`` commands over one environment, and ``archive serve`` processes started and
    stopped by PID."""

    env: dict[str, str]
    log: Path
    procs: list["subprocess.Popen[bytes]"] = field(default_factory=list)

    def cli(self, *args: str, check: bool = True, timeout: float = 120.0,
            extra: dict[str, str] | None = None) -> "subprocess.CompletedProcess[str]":
        done = subprocess.run([ARCHIVE, *args], env={**self.env, **(extra or {})},
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"archive {' '.join(args)} failed ({done.returncode}): "
                                 f"{done.stderr[-2000:]}")
        return done

    def token(self, role: str, tenant: str = TENANT) -> str:
        return self.cli("tokens", "create", "--role", role, "--tenant", tenant).stdout.strip()

    def spawn(self, *args: str, **extra: str) -> "subprocess.Popen[bytes]":
        with self.log.open("ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen([ARCHIVE, *args], env={**self.env, **extra},
                                    stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(proc)
        return proc

    def serve(self, **extra: str) -> tuple["subprocess.Popen[bytes]", str]:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = self.spawn("serve", "--no-worker", "--port", str(port), **extra)
        wait_http(base + "/healthz", proc=proc, timeout=30)
        return proc, base

    def sweep(self) -> str:
        """One sweep with no grace: abandoned uploads and orphan objects go now."""
        done = self.cli("sweep", check=False, extra={"ARCHIVE_SWEEP_GRACE": "0"})
        # exit 1 reports items with a missing object: check_consistent says which
        assert done.returncode in (0, 1), done.stderr[-2000:]
        return done.stdout

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)
        self.procs.clear()


def query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the index at ``url`` (an async SQLAlchemy URL), read directly."""
    async def run() -> list[tuple[Any, ...]]:
        db = Database(url)
        try:
            async with db.engine.connect() as conn:
                result = await conn.execute(sa.text(sql), params)
                return [tuple(r) for r in result]
        finally:
            await db.close()

    return asyncio.run(run())


def async_url(url: str) -> str:
    for plain, driver in (("postgresql://", "postgresql+asyncpg://"),
                          ("sqlite:///", "sqlite+aiosqlite:///")):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url


def item_id_of_key(key: str) -> str:
    """The item id a store key belongs to: its last path segment, before any ``.kind``."""
    return key.rsplit("/", 1)[-1].split(".", 1)[0]


def check_consistent(url: str, keys: list[str], prefix: str = "") -> dict[str, str]:
    """The index and the store agree after a sweep: no pending item, every readable item's
    objects are stored, every stored object belongs to a readable item. Returns the readable
    items' sha256 by id."""
    rows = query(url, "SELECT id, status, object_key, sha256 FROM items")
    pending = [r for r in rows if r[1] == "pending"]
    assert not pending, f"pending items survived a sweep with no grace: {pending}"
    readable = {str(r[0]).replace("-", ""): r for r in rows if r[1] in ("active", "anonymised")}
    stored = {k.removeprefix(prefix) for k in keys}
    missing = [r for r in readable.values() if r[2] not in stored]
    assert not missing, f"active items without their object: {missing}"
    orphans = [k for k in stored if item_id_of_key(k).replace("-", "") not in readable]
    assert not orphans, f"objects without an item after a sweep with no grace: {orphans}"
    return {str(r[0]): str(r[3]) for r in readable.values()}


def local_keys(store: Path) -> list[str]:
    objects = store / "objects"
    return sorted(str(p.relative_to(objects)) for p in objects.rglob("*") if p.is_file())


def wait_for(check: Callable[[], bool], seconds: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)
