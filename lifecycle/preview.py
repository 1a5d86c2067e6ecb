"""What the purge would destroy: by a date (``archive purge --dry-run``, ``GET
/v1/lifecycle/preview``), week by week ahead (the forecast), and the figures of metrics.

Every count is one grouped query over active items with ``retain_until`` up to a bound, which
the ``(tenant, status, retain_until)`` and ``(status, retain_until)`` indexes answer: the cost
grows with what is expiring, not with the size of the archive. "Held" means under at least one
active hold; a held item is kept whatever its ``retain_until``.
"""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from archive.db import Database
from archive.errors import BadRequestError, FieldError
from archive.models import Channel, Destruction, Item, ItemStatus, Tenant
from archive.search import under_active_hold

MAX_WEEKS = 52
RETENTION = "retention"  # the reason of destructions made by the purge
_ACTIVE = ItemStatus.ACTIVE.value


def _expiring(until: datetime, tenant: str | None, channel: Channel | None = None,
              after: datetime | None = None) -> Any:
    """A subquery of active items with ``retain_until`` in ``(after, until]``: tenant, channel,
    retain_until and whether held (computed once per row)."""
    where: list[Any] = [Item.status == _ACTIVE, col(Item.retain_until) <= until]
    if after is not None:
        where.append(col(Item.retain_until) > after)
    if tenant is not None:
        where.append(Item.tenant == tenant)
    if channel is not None:
        where.append(Item.channel == channel.value)
    return (select(col(Item.tenant).label("tenant"), col(Item.channel).label("channel"),
                   col(Item.retain_until).label("retain_until"),
                   under_active_hold().label("held"))
            .where(*where).subquery())


def _count(condition: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


@dataclass(frozen=True)
class PreviewRow:
    """One tenant and channel: what the purge would do by ``until``."""

    tenant: str
    channel: str
    would_destroy: int  # active, retain_until <= until, under no active hold
    kept_by_holds: int  # active, retain_until <= until, under an active hold
    overdue: int  # active, retain_until <= now, unheld: the next pass's work
    oldest_overdue: datetime | None  # the smallest retain_until among the overdue

    def json(self) -> dict[str, Any]:
        return {"channel": self.channel, "would_destroy": self.would_destroy,
                "kept_by_holds": self.kept_by_holds, "overdue": self.overdue,
                "oldest_overdue": self.oldest_overdue.isoformat() if self.oldest_overdue
                else None}


async def preview(db: Database, *, until: datetime, now: datetime,
                  tenant: str | None = None) -> list[PreviewRow]:
    """Per tenant and channel that has anything to show, by tenant then channel."""
    sub = _expiring(max(until, now), tenant)
    unheld = sa.not_(sub.c.held)
    by_until = sub.c.retain_until <= until
    overdue = sa.and_(unheld, sub.c.retain_until <= now)
    stmt = (sa.select(sub.c.tenant, sub.c.channel,
                      _count(sa.and_(unheld, by_until)),
                      _count(sa.and_(sub.c.held, by_until)),
                      _count(overdue),
                      sa.func.min(sa.case((overdue, sub.c.retain_until), else_=None)))
            .group_by(sub.c.tenant, sub.c.channel).order_by(sub.c.tenant, sub.c.channel))
    async with db.reader() as session:
        rows = (await (await session.connection()).execute(stmt)).all()
    found = [PreviewRow(t, c, int(d), int(k), int(o), oldest) for t, c, d, k, o, oldest in rows]
    return [r for r in found if r.would_destroy or r.kept_by_holds or r.overdue]


def format_preview(rows: Sequence[PreviewRow], until: datetime) -> str:
    """The table of ``archive purge --dry-run``."""
    head = f"By {until.isoformat()}:"
    if not rows:
        return f"{head} nothing would be destroyed, nothing is kept only by holds.\n"
    table = [("TENANT", "CHANNEL", "WOULD DESTROY", "KEPT BY HOLDS", "OVERDUE NOW",
              "OLDEST OVERDUE")]
    table += [(r.tenant, r.channel, str(r.would_destroy), str(r.kept_by_holds), str(r.overdue),
               r.oldest_overdue.isoformat() if r.oldest_overdue else "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    total = sum(r.would_destroy for r in rows)
    kept = sum(r.kept_by_holds for r in rows)
    lines.append(f"Total: {total} would be destroyed, {kept} kept only by legal holds.")
    return f"{head}\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ForecastWeek:
    """Items whose window ends in ``(start, end]``."""

    start: datetime
    end: datetime
    would_destroy: int  # unheld: destroyed by the pass after their retain_until
    kept_by_holds: int  # held: kept only because of the holds

    def json(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "would_destroy": self.would_destroy, "kept_by_holds": self.kept_by_holds}


async def forecast(db: Database, *, tenant: str, now: datetime, weeks: int = 12,
                   channel: Channel | None = None) -> list[ForecastWeek]:
    """Week by week from ``now``: how many of the tenant's items reach the end of their
    window, and how many of those holds keep (as things stand: holds released or placed
    later change it). Items already overdue are the preview's ``overdue``, not week 1's."""
    if not 1 <= weeks <= MAX_WEEKS:
        raise BadRequestError(errors=[FieldError("weeks", f"must be 1 to {MAX_WEEKS}")])
    bounds = [now + timedelta(weeks=k) for k in range(weeks + 1)]
    sub = _expiring(bounds[-1], tenant, channel, after=now)
    columns = []
    for start, end in itertools.pairwise(bounds):
        in_week = sa.and_(sub.c.retain_until > start, sub.c.retain_until <= end)
        columns += [_count(sa.and_(in_week, sa.not_(sub.c.held))),
                    _count(sa.and_(in_week, sub.c.held))]
    async with db.reader() as session:
        result = await (await session.connection()).execute(sa.select(*columns))
        counts = [int(n) for n in result.one()]
    return [ForecastWeek(bounds[k], bounds[k + 1], counts[2 * k], counts[2 * k + 1])
            for k in range(weeks)]


@dataclass(frozen=True)
class TenantStats:
    """Lifecycle figures of one tenant, for metrics."""

    tenant: str
    purged: int  # items destroyed at the end of their window (destructions, reason retention)
    overdue: int  # active, unheld, retain_until <= now: waiting for a pass
    oldest_overdue_age: float  # seconds since the oldest overdue item's retain_until; 0: none


async def lifecycle_stats(db: Database, *, now: datetime) -> list[TenantStats]:
    """Per tenant (every tenant, zeros included), in three grouped queries."""
    sub = _expiring(now, None)
    overdue = (select(sub.c.tenant, sa.func.count(), sa.func.min(sub.c.retain_until))
               .where(sa.not_(sub.c.held)).group_by(sub.c.tenant))
    purged = (select(Destruction.tenant, sa.func.count()).where(Destruction.reason == RETENTION)
              .group_by(col(Destruction.tenant)))
    async with db.reader() as session:
        tenants = list((await session.exec(select(Tenant.id).order_by(col(Tenant.id)))).all())
        late = {t: (int(n), oldest) for t, n, oldest in (await session.exec(overdue)).all()}
        done = {t: int(n) for t, n in (await session.exec(purged)).all()}
    stats = []
    for tenant in sorted(set(tenants) | set(late) | set(done)):
        count, oldest = late.get(tenant, (0, None))
        age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
        stats.append(TenantStats(tenant, done.get(tenant, 0), count, age))
    return stats
