"""Faults between a real ``archive serve`` and PostgreSQL (the real server, behind the fault
proxy; the store is a local folder).

An upload while the index refuses connections is a clean ``503`` that leaves nothing; one whose
index goes away in the middle is a ``503`` that leaves only what the sweeper removes; ``/readyz``
names the index; everything works again once the fault clears.
"""

import asyncio
import functools
import http.client
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.databases import PgTemplate, pg_url_for
from tests.faults import (
    NUMBER,
    Answer,
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
    wait_for,
)
from tests.faults.proxy import FaultProxy
from tests.ingest import media


@functools.cache
def audio() -> bytes:
    return media.wav(20.0)


@dataclass
class PgArchive:
    service: Service
    proxy: FaultProxy
    base: str
    ingest: str
    complaints: str
    index_url: str  # direct, not through the proxy
    store: Path

    def items(self, external_id: str) -> list[tuple[Any, ...]]:
        return query(self.index_url, "SELECT id, status FROM items WHERE external_id = :e",
                     e=external_id)

    def readyz(self) -> tuple[int, dict[str, str]]:
        answer = call(self.base, "", "GET", "/readyz")
        return answer.status, answer.json()["checks"]

    def consistent(self) -> dict[str, str]:
        return check_consistent(self.index_url, local_keys(self.store))


@pytest.fixture
def pg(pg_template: PgTemplate, tmp_path: Path) -> Iterator[PgArchive]:
    name = asyncio.run(pg_template.clone())
    direct = pg_url_for(name)
    url = urlsplit(direct)
    proxy = FaultProxy(url.hostname or "127.0.0.1", url.port or 5432).start()
    proxied = direct.replace(f"{url.hostname}:{url.port or 5432}", f"127.0.0.1:{proxy.port}")
    if url.port is None:
        proxied = direct.replace(f"@{url.hostname}/", f"@127.0.0.1:{proxy.port}/")
    assert str(proxy.port) in proxied
    data_dir = tmp_path / "var"
    service = Service(clean_env(data_dir, ARCHIVE_DATABASE_URL=proxied), tmp_path / "serve.log")
    try:
        ingest, complaints = service.token("ingest"), service.token("complaints")
        _, base = service.serve()
        yield PgArchive(service, proxy, base, ingest, complaints, async_url(direct),
                        data_dir / "store")
    finally:
        service.stop_all()
        proxy.stop()
        asyncio.run(PgTemplate.drop(name))


def test_an_upload_while_the_index_refuses_is_a_clean_503_and_leaves_nothing(
        pg: PgArchive) -> None:
    assert pg.readyz()[0] == 200
    with pg.proxy.fault_of("refuse"):
        answer = put_call(pg.base, pg.ingest, "call-1", audio())
        assert answer.status == 503 and answer.is_problem, answer
        status, checks = pg.readyz()
        assert status == 503 and checks["index"] != "ok" and checks["store"] == "ok", checks
    assert pg.items("call-1") == []
    assert local_keys(pg.store) == []
    assert not list((pg.store / "tmp").iterdir())

    assert pg.readyz()[0] == 200
    again = put_call(pg.base, pg.ingest, "call-1", audio())
    assert again.status == 201, again
    assert [r[1] for r in pg.items("call-1")] == ["active"]
    played = call(pg.base, pg.complaints, "GET", f"/v1/items/{again.json()['id']}/media")
    assert played.status == 200 and played.body == audio()


def test_an_upload_delayed_by_a_slow_index_succeeds(pg: PgArchive) -> None:
    with pg.proxy.fault_of("delay", delay=0.02):
        answer = put_call(pg.base, pg.ingest, "call-1", audio())
    assert answer.status == 201, answer
    assert [r[1] for r in pg.items("call-1")] == ["active"]


def _slow_put(base: str, token: str, external_id: str, body: bytes,
              go: threading.Event) -> Answer:
    """PUT ``body`` chunked: the first quarter, then (once ``go`` is set) the rest."""
    quarter = len(body) // 4

    def chunks() -> Iterator[bytes]:
        yield body[:quarter]
        go.wait(30)
        for i in range(quarter, len(body), 16384):
            yield body[i:i + 16384]

    target = urlsplit(base)
    conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
    query_ = urlencode({"started_at": "2026-11-20T10:00:00+00:00", "caller_number": NUMBER})
    try:
        conn.request("PUT", f"/v1/recordings/{external_id}?{query_}", body=chunks(),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "audio/wav"},
                     encode_chunked=True)
        reply = conn.getresponse()
        return Answer(reply.status, reply.headers.get("Content-Type", ""), reply.read())
    except (OSError, http.client.HTTPException) as exc:
        return Answer(0, "", b"", error=type(exc).__name__)
    finally:
        conn.close()


def test_an_upload_whose_index_goes_away_midway_leaves_only_what_the_sweeper_removes(
        pg: PgArchive) -> None:
    go = threading.Event()
    result: list[Answer] = []
    sender = threading.Thread(
        target=lambda: result.append(_slow_put(pg.base, pg.ingest, "call-1", audio(), go)))
    sender.start()
    try:
        # The pending row is written once the upload has begun; then the index goes away.
        wait_for(lambda: [r[1] for r in pg.items("call-1")] == ["pending"], 20,
                 "the pending row of the upload in progress")
        pg.proxy.set("refuse")
    finally:
        go.set()
        sender.join(60)
    answer = result[0]
    assert answer.status == 503 and answer.is_problem, answer
    assert [r[1] for r in pg.items("call-1")] in ([], ["pending"])  # never active
    pg.proxy.set("pass")

    pg.service.sweep()
    pg.consistent()
    again = put_call(pg.base, pg.ingest, "call-1", audio())
    assert again.status == 201, again
    assert [r[1] for r in pg.items("call-1")] == ["active"]
    assert [*pg.consistent().values()] == [sha256(audio())]
    played = call(pg.base, pg.complaints, "GET", f"/v1/items/{again.json()['id']}/media")
    assert played.status == 200 and played.body == audio()


def test_purge_passes_while_the_index_is_away_resume_when_it_returns(pg: PgArchive) -> None:
    # The worker reaches PostgreSQL through a proxy of its own, refused once it has started.
    worker_proxy = FaultProxy("127.0.0.1", pg.proxy.target[1]).start()
    through = pg.service.env["ARCHIVE_DATABASE_URL"].replace(
        f"127.0.0.1:{pg.proxy.port}", f"127.0.0.1:{worker_proxy.port}")
    try:
        worker = pg.service.spawn("worker", ARCHIVE_PURGE_INTERVAL="1",
                                  ARCHIVE_DATABASE_URL=through)
        wait_for(lambda: worker_proxy.connections > 0, 30, "the worker to open the index")
        time.sleep(1.0)
        worker_proxy.set("refuse")

        for n in range(12):
            push_expired_chat(pg.base, pg.ingest, n)
        time.sleep(3.0)  # a few passes meet the refused index
        assert worker.poll() is None, "the worker died while the index was away"
        assert {r[0] for r in query(pg.index_url, "SELECT status FROM items")} == {"active"}

        worker_proxy.set("pass")
        wait_for(lambda: {r[0] for r in query(pg.index_url, "SELECT status FROM items")}
                 == {"purged"}, 30, "the purge once the index is back")
        wait_for(lambda: local_keys(pg.store) == [], 30, "the objects' deletion")
    finally:
        pg.service.stop_all()
        worker_proxy.stop()
    destroyed = query(pg.index_url, "SELECT item_id, count(*) FROM destructions GROUP BY item_id")
    assert len(destroyed) == 12 and {r[1] for r in destroyed} == {1}  # exactly once each
