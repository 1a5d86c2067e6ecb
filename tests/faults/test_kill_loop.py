"""Process death: ``archive serve`` killed (SIGKILL) during uploads, and ``archive worker``
killed during purges, a few rounds each. After a restart, a sweep with no grace and one more
pass, the index and the store agree: every active item decrypts to what was sent and matches its
SHA-256, every acknowledged upload is there, no object lacks an item, and every expired item is
destroyed exactly once."""

import asyncio
import functools
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from storage.s3 import create_bucket
from tests.databases import PgTemplate, pg_url_for
from tests.faults import (
    Service,
    async_url,
    call,
    check_consistent,
    clean_env,
    local_keys,
    push_expired_chat,
    put_call,
    query,
    sha256,
)
from tests.ingest import media
from tests.storage.helpers import SESSION, TEST_KEY, raw_s3_client

ROUNDS = 5
UPLOADERS = 3


@functools.cache
def recordings() -> list[bytes]:
    return [media.wav(s) for s in (1.0, 2.5, 4.0, 7.0)]


def _kill(proc: "subprocess.Popen[bytes]") -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.fixture
def pg_database(pg_template: PgTemplate) -> Iterator[str]:
    name = asyncio.run(pg_template.clone())
    yield pg_url_for(name)
    asyncio.run(PgTemplate.drop(name))


def _s3_keys(endpoint: str, bucket: str) -> list[str]:
    async def run() -> list[str]:
        async with raw_s3_client(endpoint) as s3:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return [o["Key"] async for page in pages for o in page.get("Contents", [])]

    return asyncio.run(run())


@pytest.mark.parametrize("shape", ["sqlite+local", "postgresql+s3"])
def test_serve_killed_during_uploads_loses_and_corrupts_nothing(
        shape: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    data_dir = tmp_path / "var"
    settings: dict[str, str] = {}
    if shape == "postgresql+s3":
        settings["ARCHIVE_DATABASE_URL"] = request.getfixturevalue("pg_database")
        endpoint: str = request.getfixturevalue("moto_endpoint")
        bucket = f"kill-{uuid.uuid4().hex[:12]}"
        asyncio.run(create_bucket(bucket, endpoint_url=endpoint, retries=1, session=SESSION,
                                  access_key=TEST_KEY, secret_key=TEST_KEY))
        settings.update(ARCHIVE_STORE_URL=f"s3://{bucket}/archive",
                        ARCHIVE_S3_ENDPOINT_URL=endpoint)
        index_url = async_url(settings["ARCHIVE_DATABASE_URL"])

        def keys() -> list[str]:
            return [k.removeprefix("archive/") for k in _s3_keys(endpoint, bucket)]
    else:
        index_url = f"sqlite+aiosqlite:///{data_dir.resolve() / 'archive.db'}"

        def keys() -> list[str]:
            return local_keys(data_dir / "store")

    service = Service(clean_env(data_dir, **settings), tmp_path / "serve.log")
    ingest, complaints = service.token("ingest"), service.token("complaints")
    sent: dict[str, bytes] = {}  # external id -> what was sent
    acknowledged: dict[str, str] = {}  # external id -> item id, for every 201
    rng = random.Random(9)
    counter = iter(range(1_000_000))
    lock = threading.Lock()
    try:
        for _ in range(ROUNDS):
            proc, base = service.serve()
            stop = threading.Event()

            def upload(base: str = base, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    with lock:
                        n = next(counter)
                    external_id, body = f"call-{n}", recordings()[n % len(recordings())]
                    sent[external_id] = body
                    answer = put_call(base, ingest, external_id, body, timeout=15)
                    if answer.status == 201:
                        acknowledged[external_id] = answer.json()["id"]
                    elif answer.status == 0:
                        return  # the server is gone
                    else:
                        raise AssertionError(f"upload {external_id}: {answer}")

            with ThreadPoolExecutor(UPLOADERS) as pool:
                futures = [pool.submit(upload) for _ in range(UPLOADERS)]
                time.sleep(rng.uniform(0.5, 1.2))
                _kill(proc)  # mid-upload: some requests are in flight now
                stop.set()
                for future in futures:
                    future.result(30)
        assert acknowledged, "no upload was acknowledged between the kills"
        assert len(sent) > len(acknowledged), "no upload was in flight at a kill"

        _, base = service.serve()
        report = service.sweep()
        hashes = check_consistent(index_url, keys())
        by_external = {str(r[0]): (str(r[1]), str(r[2])) for r in query(
            index_url, "SELECT external_id, id, status FROM items")}
        for external_id, item_id in acknowledged.items():  # nothing acknowledged was lost
            assert by_external[external_id][1] == "active", (external_id, report)
            assert uuid.UUID(by_external[external_id][0]) == uuid.UUID(item_id)
        for item_id, digest in hashes.items():  # every active item decrypts and matches
            external_id = next(e for e, (i, _) in by_external.items() if i == item_id)
            assert digest == sha256(sent[external_id])
            played = call(base, complaints, "GET", f"/v1/items/{uuid.UUID(item_id)}/media")
            assert played.status == 200 and played.body == sent[external_id], external_id
    finally:
        service.stop_all()


CHATS = 300


def test_worker_killed_during_purges_destroys_every_expired_item_exactly_once(
        pg_database: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    service = Service(clean_env(data_dir, ARCHIVE_DATABASE_URL=pg_database,
                                ARCHIVE_PURGE_INTERVAL="1", ARCHIVE_PURGE_BATCH_SIZE="10"),
                      tmp_path / "serve.log")
    index_url = async_url(pg_database)
    ingest = service.token("ingest")
    try:
        _, base = service.serve()
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda n: push_expired_chat(base, ingest, n), range(CHATS)))
        service.stop_all()
        assert len(local_keys(data_dir / "store")) == CHATS

        def purged() -> int:
            return int(query(index_url, "SELECT count(*) FROM items WHERE status = 'purged'"
                             )[0][0])

        # Each worker is killed as soon as it is seen to have destroyed something, mid-pass.
        rng = random.Random(9)
        progress = [0]
        for _ in range(ROUNDS):
            worker = service.spawn("worker")
            deadline = time.monotonic() + 30
            while purged() == progress[-1] and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.05))
            _kill(worker)
            progress.append(purged())
        assert any(0 < n < CHATS for n in progress), f"no kill landed mid-purge: {progress}"
        # One more pass finishes the work; the sweep drains deletions a kill left queued.
        service.cli("purge")
        service.sweep()

        rows = query(index_url, "SELECT id, status, wrapped_key, customer_email FROM items")
        assert len(rows) == CHATS
        assert {r[1] for r in rows} == {"purged"}, progress
        assert all(r[2] is None and r[3] is None for r in rows)  # nothing half-destroyed
        destroyed = query(index_url, "SELECT item_id, count(*) FROM destructions "
                                     "GROUP BY item_id")
        assert sorted(str(r[0]) for r in destroyed) == sorted(str(r[0]) for r in rows)
        assert {r[1] for r in destroyed} == {1}  # exactly once each
        assert local_keys(data_dir / "store") == []
        check_consistent(index_url, [])
        print(f"purged after each kill: {progress}")  # noqa: T201  (shown with -s)
    finally:
        service.stop_all()
