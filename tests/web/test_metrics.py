"""GET /metrics: the counters move by exactly what happened, the gauges match the index, the
token and port rules hold, and no label carries personal data or an id."""

import asyncio
import json
import shutil
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient
from sqlmodel import select

from archive.clock import ManualClock
from archive.models import Item, Role
from archive.settings import Settings
from lifecycle.preview import lifecycle_stats
from lifecycle.purge import purge_pass
from tests.conftest import Client
from tests.helpers import bearer, make_token, set_media_policy
from tests.ingest import media
from tests.servers import archive_serve, free_port, stop
from web.app import create_app
from web.keys import ARCHIVE, DATABASE
from web.metrics import METRICS, UNMATCHED

TOKEN = "metrics-secret-0123456789"
NUMBER = "020 7946 0000"
META = {"external_id": "call-1", "started_at": "2026-11-23T09:00:00Z",
        "ended_at": "2026-11-23T09:00:03Z", "caller_number": NUMBER, "agent_id": "agent-7"}
CHAT = {"external_id": "chat-1", "started_at": "2026-11-23T09:00:00Z",
        "customer": {"name": "Ann Example", "email": "ann@example.org", "postcode": "SW1A 1AA"},
        "messages": [{"at": "2026-11-23T09:00:05Z", "from": "customer", "name": "Ann",
                      "text": "My council tax bill is wrong"}]}
