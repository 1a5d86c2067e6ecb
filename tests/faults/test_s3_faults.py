"""Faults between a real ``archive serve`` and S3 (moto over HTTP, behind the fault proxy).

Under each fault an upload either succeeds or answers a clean ``503`` problem, and leaves
nothing half-written: after a sweep with no grace, no active item lacks its object and no
object lacks its item. Once the fault clears, the same upload retried ends with exactly one
item, and reads that failed cleanly (``503``, or a body cut short, never a ``500`` or a whole
wrong body) succeed again.
"""

import asyncio
import functools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from storage.s3 import create_bucket
from tests.faults import (
    Service,
    call,
    check_consistent,
    clean_env,
    push_expired_chat,
    put_call,
    query,
    sha256,
    wait_for,
)
from tests.faults.proxy import FaultProxy
from tests.ingest import media
from tests.storage.helpers import SESSION, TEST_KEY, raw_s3_client

PREFIX = "archive/"


@functools.cache
def audio() -> bytes:
    return media.wav(30.0)  # 480 kB: one PUT, long enough to be cut in the middle


@dataclass
class S3Archive:
    service: Service
    proxy: FaultProxy
    base: str
    ingest: str
    complaints: str
    bucket: str
    endpoint: str  # moto itself, to look at the bucket behind the service's back
    index_url: str

    def keys(self) -> list[str]:
        async def run() -> list[str]:
            async with raw_s3_client(self.endpoint) as s3:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
                return [o["Key"] async for page in pages for o in page.get("Contents", [])]

        return asyncio.run(run())

    def items(self, external_id: str) -> list[tuple[Any, ...]]:
        return query(self.index_url, "SELECT id, status FROM items WHERE external_id = :e",
                     e=external_id)

    def readyz(self) -> tuple[int, dict[str, str]]:
        answer = call(self.base, "", "GET", "/readyz")
        return answer.status, answer.json()["checks"]


@pytest.fixture
def s3(moto_endpoint: str, tmp_path: Path) -> Iterator[S3Archive]:
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    asyncio.run(create_bucket(bucket, endpoint_url=moto_endpoint, retries=1, session=SESSION,
                              access_key=TEST_KEY, secret_key=TEST_KEY))
    target = urlsplit(moto_endpoint)
    proxy = FaultProxy(target.hostname or "127.0.0.1", target.port or 80).start()
    data_dir = tmp_path / "var"
    service = Service(clean_env(data_dir, ARCHIVE_STORE_URL=f"s3://{bucket}/archive",
                                ARCHIVE_S3_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}"),
                      tmp_path / "serve.log")
    try:
        ingest, complaints = service.token("ingest"), service.token("complaints")
        _, base = service.serve()
        yield S3Archive(service, proxy, base, ingest, complaints, bucket, moto_endpoint,
                        f"sqlite+aiosqlite:///{data_dir.resolve() / 'archive.db'}")
    finally:
        service.stop_all()
        proxy.stop()


