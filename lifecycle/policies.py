"""Retention policies: versioned windows per tenant and channel, changed after a preview.

A change is two steps. ``plan_change`` shows what it would do (how many active items get a new
``retain_until``, how many would expire at once, how many of those are held) and returns a
``confirm`` token that binds the tenant, channel, days and the version in force. ``apply_change``
takes that token and, in one write transaction under the tenant's exclusive lock, checks that
the version in force is still the one previewed, writes version n+1, recomputes ``retain_until``
and ``retention_basis`` of every active item of the tenant and channel with one UPDATE (a shorter
window applies to old items too), and appends a ``policy.change`` audit event. An item becoming
active takes the same lock shared, so it either sees the new version or is recomputed by it.

Windows fixed by the settings file (``retention_days``) are copied into the table at start by
``sync_settings_policies`` and may not be changed through the API or CLI.
"""

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from archive import audit, retention
from archive.db import tenant_lock
from archive.errors import (
    BadRequestError,
    ConfigurationError,
    ConflictError,
    FieldError,
    NotFoundError,
)
from archive.ids import uuid7
from archive.models import Channel, Item, ItemStatus, Policy, Tenant
from archive.search import under_active_hold
from archive.service import Actor, Archive

SOURCES = ("api", "cli", "settings")
SETTINGS_ACTOR = Actor("settings", "system")
_TOKEN_LENGTH = 24  # hex characters of the SHA-256 kept as the confirm token
_ACTIVE = ItemStatus.ACTIVE.value


# -- reading -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PolicyVersion:
    """One row of ``policies``: a version of a tenant's window for a channel."""

    version: int
    days: int
    source: str
    set_by: str
    set_at: datetime
    reason: str | None

    @classmethod
    def of(cls, policy: Policy) -> "PolicyVersion":
        return cls(policy.version, policy.days, policy.source, policy.set_by, policy.set_at,
                   policy.reason)

    def json(self) -> dict[str, Any]:
        return {"version": self.version, "days": self.days, "source": self.source,
                "set_by": self.set_by, "set_at": self.set_at.isoformat(),
                "reason": self.reason}


@dataclass(frozen=True)
class PolicyView:
    """The window in force for a tenant and channel, where it comes from, and its versions.

    With no row in ``policies``, ``version`` is 0 and ``source`` is ``settings`` (the settings
    file's window) or ``default`` (the built-in one); ``policy`` is the basis name items record.
    """

    tenant: str
    channel: Channel
    days: int
    version: int
    source: str
    set_by: str | None
    set_at: datetime | None
    reason: str | None
    policy: str
    fixed_by_settings: bool
    history: list[PolicyVersion] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "channel": self.channel.value, "days": self.days,
                "version": self.version, "source": self.source, "set_by": self.set_by,
                "set_at": self.set_at.isoformat() if self.set_at else None,
                "reason": self.reason, "policy": self.policy,
                "fixed_by_settings": self.fixed_by_settings,
                "history": [v.json() for v in self.history]}


def _view(tenant: str, channel: Channel, rows: list[Policy],
          windows: retention.Windows) -> PolicyView:
    fixed = windows.for_tenant(tenant, channel)
    history = [PolicyVersion.of(p) for p in sorted(rows, key=lambda p: p.version)]
    if history:
        top = history[-1]
        return PolicyView(tenant, channel, top.days, top.version, top.source, top.set_by,
                          top.set_at, top.reason, retention.policy_id(tenant, channel),
                          fixed is not None, history)
    if fixed is not None:
        return PolicyView(tenant, channel, fixed, 0, "settings", None, None, None, "settings",
                          True)
    basis = retention.default_basis(channel)
    return PolicyView(tenant, channel, basis["days"], 0, "default", None, None, None,
                      basis["policy"], False)