PERSONAL = ("7946", "Ann", "example.org", "SW1A", "council tax", "call-1", "chat-1", "agent-7")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of the exposition text, by name and labels (the official parser)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series is not there (yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def form(metadata: dict[str, Any] | str, audio: bytes) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("metadata", metadata if isinstance(metadata, str) else json.dumps(metadata),
                   content_type="application/json")
    data.add_field("audio", audio, filename="call.wav", content_type="application/octet-stream")
    return data


def without_values(text: str) -> str:
    """The exposition text without its sample values, whose digits (timestamps, sums) could
    contain any short number by chance: what is left is names, labels and help."""
    return "\n".join(line if line.startswith("#") else line.rsplit(" ", 1)[0]
                     for line in text.splitlines())


async def scrape(client: Client) -> tuple[str, Samples]:
    r = await client.get("/metrics", headers=bearer(TOKEN))
    text = await r.text()
    assert r.status == 200, text
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    return text, parse(text)


async def token(client: Client, clock: ManualClock, role: Role, tenant: str = "camden") -> dict[
        str, str]:
    return bearer(await make_token(client.app[DATABASE], tenant, role, clock.now()))


@pytest.fixture
async def client(settings: Settings, clock: ManualClock, aiohttp_client: AiohttpClient) -> Client:
    """The app of the suite's settings (SQLite and PostgreSQL) with a metrics token."""
    return await aiohttp_client(create_app(replace(settings, metrics_token=TOKEN), clock=clock))


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", segment_size=4096, metrics_token=TOKEN)


@pytest.fixture
async def lite(sqlite_settings: Settings, clock: ManualClock,
               aiohttp_client: AiohttpClient) -> Client:
    """The same on SQLite only, for what does not depend on the index."""
    return await aiohttp_client(create_app(sqlite_settings, clock=clock))


async def test_counters_move_by_exactly_what_happened(client: Client, clock: ManualClock) -> None:
    ingest = await token(client, clock, Role.INGEST)
    complaints = await token(client, clock, Role.COMPLAINTS)
    await set_media_policy(client.app[DATABASE], "opus")  # so that ffmpeg transcodes it
    audio = media.wav(2.0)
    _, before = await scrape(client)

    r = await client.post("/v1/recordings", data=form(META, audio), headers=ingest)
    call = await r.json()
    assert r.status == 201, call
    r = await client.post("/v1/recordings", data=form(META, audio), headers=ingest)
    assert r.status == 200  # the same upload again: a retry
    r = await client.put("/v1/recordings/call-2?started_at=2026-11-23T09:05:00Z",
                         data=b"this is not audio at all " * 400, headers=ingest)
    assert r.status == 415  # refused by the pipeline: rejected
    r = await client.post("/v1/recordings", data=form({"external_id": "call-3"}, audio),
                          headers=ingest)
    assert r.status == 400  # refused before the pipeline (no started_at): a request only
    r = await client.post("/v1/transcripts", json=CHAT, headers=ingest)
    chat = await r.json()
    assert r.status == 201, chat
    r = await client.get("/v1/items", params={"caller_number": NUMBER}, headers=complaints)
    assert r.status == 200 and [i["id"] for i in (await r.json())["items"]] == [call["id"]]
    missing = uuid.uuid4()
    assert (await client.get(f"/v1/items/{missing}", headers=complaints)).status == 404
    assert (await client.get(f"/v1/nowhere/{NUMBER}")).status == 404
    assert (await client.delete("/healthz")).status == 405

    text, after = await scrape(client)
    requests = "archive_http_requests_total"
    assert delta(before, after, requests, route="post_recording", method="POST",
                 status="201") == 1
    assert delta(before, after, requests, route="post_recording", method="POST",
                 status="200") == 1
    assert delta(before, after, requests, route="post_recording", method="POST",
                 status="400") == 1
    assert delta(before, after, requests, route="put_recording", method="PUT",
                 status="415") == 1
    assert delta(before, after, requests, route="post_transcript", method="POST",
                 status="201") == 1
    assert delta(before, after, requests, route="list_items", method="GET", status="200") == 1
    assert delta(before, after, requests, route="get_item", method="GET", status="404") == 1
    assert delta(before, after, requests, route=UNMATCHED, method="GET", status="404") == 1
    assert delta(before, after, requests, route=UNMATCHED, method="DELETE", status="405") == 1
    assert delta(before, after, requests, route="metrics", method="GET", status="200") == 1
    moved = {k: v - value(before, requests, **dict(k))
             for k, v in series(after, requests).items()}
    assert sum(moved.values()) == 10  # the ten above (with the first scrape): nothing else
    assert delta(before, after, "archive_http_request_seconds_count",
                 route="post_recording") == 3
    assert delta(before, after, "archive_http_request_seconds_count", route=UNMATCHED) == 2

    items = "archive_ingest_items_total"
    assert delta(before, after, items, channel="call", outcome="created") == 1
    assert delta(before, after, items, channel="call", outcome="retry") == 1
    assert delta(before, after, items, channel="call", outcome="rejected") == 1
    assert delta(before, after, items, channel="chat", outcome="created") == 1
    assert delta(before, after, items, channel="chat", outcome="retry") == 0
    assert delta(before, after, items, channel="chat", outcome="rejected") == 0
    async with client.app[DATABASE].reader() as session:
        stored_chat = await session.get(Item, uuid.UUID(chat["id"]))
    assert stored_chat is not None and stored_chat.source_size
    assert delta(before, after, "archive_ingest_bytes_total", channel="call") == len(audio)
    assert delta(before, after, "archive_ingest_bytes_total",
                 channel="chat") == stored_chat.source_size
    assert delta(before, after, "archive_ingest_seconds_count", channel="call") == 1
    assert delta(before, after, "archive_ingest_seconds_count", channel="chat") == 1
    assert delta(before, after, "archive_ingest_seconds_sum", channel="call") > 0
    assert delta(before, after, "archive_transcode_seconds_count") == 1
    assert 0 < delta(before, after, "archive_transcode_seconds_sum") < 60
    assert sum(series(after, "archive_store_errors_total").values()) == 0

    # Route names only: no path values, ids or personal data in any label.
    routes = {r.name for r in client.app.router.routes()} | {UNMATCHED}
    labels = {v for (_, ls) in after for k, v in ls if k == "route"}
    assert labels <= routes
    for secret in (*PERSONAL, call["id"], chat["id"], str(missing), "nowhere"):
        assert secret not in without_values(text), secret


async def test_gauges_match_the_index(client: Client, clock: ManualClock) -> None:
    admin = await token(client, clock, Role.ADMIN)
    await token(client, clock, Role.ADMIN, tenant="hackney")  # a tenant with nothing
    client.app[METRICS].index.ttl = 0  # every scrape reads the index
    _, before = await scrape(client)

    async def push(external_id: str, started: str) -> str:
        meta = {"external_id": external_id, "started_at": started}
        r = await client.put(f"/v1/recordings/{external_id}", params=meta,
                             data=media.wav(0.5), headers=admin)
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])

    # Calls are kept 365 days from their end: two of three are past it, one is held.
    await push("old-1", "2025-01-01T09:00:00Z")
    held = await push("old-2", "2025-01-02T09:00:00Z")
    await push("new-1", "2026-11-20T09:00:00Z")
    r = await client.post("/v1/holds", json={"case_ref": "CMP-1", "reason": "A complaint",
                                             "item_ids": [held]}, headers=admin)
    assert r.status == 201, await r.text()
    _, middle = await scrape(client)
    assert value(middle, "archive_items", tenant="camden", status="active") == 3
    assert value(middle, "archive_overdue_items", tenant="camden") == 1
    assert value(middle, "archive_active_holds", tenant="camden") == 1
    stats = {s.tenant: s for s in await lifecycle_stats(client.app[DATABASE], now=clock.now())}
    assert stats["camden"].overdue == 1
    assert value(middle, "archive_oldest_overdue_seconds", tenant="camden") == pytest.approx(
        stats["camden"].oldest_overdue_age)

    report = await purge_pass(client.app[ARCHIVE], batch_size=10)
    assert report.destroyed == 1
    late = await push("old-3", "2025-02-01T09:00:00Z")  # overdue from the moment it arrives
    _, after = await scrape(client)
    assert delta(before, after, "archive_purged_items_total") == 1

    async with client.app[DATABASE].reader() as session:
        late_item = await session.get(Item, uuid.UUID(late))
        counted = (await session.exec(
            select(Item.tenant, Item.status, sa.func.count())
            .group_by(Item.tenant, Item.status))).all()
    assert late_item is not None and late_item.retain_until is not None
    expected = {("camden", "active"): 3, ("camden", "purged"): 1}
    assert {(t, s): n for t, s, n in counted} == expected
    for tenant in ("camden", "hackney"):
        for status in ("pending", "active", "purged", "erased", "anonymised"):
            assert value(after, "archive_items", tenant=tenant,
                         status=status) == expected.get((tenant, status), 0), (tenant, status)
    assert value(after, "archive_overdue_items", tenant="camden") == 1
    assert value(after, "archive_oldest_overdue_seconds", tenant="camden") == pytest.approx(
        (clock.now() - late_item.retain_until).total_seconds())
    assert value(after, "archive_active_holds", tenant="camden") == 1
    for name in ("archive_overdue_items", "archive_oldest_overdue_seconds",
                 "archive_active_holds"):
        assert series(after, name)[(("tenant", "hackney"),)] == 0

    # The figures are kept gauge_ttl seconds: a scrape within it does not query again.
    client.app[METRICS].index.ttl = 3600
    clock.advance(timedelta(days=1))
    _, first = await scrape(client)
    await push("new-2", "2026-11-21T09:00:00Z")
    _, cached = await scrape(client)
    assert value(cached, "archive_items", tenant="camden", status="active") == 3
    assert value(first, "archive_oldest_overdue_seconds", tenant="camden") == value(
        cached, "archive_oldest_overdue_seconds", tenant="camden")
    client.app[METRICS].index.ttl = 0
    _, fresh = await scrape(client)
    assert value(fresh, "archive_items", tenant="camden", status="active") == 4


