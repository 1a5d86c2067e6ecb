"""The lifecycle worker loop: it purges on its schedule, stops promptly, survives a failing
pass; and ``archive serve`` runs one that purges what comes in through HTTP."""

import asyncio
import json
import logging
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from archive.clock import ManualClock
from archive.db import Database
from archive.models import Destruction, Item, ItemStatus
from archive.service import Archive
from archive.settings import Settings
from lifecycle.worker import Worker
from tests.lifecycle.test_purge import PHONE, add_tenant, fetch, ingest, stored_keys
from tests.servers import archive_serve, stop


async def wait_for(condition: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Poll an async predicate until it holds."""
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_the_worker_purges_on_schedule_and_stops_promptly(
    archive: Archive, settings: Settings, clock: ManualClock,
) -> None:
    await add_tenant(archive)
    first = await ingest(archive, "first")
    later = await ingest(archive, "later", days_ago=10)
    worker = Worker(archive, replace(settings, purge_interval=1, sweep_interval=3600))
    halt = asyncio.Event()
    task = asyncio.create_task(worker.run(halt))

    async def purged(item: Item) -> bool:
        return (await fetch(archive.db, item.id)).status == ItemStatus.PURGED.value

    await wait_for(lambda: purged(first))
    assert later.retain_until is not None
    clock.set(later.retain_until)  # the next pass, a second later, finds it expired
    await wait_for(lambda: purged(later))
    assert await stored_keys(archive.store) == []

    started = time.monotonic()
    halt.set()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 1.0


async def test_a_long_interval_does_not_delay_stopping(
    archive: Archive, settings: Settings,
) -> None:
    worker = Worker(archive, replace(settings, purge_interval=3600, sweep_interval=3600))
    halt = asyncio.Event()
    task = asyncio.create_task(worker.run(halt))
    await asyncio.sleep(0.3)  # the first passes ran; now it waits an hour
    assert not task.done()
    started = time.monotonic()
    halt.set()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 0.5


async def test_a_failing_pass_is_logged_and_the_worker_carries_on(
    archive: Archive, settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    await add_tenant(archive)
    item = await ingest(archive, "call-1")

    async def rename(old: str, new: str) -> None:
        async with archive.db.session() as session:
            connection = await session.connection()
            await connection.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))
            await session.commit()

    # A real failure: the outbox table the purge needs is not there.
    await rename("object_deletions", "object_deletions_away")
    worker = Worker(archive, replace(settings, purge_interval=1, sweep_interval=3600))
    halt = asyncio.Event()
    with caplog.at_level(logging.INFO):
        task = asyncio.create_task(worker.run(halt))
        await wait_for(lambda: _logged(caplog, "lifecycle purge pass failed"))
        assert (await fetch(archive.db, item.id)).status == ItemStatus.ACTIVE.value
        assert not task.done()
        await rename("object_deletions_away", "object_deletions")

        async def purged() -> bool:
            return (await fetch(archive.db, item.id)).status == ItemStatus.PURGED.value

        await wait_for(purged)
        halt.set()
        await asyncio.wait_for(task, 5)
    assert "trying again later" in caplog.text
    assert PHONE not in caplog.text


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text


async def test_run_once_reports_both_passes(archive: Archive, settings: Settings) -> None:
    await add_tenant(archive)
    await ingest(archive, "call-1")
    report = await Worker(archive, settings).run_once()
    lines = str(report).splitlines()
    assert lines[0].startswith("purge: 1 item(s) destroyed, 1 object(s) deleted")
    assert lines[1].startswith("sweep: 0 abandoned upload(s) removed")
    assert report.purge.destroyed == 1 and report.sweep.ok


def test_archive_serve_runs_a_worker_that_purges(tmp_path: Path) -> None:
    data = tmp_path / "var"
    proc, base, secret = archive_serve(data, "camden", worker=True,
                                       extra_env={"ARCHIVE_PURGE_INTERVAL": "1"})
    try:
        started = datetime.now(UTC) - timedelta(days=800)  # chats are kept 730 days
        chat = {"external_id": "chat-1", "started_at": started.isoformat(),
                "customer": {"name": "Ann Example", "email": "ann@example.org"},
                "messages": [{"at": started.isoformat(), "from": "customer",
                              "text": "My bin was not collected"}]}
        request = urllib.request.Request(
            f"{base}/v1/transcripts", data=json.dumps(chat).encode(), method="POST",
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 201
            item_id = uuid.UUID(json.loads(reply.read())["id"])
        asyncio.run(_wait_purged(data / "archive.db", item_id))
    finally:
        stop(proc)


async def _wait_purged(path: Path, item_id: uuid.UUID) -> None:
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async def purged() -> bool:
            async with db.reader() as session:
                item = await session.get(Item, item_id)
                record = (await session.exec(select(Destruction.id).where(
                    Destruction.item_id == item_id))).first()
            return item is not None and item.status == ItemStatus.PURGED.value and (
                record is not None and item.customer_email is None)

        await wait_for(purged, seconds=20)
    finally:
        await db.close()
