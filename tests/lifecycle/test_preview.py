"""The lifecycle preview, forecast and figures against a hand count of a small fixed set with
holds (active, released, another tenant's), on SQLite and PostgreSQL; and ``archive purge
--dry-run`` as an operator runs it."""

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archive.db import Database
from archive.errors import BadRequestError
from archive.ids import uuid7
from archive.models import Channel, Destruction, ItemStatus
from lifecycle.preview import (
    ForecastWeek,
    PreviewRow,
    TenantStats,
    forecast,
    format_preview,
    lifecycle_stats,
    preview,
)
from tests.archive.test_search import add_hold, add_item, add_tenant
from tests.conftest import START
from tests.helpers import run_archive

NOW = START
DAY = timedelta(days=1)


async def expiring(db: Database, days: float, **kw: Any) -> Any:
    return await add_item(db, START - timedelta(days=400),
                          retain_until=NOW + timedelta(days=days), **kw)


@pytest.fixture
async def fixed_set(db: Database) -> dict[str, Any]:
    for t in ("camden", "barnet", "hackney"):
        await add_tenant(db, t)
    items = {
        "c1": await expiring(db, -10),  # overdue
        "c2": await expiring(db, -5),  # held
        "c3": await expiring(db, -1),  # under a released hold only: overdue
        "c4": await expiring(db, 10),  # in barnet's hold, which cannot hold camden's item
        "c5": await expiring(db, 20),  # held (and under a released hold)
        "c6": await expiring(db, 100),  # beyond every date asked
        "c7": await expiring(db, 0),  # exactly now: overdue
        "c8": await expiring(db, 7),  # exactly one week ahead
        "chat": await expiring(db, 3, channel=Channel.CHAT),
        "erased": await expiring(db, -30, status=ItemStatus.ERASED),
        "pending": await expiring(db, -30, status=ItemStatus.PENDING),
        "barnet": await expiring(db, -2, tenant="barnet"),
        "barnet_held": await expiring(db, 4, tenant="barnet"),
    }
    await add_item(db, START - 400 * DAY)  # active without a retain_until: never counted
    await add_hold(db, "CMP-1", [items["c2"], items["c5"]])
    await add_hold(db, "CMP-OLD", [items["c3"], items["c5"]], status="released")
    await add_hold(db, "B-1", [items["c4"], items["barnet_held"]], tenant="barnet")
    return items


async def test_preview_counts_equal_a_hand_count(db: Database, fixed_set: object) -> None:
    rows = await preview(db, until=NOW + 30 * DAY, now=NOW)
    assert rows == [
        PreviewRow("barnet", "call", 1, 1, 1, NOW - 2 * DAY),
        PreviewRow("camden", "call", 5, 2, 3, NOW - 10 * DAY),
        PreviewRow("camden", "chat", 1, 0, 0, None),
    ]
    # By now: what is overdue, and what holds keep past its date.
    assert await preview(db, until=NOW, now=NOW) == [
        PreviewRow("barnet", "call", 1, 0, 1, NOW - 2 * DAY),
        PreviewRow("camden", "call", 3, 1, 3, NOW - 10 * DAY),
    ]
    # A date in the past: fewer would have gone by then, the overdue are still overdue.
    assert await preview(db, until=NOW - 7 * DAY, now=NOW) == [
        PreviewRow("barnet", "call", 0, 0, 1, NOW - 2 * DAY),
        PreviewRow("camden", "call", 1, 0, 3, NOW - 10 * DAY),
    ]
    assert await preview(db, until=NOW + 30 * DAY, now=NOW, tenant="barnet") == [
        PreviewRow("barnet", "call", 1, 1, 1, NOW - 2 * DAY)]
    assert await preview(db, until=NOW + 30 * DAY, now=NOW, tenant="hackney") == []