async def test_an_index_failure_leaves_the_gauges_out_and_the_next_scrape_recovers(
    lite: Client, clock: ManualClock,
) -> None:
    await token(lite, clock, Role.ADMIN)
    lite.app[METRICS].index.ttl = 0
    await rename_table(lite, "holds", "holds_away")  # a real error of the index
    _, broken = await scrape(lite)
    for name in ("archive_items", "archive_overdue_items", "archive_oldest_overdue_seconds",
                 "archive_active_holds"):
        assert series(broken, name) == {}, name
    # The counters are still served.
    assert ("archive_purged_items_total", ()) in broken
    assert ("archive_ingest_items_total", (("channel", "call"), ("outcome", "created"))) in broken
    assert value(broken, "archive_http_requests_total", route="metrics", method="GET",
                 status="200") == 0
    await rename_table(lite, "holds_away", "holds")
    _, healed = await scrape(lite)
    assert value(healed, "archive_items", tenant="camden", status="active") == 0
    assert (("archive_items", (("status", "active"), ("tenant", "camden"))) in healed)


async def rename_table(client: Client, name: str, to: str) -> None:
    async with client.app[DATABASE].session() as session:
        await (await session.connection()).execute(sa.text(f"ALTER TABLE {name} RENAME TO {to}"))
        await session.commit()