FAULTS: dict[str, dict[str, Any]] = {
    "refused": {"mode": "refuse"},
    "cut mid-upload": {"mode": "drop", "drop_after": 100_000, "direction": "up"},
    "answer cut": {"mode": "drop", "drop_after": 60, "direction": "down"},
    "503 SlowDown": {"mode": "http_error", "status": 503},
    "500 InternalError": {"mode": "http_error", "status": 500},
    "delayed": {"mode": "delay", "delay": 0.05},
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_an_upload_under_a_store_fault_is_whole_or_a_clean_503(s3: S3Archive,
                                                                  fault: str) -> None:
    with s3.proxy.fault_of(**FAULTS[fault]):
        first = put_call(s3.base, s3.ingest, "call-1", audio())
    if fault == "delayed":
        assert first.status == 201, first  # slow is not broken
        assert [r[1] for r in s3.items("call-1")] == ["active"]
    else:
        assert first.status == 503 and first.is_problem, first
        assert s3.proxy.connections > 0  # the fault was met, not bypassed
        assert [r[1] for r in s3.items("call-1")] in ([], ["pending"])  # never active

    # Nothing half-written once the sweeper has run (the fault has cleared).
    s3.service.sweep()
    check_consistent(s3.index_url, s3.keys(), PREFIX)

    # The retry is the same upload: exactly one item, and it plays back what was sent.
    again = put_call(s3.base, s3.ingest, "call-1", audio())
    assert again.status == (200 if first.status == 201 else 201), again
    rows = s3.items("call-1")
    assert [r[1] for r in rows] == ["active"]
    assert uuid.UUID(again.json()["id"]) == uuid.UUID(str(rows[0][0]))
    played = call(s3.base, s3.complaints, "GET", f"/v1/items/{again.json()['id']}/media")
    assert played.status == 200 and sha256(played.body) == sha256(audio())
    check_consistent(s3.index_url, s3.keys(), PREFIX)


def test_readyz_names_the_store_while_it_is_refused_and_recovers(s3: S3Archive) -> None:
    assert s3.readyz()[0] == 200
    with s3.proxy.fault_of("refuse"):
        status, checks = s3.readyz()
        assert status == 503
        assert checks["store"] != "ok" and checks["index"] == "ok", checks
    status, checks = s3.readyz()
    assert status == 200, checks


READ_FAULTS: dict[str, dict[str, Any]] = {
    "refused": {"mode": "refuse"},
    "cut before the body": {"mode": "drop", "drop_after": 100, "direction": "down"},
    "cut mid-body": {"mode": "drop", "drop_after": 300_000, "direction": "down"},
    "503 SlowDown": {"mode": "http_error", "status": 503},
    "500 InternalError": {"mode": "http_error", "status": 500},
}


def test_reads_fail_cleanly_under_store_faults_and_recover(s3: S3Archive) -> None:
    stored = put_call(s3.base, s3.ingest, "call-r", audio())
    assert stored.status == 201, stored
    path = f"/v1/items/{stored.json()['id']}/media"
    for name, fault in READ_FAULTS.items():
        with s3.proxy.fault_of(**fault):
            got = call(s3.base, s3.complaints, "GET", path)
        if got.status == 200:  # the answer had begun: it must be cut short, never completed
            assert got.error and not got.body, (name, got.status, got.error, len(got.body))
        else:
            assert got.status == 503 and got.is_problem, (name, got)
        again = call(s3.base, s3.complaints, "GET", path)
        assert again.status == 200 and again.body == audio(), (name, again.status)


@pytest.mark.parametrize("fault", ["refused", "503 SlowDown"])
def test_purge_passes_under_a_store_fault_resume_without_losing_or_repeating(
        s3: S3Archive, fault: str) -> None:
    # The worker reaches S3 through a proxy of its own, which fails once it has started.
    worker_proxy = FaultProxy("127.0.0.1", s3.proxy.target[1]).start()
    try:
        s3.service.spawn("worker", ARCHIVE_PURGE_INTERVAL="1",
                         ARCHIVE_S3_ENDPOINT_URL=f"http://127.0.0.1:{worker_proxy.port}")
        wait_for(lambda: worker_proxy.connections > 0, 30, "the worker to open the store")
        time.sleep(1.0)
        worker_proxy.set(**FAULTS[fault])

        for n in range(12):
            push_expired_chat(s3.base, s3.ingest, n)
        assert len(s3.keys()) == 12

        def statuses() -> list[Any]:
            return sorted(r[0] for r in query(s3.index_url, "SELECT status FROM items"))

        # Keys are destroyed (the index needs no store); the objects wait in the outbox.
        wait_for(lambda: statuses() == ["purged"] * 12, 30, "the purge under the fault")
        assert len(s3.keys()) == 12
        worker_proxy.set("pass")
        wait_for(lambda: s3.keys() == [], 30, "the queued deletions once the store is back")
    finally:
        s3.service.stop_all()
        worker_proxy.stop()

    rows = query(s3.index_url, "SELECT id, status, wrapped_key FROM items")
    assert sorted((r[1], r[2]) for r in rows) == [("purged", None)] * 12
    destroyed = query(s3.index_url, "SELECT item_id, count(*) FROM destructions GROUP BY item_id")
    assert sorted(str(uuid.UUID(str(r[0]))) for r in destroyed) == sorted(
        str(uuid.UUID(str(r[0]))) for r in rows)
    assert {r[1] for r in destroyed} == {1}  # exactly once each