async def list_policies(archive: Archive, tenant: str | None) -> list[PolicyView]:
    """The window in force per tenant (every tenant when ``tenant`` is None) and channel,
    each with its versions; ``NotFoundError`` for an unknown tenant."""
    async with archive.db.reader() as session:
        if tenant is None:
            tenants = list((await session.exec(select(Tenant.id).order_by(col(Tenant.id)))).all())
        elif await session.get(Tenant, tenant) is None:
            raise NotFoundError(f"no tenant {tenant!r}")
        else:
            tenants = [tenant]
        stmt = select(Policy).order_by(col(Policy.tenant), col(Policy.channel),
                                       col(Policy.version))
        if tenant is not None:
            stmt = stmt.where(Policy.tenant == tenant)
        rows = list((await session.exec(stmt)).all())
    by_key: dict[tuple[str, str], list[Policy]] = {}
    for p in rows:
        by_key.setdefault((p.tenant, p.channel), []).append(p)
    return [_view(t, c, by_key.get((t, c.value), []), archive.windows)
            for t in tenants for c in Channel]


def format_policies(views: Sequence[PolicyView]) -> str:
    """A table for ``archive policies list``: the window in force, then earlier versions."""
    if not views:
        return "no tenants\n"
    header = ("TENANT", "CHANNEL", "DAYS", "VERSION", "SOURCE", "SET BY", "SET AT", "FIXED")
    lines: list[tuple[str, ...]] = [header]
    for v in views:
        lines.append((v.tenant, v.channel.value, str(v.days), str(v.version), v.source,
                      v.set_by or "-", f"{v.set_at:%Y-%m-%d %H:%M}" if v.set_at else "-",
                      "settings" if v.fixed_by_settings else "-"))
        lines.extend(("", "", str(old.days), str(old.version), old.source, old.set_by,
                      f"{old.set_at:%Y-%m-%d %H:%M}", "") for old in reversed(v.history[:-1]))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
           for row in lines]
    out.append("FIXED settings: the settings file (retention_days) decides this window.")
    return "\n".join(out) + "\n"


# -- planning ------------------------------------------------------------------------------------

def confirm_token(tenant: str, channel: Channel, days: int, version: int) -> str:
    """What a preview hands out and a change must present: it binds the change asked for and
    the version in force when it was previewed (not a secret: only proof of the preview)."""
    text = f"retention-change\n{tenant}\n{channel.value}\n{days}\n{version}"
    return hashlib.sha256(text.encode()).hexdigest()[:_TOKEN_LENGTH]


@dataclass(frozen=True)
class ChangePlan:
    """What changing a window would do, as of ``now``."""

    tenant: str
    channel: Channel
    days: int
    current_days: int
    current_version: int
    current_source: str
    now: datetime
    recomputed: int  # active items of the tenant and channel that get a new retain_until
    expire_now: int  # of those, how many would be expired at once (retain_until <= now)
    expire_now_held: int  # of those, how many are kept by holds
    earliest: datetime | None  # the earliest new retain_until
    confirm: str

    def json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "channel": self.channel.value, "days": self.days,
                "current_days": self.current_days, "current_version": self.current_version,
                "current_source": self.current_source, "now": self.now.isoformat(),
                "recomputed": self.recomputed, "expire_now": self.expire_now,
                "expire_now_held": self.expire_now_held,
                "expire_now_unheld": self.expire_now - self.expire_now_held,
                "earliest_retain_until": self.earliest.isoformat() if self.earliest else None}

    def __str__(self) -> str:
        lines = [
            f"{self.tenant} {self.channel.value}: retention window {self.current_days} -> "
            f"{self.days} days (now version {self.current_version}, {self.current_source}; "
            f"would become version {self.current_version + 1})",
            f"  {self.recomputed} active item(s) get a new retain_until",
            f"  {self.expire_now} would be expired at once: "
            f"{self.expire_now - self.expire_now_held} destroyed by the next purge pass, "
            f"{self.expire_now_held} kept by legal holds",
        ]
        if self.earliest is not None:
            lines.append(f"  earliest new retain_until: {self.earliest.isoformat()}")
        lines.append(f"  confirm: {self.confirm}")
        return "\n".join(lines)