async def test_store_errors_are_counted_by_operation(
    lite: Client, clock: ManualClock, sqlite_settings: Settings,
) -> None:
    admin = await token(lite, clock, Role.ADMIN)
    r = await lite.put("/v1/recordings/c-1", params={"started_at": "2026-11-23T09:00:00Z"},
                       data=media.wav(0.5), headers=admin)
    item = await r.json()
    assert r.status == 201, item
    _, before = await scrape(lite)
    async with lite.app[DATABASE].reader() as session:
        row = await session.get(Item, uuid.UUID(item["id"]))
    assert row is not None and row.object_key is not None
    (sqlite_settings.data_dir / "store" / "objects" / row.object_key).unlink()
    r = await lite.get(f"/v1/items/{item['id']}/media", headers=admin)
    assert r.status >= 500
    _, middle = await scrape(lite)
    errors = "archive_store_errors_total"
    assert delta(before, middle, errors, operation="get") == 1
    assert sum(series(middle, errors).values()) - sum(series(before, errors).values()) == 1

    shutil.rmtree(sqlite_settings.data_dir / "store")  # the store is gone
    r = await lite.put("/v1/recordings/c-2", params={"started_at": "2026-11-23T09:00:00Z"},
                       data=media.wav(0.5), headers=admin)
    assert r.status >= 500, await r.text()
    _, after = await scrape(lite)
    assert delta(middle, after, errors, operation="put") == 1
    assert delta(middle, after, "archive_ingest_items_total", channel="call",
                 outcome="rejected") == 1
    assert delta(middle, after, "archive_ingest_items_total", channel="call",
                 outcome="created") == 0
    assert delta(middle, after, "archive_http_requests_total", route="put_recording",
                 method="PUT", status=str(r.status)) == 1


async def test_an_upload_cut_off_by_its_client_is_counted_as_such(
    lite: Client, clock: ManualClock,
) -> None:
    admin = await token(lite, clock, Role.ADMIN)
    _, before = await scrape(lite)
    audio = media.wav(5.0)
    _, writer = await asyncio.open_connection(lite.host, lite.port)
    writer.write((f"PUT /v1/recordings/cut?started_at=2026-11-23T09:00:00Z HTTP/1.1\r\n"
                  f"Host: archive\r\nAuthorization: {admin['Authorization']}\r\n"
                  f"Content-Length: {len(audio)}\r\n\r\n").encode() + audio[:20_000])
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()  # the producer's connection drops mid-upload
    await writer.wait_closed()
    for _ in range(100):
        _, after = await scrape(lite)
        if delta(before, after, "archive_ingest_items_total", channel="call",
                 outcome="rejected"):
            break
        await asyncio.sleep(0.05)
    assert delta(before, after, "archive_ingest_items_total", channel="call",
                 outcome="rejected") == 1
    assert delta(before, after, "archive_http_requests_total", route="put_recording",
                 method="PUT", status="499") == 1
    assert delta(before, after, "archive_ingest_items_total", channel="call",
                 outcome="created") == 0