async def test_format_preview(db: Database, fixed_set: object) -> None:
    until = NOW + 30 * DAY
    text = format_preview(await preview(db, until=until, now=NOW), until)
    lines = text.splitlines()
    assert lines[0] == f"By {until.isoformat()}:"
    assert lines[1].split() == ["TENANT", "CHANNEL", "WOULD", "DESTROY", "KEPT", "BY", "HOLDS",
                                "OVERDUE", "NOW", "OLDEST", "OVERDUE"]
    assert lines[3].split() == ["camden", "call", "5", "2", "3",
                                (NOW - 10 * DAY).isoformat()]
    assert lines[4].split() == ["camden", "chat", "1", "0", "0", "-"]
    assert lines[-1] == "Total: 7 would be destroyed, 3 kept only by legal holds."
    empty = format_preview([], NOW)
    assert "nothing would be destroyed" in empty and empty.endswith("\n")


async def test_forecast_week_by_week(db: Database, fixed_set: object) -> None:
    weeks = await forecast(db, tenant="camden", now=NOW, weeks=4)
    assert [(w.would_destroy, w.kept_by_holds) for w in weeks] == [(2, 0), (1, 0), (0, 1),
                                                                    (0, 0)]
    assert weeks[0] == ForecastWeek(NOW, NOW + 7 * DAY, 2, 0)  # chat (+3 days), c8 (+7)
    assert weeks[-1].end == NOW + 28 * DAY
    calls = await forecast(db, tenant="camden", now=NOW, weeks=2, channel=Channel.CALL)
    assert [(w.would_destroy, w.kept_by_holds) for w in calls] == [(1, 0), (1, 0)]
    assert [(w.would_destroy, w.kept_by_holds) for w in
            await forecast(db, tenant="barnet", now=NOW, weeks=1)] == [(0, 1)]
    for bad in (0, 53):
        with pytest.raises(BadRequestError) as exc:
            await forecast(db, tenant="camden", now=NOW, weeks=bad)
        assert [e.field for e in exc.value.errors] == ["weeks"]


async def test_lifecycle_stats(db: Database, fixed_set: object) -> None:
    async with db.session() as session:
        for tenant, reason in (("camden", "retention"), ("camden", "retention"),
                               ("camden", "erasure"), ("barnet", "erasure")):
            session.add(Destruction(id=uuid7(), item_id=uuid.uuid4(), tenant=tenant,
                                    channel="call", reason=reason, destroyed_at=NOW,
                                    actor="worker"))
        await session.commit()
    assert await lifecycle_stats(db, now=NOW) == [
        TenantStats("barnet", 0, 1, 2 * 86400.0),
        TenantStats("camden", 2, 3, 10 * 86400.0),
        TenantStats("hackney", 0, 0, 0.0),
    ]


# -- archive purge --dry-run ---------------------------------------------------------------------



async def test_purge_dry_run_command(tmp_path: Path) -> None:
    data = tmp_path / "var"
    for tenant in ("camden", "barnet"):
        assert run_archive(["tenants", "create", tenant], data).returncode == 0
    db = Database(f"sqlite+aiosqlite:///{data / 'archive.db'}")
    now = datetime.now(UTC)
    try:
        overdue = await add_item(db, now - 400 * DAY, tenant="camden",
                                 retain_until=now - 3 * DAY)
        held = await add_item(db, now - 400 * DAY, tenant="camden", retain_until=now + 5 * DAY)
        await add_item(db, now - 400 * DAY, tenant="camden", retain_until=now + 50 * DAY)
        await add_hold(db, "CMP-9", [held], tenant="camden")
    finally:
        await db.close()
    until = (now + 20 * DAY).date().isoformat()
    out = run_archive(["purge", "--dry-run", "--until", until], data)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"By {until}T00:00:00+00:00:"
    assert overdue.retain_until is not None
    assert lines[2].split() == ["camden", "call", "1", "1", "1",
                                overdue.retain_until.isoformat()]
    assert lines[-1] == "Total: 1 would be destroyed, 1 kept only by legal holds."
    nothing = run_archive(["purge", "--dry-run", "--until", until, "--tenant", "barnet"], data)
    assert nothing.returncode == 0 and "nothing would be destroyed" in nothing.stdout
    bad = run_archive(["purge", "--dry-run", "--until", "next tuesday"], data)
    assert bad.returncode == 2 and "--until" in bad.stderr