async def _check(session: AsyncSession, archive: Archive, tenant: str, channel: Channel,
                 days: int) -> None:
    """Refuse a change the archive cannot make: unknown tenant, days out of range, or a
    window the settings file decides."""
    if await session.get(Tenant, tenant) is None:
        raise NotFoundError(f"no tenant {tenant!r}")
    if isinstance(days, bool) or not isinstance(days, int) or not (
            1 <= days <= retention.MAX_DAYS):
        raise BadRequestError("the retention window is not valid", errors=[
            FieldError("days", f"must be a whole number of days from 1 to {retention.MAX_DAYS}")])
    if archive.windows.fixed_for(tenant, channel):
        raise ConflictError(
            f"the {channel.value} retention window of {tenant} is fixed by the settings file "
            "(setting retention_days); change it there and restart")


async def _in_force(session: AsyncSession, archive: Archive, tenant: str,
                    channel: Channel) -> tuple[Policy | None, dict[str, Any], str]:
    """The policy row in force (if any), the basis new items get, and its source."""
    policy = await retention.current_policy(session, tenant, channel)
    basis = await retention.basis_for(session, tenant, channel, archive.windows)
    source = policy.source if policy is not None else str(basis["policy"])
    return policy, basis, source


def _anchor() -> Any:
    """What a window counts from: the end of the contact, or its start when not known."""
    return sa.func.coalesce(col(Item.ended_at), col(Item.started_at))


async def plan_change(archive: Archive, tenant: str, channel: Channel, days: int) -> ChangePlan:
    """Preview a new window: validated as ``apply_change`` would, nothing written."""
    now = archive.clock.now()
    async with archive.db.reader() as session:
        await _check(session, archive, tenant, channel, days)
        policy, basis, source = await _in_force(session, archive, tenant, channel)
        version = policy.version if policy is not None else 0
        expired = _anchor() <= now - timedelta(days=days)
        stmt = select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((expired, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(
                sa.case((sa.and_(expired, under_active_hold()), 1), else_=0)), 0),
            sa.func.min(_anchor()),
        ).select_from(Item).where(Item.tenant == tenant, Item.channel == channel.value,
                                  Item.status == _ACTIVE)
        count, expire_now, held, earliest = (await session.exec(stmt)).one()
    return ChangePlan(
        tenant=tenant, channel=channel, days=days, current_days=int(basis["days"]),
        current_version=version, current_source=source, now=now, recomputed=int(count),
        expire_now=int(expire_now), expire_now_held=int(held),
        earliest=earliest + timedelta(days=days) if earliest is not None else None,
        confirm=confirm_token(tenant, channel, days, version))


# -- changing ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChangeResult:
    """What ``apply_change`` did."""

    policy: Policy
    previous_days: int
    recomputed: int

    def json(self) -> dict[str, Any]:
        p = self.policy
        return {"tenant": p.tenant, "channel": p.channel, "days": p.days, "version": p.version,
                "source": p.source, "set_by": p.set_by, "set_at": p.set_at.isoformat(),
                "reason": p.reason, "policy": retention.policy_id(p.tenant, p.channel),
                "previous_days": self.previous_days}

    def __str__(self) -> str:
        p = self.policy
        return (f"{p.tenant} {p.channel}: retention window {self.previous_days} -> {p.days} "
                f"days (version {p.version}); recomputed retain_until of {self.recomputed} "
                "active item(s)")


def _new_retain_until(dialect: str, days: int) -> Any:
    """``coalesce(ended_at, started_at) + days`` in SQL, equal to ``retention.retain_until``
    to the microsecond.

    PostgreSQL: plus ``days * 24`` hours (an interval of days would follow the session's time
    zone across a clock change; hours do not). SQLite: SQLAlchemy stores a DateTime as the text
    ``YYYY-MM-DD HH:MM:SS.ffffff``; ``datetime()`` works in milliseconds and would round
    ``.9995`` and up into the next second, so it gets the whole seconds alone and the fraction
    is appended as it was.
    """
    anchor = _anchor()
    if dialect == "postgresql":
        return anchor + sa.func.make_interval(0, 0, 0, 0, days * 24, type_=sa.Interval())
    if dialect == "sqlite":
        seconds = sa.func.datetime(sa.func.substr(anchor, 1, 19), f"+{days} days")
        return seconds.op("||")(sa.func.substr(anchor, 20))
    # The index runs on PostgreSQL or SQLite only (archive/db.py); say so plainly otherwise.
    raise ConfigurationError(f"the index database {dialect!r} is not supported")