async def test_the_token_rules(lite: Client, clock: ManualClock, sqlite_settings: Settings,
                               aiohttp_client: AiohttpClient) -> None:
    r = await lite.get("/metrics")
    assert r.status == 401 and "Bearer" in r.headers["WWW-Authenticate"]
    assert r.content_type == "application/problem+json"
    assert "archive_" not in await r.text()
    for header in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN,
                   "Bearer ", "Bearer é"):
        assert (await lite.get("/metrics", headers={"Authorization": header})).status == 401
    api = await token(lite, clock, Role.ADMIN)  # an API token is not the metrics token
    assert (await lite.get("/metrics", headers=api)).status == 401
    assert (await lite.get("/metrics", headers={"Authorization": f"bearer  {TOKEN} "})).status \
        == 200
    assert (await lite.post("/metrics", headers=bearer(TOKEN))).status == 405

    without = await aiohttp_client(create_app(replace(sqlite_settings, metrics_token="",
                                                      data_dir=sqlite_settings.data_dir / "b")))
    for headers in ({}, bearer(""), bearer(TOKEN)):
        r = await without.get("/metrics", headers=headers)
        assert r.status == 404 and r.content_type == "application/problem+json"
    # Requests are still counted there, ready for a metrics port.
    samples = parse((await without.app[METRICS].render(without.app[DATABASE], clock.now()))
                    .decode())
    assert value(samples, "archive_http_requests_total", route=UNMATCHED, method="GET",
                 status="404") == 3


def _get(url: str, headers: dict[str, str] | None = None,
         method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A real ``archive serve`` with a metrics token and a metrics port: its base URL, its
    metrics port's URL and an ingest token."""
    port = free_port()
    proc, base, secret = archive_serve(
        tmp_path / "var", "camden", extra_env={"ARCHIVE_METRICS_TOKEN": TOKEN,
                                               "ARCHIVE_METRICS_PORT": str(port)})
    try:
        yield base, f"http://127.0.0.1:{port}", secret
    finally:
        stop(proc)


def test_a_real_server_serves_metrics_on_its_port_and_nothing_else(
    served: tuple[str, str, str],
) -> None:
    base, metrics, secret = served
    request = urllib.request.Request(
        base + "/v1/recordings/call-9?started_at=2026-11-23T09:00:00Z",
        data=media.wav(1.0), method="PUT", headers=bearer(secret))
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.status == 201

    # A fresh process: every count is what this test did.
    status, kind, text = _get(metrics + "/metrics")
    assert status == 200 and kind.startswith("text/plain; version="), text
    after = parse(text)
    assert value(after, "archive_ingest_items_total", channel="call", outcome="created") == 1
    assert value(after, "archive_ingest_bytes_total", channel="call") == len(media.wav(1.0))
    assert value(after, "archive_http_requests_total", route="put_recording", method="PUT",
                 status="201") == 1
    assert value(after, "archive_items", tenant="camden", status="active") == 1
    assert "7946" not in without_values(text) and "call-9" not in without_values(text)
    # A producer whose connection drops mid-upload (the real server reads on, then fails).
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), 10) as raw:
        audio = media.wav(5.0)
        raw.sendall((f"PUT /v1/recordings/cut?started_at=2026-11-23T09:00:00Z HTTP/1.1\r\n"
                     f"Host: archive\r\nAuthorization: Bearer {secret}\r\n"
                     f"Content-Length: {len(audio)}\r\n\r\n").encode() + audio[:20_000])
        time.sleep(0.3)
    for _ in range(100):
        cut = parse(_get(metrics + "/metrics")[2])
        if value(cut, "archive_ingest_items_total", channel="call", outcome="rejected"):
            break
        time.sleep(0.05)
    assert value(cut, "archive_ingest_items_total", channel="call", outcome="rejected") == 1
    assert value(cut, "archive_http_requests_total", route="put_recording", method="PUT",
                 status="499") == 1
    # Only GET /metrics there, without a token.
    for path in ("/healthz", "/readyz", "/openapi.json", "/v1/whoami", "/", "/signin"):
        assert _get(metrics + path)[0] == 404, path
    assert _get(metrics + "/metrics", method="POST")[0] == 405
    # The service's own port: the token, and nothing without it.
    assert _get(base + "/metrics")[0] == 401
    assert _get(base + "/metrics", bearer(secret))[0] == 401
    status, _, text = _get(base + "/metrics", bearer(TOKEN))
    assert status == 200 and value(parse(text), "archive_items", tenant="camden",
                                   status="active") == 1
