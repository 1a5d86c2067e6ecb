"""The audit log: append-only and hash-chained per tenant.

Each event stores the hash of the one before it in its tenant's chain and its own hash over its
fields; ``audit_heads`` holds each chain's last sequence number and hash. Appending locks the
head row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's single writer does the same), so
concurrent appends form one chain. Editing any field of an event, deleting or inserting an event,
or cutting off the tail all break verification.
"""

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from archive.models import AuditEvent, AuditHead

GENESIS = "0" * 64


def event_hash(
    *,
    tenant: str,
    seq: int,
    at: datetime,
    actor: str,
    role: str,
    action: str,
    item_id: uuid.UUID | None,
    detail: dict[str, Any] | None,
    prev_hash: str,
) -> str:
    """SHA-256 over a canonical JSON form of the event's fields and its predecessor's hash."""
    canonical = json.dumps(
        [tenant, seq, at.isoformat(timespec="microseconds"), actor, role, action,
         str(item_id) if item_id else None, detail, prev_hash],
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def append(
    session: AsyncSession,
    *,
    tenant: str,
    at: datetime,
    actor: str,
    role: str,
    action: str,
    item_id: uuid.UUID | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an event to the tenant's chain inside the caller's transaction.

    The caller commits; the head row stays locked until then, so keep the append near the end of
    the transaction. ``detail`` must hold no personal data that a log could not.
    """
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.exec(
        insert(AuditHead).values(tenant=tenant, seq=0, hash=GENESIS).on_conflict_do_nothing()
    )
    head = (
        await session.exec(select(AuditHead).where(AuditHead.tenant == tenant).with_for_update())
    ).one()
    at = at.astimezone(UTC)  # the index returns UTC; hash what it will return
    seq = head.seq + 1
    digest = event_hash(tenant=tenant, seq=seq, at=at, actor=actor, role=role, action=action,
                        item_id=item_id, detail=detail, prev_hash=head.hash)
    event = AuditEvent(tenant=tenant, seq=seq, at=at, actor=actor, role=role, action=action,
                       item_id=item_id, detail=detail, prev_hash=head.hash, hash=digest)
    session.add(event)
    head.seq = seq
    head.hash = digest
    session.add(head)
    await session.flush()
    return event


@dataclass
class ChainReport:
    """What verification found in one tenant's chain."""

    tenant: str
    events: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(session: AsyncSession, tenant: str | None = None) -> list[ChainReport]:
    """Recompute every chain (or one tenant's) and report each break, streaming the events."""
    heads = {h.tenant: h for h in (await session.exec(select(AuditHead))).all()}
    tenants_with_events = set(
        (await session.exec(select(AuditEvent.tenant).distinct())).all()
    )
    names = sorted(heads.keys() | tenants_with_events)
    if tenant is not None:
        names = [tenant]
    reports = []
    for name in names:
        report = ChainReport(name)
        prev_hash, expected_seq = GENESIS, 1
        stmt = (select(AuditEvent).where(AuditEvent.tenant == name)
                .order_by(col(AuditEvent.seq)).execution_options(yield_per=1000))
        result = await session.stream(stmt)
        async for (event,) in result:
            report.events += 1
            if event.seq != expected_seq:
                report.problems.append(
                    f"event {expected_seq} is missing (next found is {event.seq})")
            if event.prev_hash != prev_hash:
                report.problems.append(f"event {event.seq} does not follow its predecessor")
            recomputed = event_hash(
                tenant=event.tenant, seq=event.seq, at=event.at, actor=event.actor,
                role=event.role, action=event.action, item_id=event.item_id,
                detail=event.detail, prev_hash=event.prev_hash)
            if recomputed != event.hash:
                report.problems.append(f"event {event.seq} was altered")
            prev_hash, expected_seq = event.hash, event.seq + 1
        head = heads.get(name)
        if head is None:
            if report.events:
                report.problems.append("the chain has no head record")
        elif head.seq != expected_seq - 1 or head.hash != prev_hash:
            report.problems.append(
                f"the chain ends at event {expected_seq - 1} but its head says {head.seq}: "
                "events were removed from the end")
        reports.append(report)
    return reports


async def append_many(session: AsyncSession, events: Sequence[AuditEvent]) -> None:
    """Add many events inside the caller's transaction, chained exactly as ``append`` would
    one by one: each tenant's head is locked once (tenants in sorted order, so that two
    transactions appending for the same tenants cannot deadlock) and the events are inserted
    in one statement per tenant.

    ``events`` are unsaved ``AuditEvent`` objects with tenant, at, actor, role, action and
    optionally item_id and detail set; their seq, prev_hash and hash are filled in here, in
    the order given per tenant. The caller commits; as with ``append``, keep this near the
    end of the transaction, since the heads stay locked until then.
    """
    by_tenant: dict[str, list[AuditEvent]] = {}
    for event in events:
        by_tenant.setdefault(event.tenant, []).append(event)
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    connection = await session.connection()
    for tenant in sorted(by_tenant):
        await session.exec(
            insert(AuditHead).values(tenant=tenant, seq=0, hash=GENESIS).on_conflict_do_nothing()
        )
        head = (await session.exec(
            select(AuditHead).where(AuditHead.tenant == tenant).with_for_update())).one()
        rows = []
        seq, prev_hash = head.seq, head.hash
        for event in by_tenant[tenant]:
            seq += 1
            at = event.at.astimezone(UTC)  # the index returns UTC; hash what it will return
            digest = event_hash(tenant=tenant, seq=seq, at=at, actor=event.actor,
                                role=event.role, action=event.action, item_id=event.item_id,
                                detail=event.detail, prev_hash=prev_hash)
            event.at, event.seq, event.prev_hash, event.hash = at, seq, prev_hash, digest
            rows.append({"tenant": tenant, "seq": seq, "at": at, "actor": event.actor,
                         "role": event.role, "action": event.action, "item_id": event.item_id,
                         "detail": event.detail, "prev_hash": prev_hash, "hash": digest})
            prev_hash = digest
        await connection.execute(sa.insert(AuditEvent), rows)
        head.seq, head.hash = seq, prev_hash
        session.add(head)
        await session.flush()