async def _write_version(session: AsyncSession, archive: Archive, *, tenant: str,
                         channel: Channel, days: int, current: Policy | None,
                         previous_days: int, actor: Actor, source: str,
                         reason: str | None) -> ChangeResult:
    """Inside the caller's transaction (tenant lock held): the new version, the bulk
    recompute, the audit event."""
    now = archive.clock.now()
    policy = Policy(id=uuid7(), tenant=tenant, channel=channel.value,
                    version=(current.version if current is not None else 0) + 1, days=days,
                    source=source, set_by=actor.name, set_at=now, reason=reason or None)
    session.add(policy)
    await session.flush()
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    update = (sa.update(Item)
              .where(col(Item.tenant) == tenant, col(Item.channel) == channel.value,
                     col(Item.status) == _ACTIVE)
              .values(retain_until=_new_retain_until(dialect, days),
                      retention_basis=retention.policy_basis(policy))
              .execution_options(synchronize_session=False))
    recomputed = (await session.exec(update)).rowcount
    await audit.append(session, tenant=tenant, at=now, actor=actor.name, role=actor.role,
                       action="policy.change",
                       detail={"channel": channel.value, "days": days,
                               "previous_days": previous_days, "version": policy.version,
                               "source": source, "recomputed": recomputed})
    return ChangeResult(policy, previous_days, recomputed)


async def apply_change(archive: Archive, *, tenant: str, channel: Channel, days: int,
                       actor: Actor, source: str, reason: str | None,
                       confirm: str) -> ChangeResult:
    """Apply a previewed change (``confirm`` from ``plan_change``); see the module docstring.
    ``ConflictError`` when the policy changed since the preview or the settings file fixes
    the window."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    async with archive.db.session() as session:
        await tenant_lock(session, tenant, exclusive=True)
        await _check(session, archive, tenant, channel, days)
        current, basis, _ = await _in_force(session, archive, tenant, channel)
        version = current.version if current is not None else 0
        expected = confirm_token(tenant, channel, days, version)
        if not hmac.compare_digest(confirm.encode(), expected.encode()):
            stale = any(hmac.compare_digest(confirm.encode(),
                                            confirm_token(tenant, channel, days, v).encode())
                        for v in range(version))
            if stale:
                raise ConflictError("the policy changed since the preview; preview again")
            raise ConflictError("the confirm token is not from a preview of this change "
                                "(tenant, channel and days); preview again")
        result = await _write_version(
            session, archive, tenant=tenant, channel=channel, days=days, current=current,
            previous_days=int(basis["days"]), actor=actor, source=source, reason=reason)
        await session.commit()
    return result


async def sync_settings_policies(archive: Archive) -> int:
    """Copy the settings file's windows into each tenant's policy (a new version where it
    is missing or differs, which recomputes its items); return how many versions were written.

    Idempotent, and safe when several processes start at once: each write re-reads the
    version in force under the tenant's exclusive lock.
    """
    windows = archive.windows
    if not windows.days:
        return 0
    async with archive.db.reader() as session:
        tenants = list((await session.exec(select(Tenant.id).order_by(col(Tenant.id)))).all())
        rows = list((await session.exec(select(Policy).order_by(col(Policy.version)))).all())
    in_force = {(p.tenant, p.channel): p.days for p in rows}  # the highest version wins
    written = 0
    for tenant in tenants:
        for channel in Channel:
            days = windows.for_tenant(tenant, channel)
            if days is None or in_force.get((tenant, channel.value)) == days:
                continue
            async with archive.db.session() as session:
                await tenant_lock(session, tenant, exclusive=True)
                current, basis, _ = await _in_force(session, archive, tenant, channel)
                if current is not None and current.days == days:
                    continue  # another process got there first
                await _write_version(
                    session, archive, tenant=tenant, channel=channel, days=days,
                    current=current, previous_days=int(basis["days"]),
                    actor=SETTINGS_ACTOR, source="settings",
                    reason="set by the settings file (retention_days)")
                await session.commit()
                written += 1
    return written
