"""The audit log: append-only and hash-chained per tenant.

Each event stores the hash of the one before it in its tenant's chain and its own hash over its
fields; ``audit_heads`` holds each chain's last sequence number and hash. Appending locks the
head row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's single writer does the same), so
concurrent appends form one chain. Editing any field of an event, deleting or inserting an event,
or cutting off the tail all break verification.
"""

import base64
import binascii
import hashlib
import json
import re
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from archive.errors import BadRequestError, FieldError
from archive.models import AuditEvent, AuditHead
from archive.search import parse_query

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


# -- reading the log -----------------------------------------------------------------------------

EVENTS_MAX_LIMIT = 500
EVENTS_DEFAULT_LIMIT = 50
EVENT_FILTERS = ("action", "actor", "item_id", "from", "to")
EVENT_PARAMETERS = (*EVENT_FILTERS, "limit", "cursor")
_ACTION = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+)*\.?$")
_MAX_ACTOR = 100  # AuditEvent.actor's length
_MAX_ACTION = 50  # AuditEvent.action's length


@dataclass(frozen=True)
class EventQuery:
    """Which of a tenant's events to list, newest first. ``action`` ending in ``.`` is a
    prefix (``item.`` is every item event); otherwise it must match exactly."""

    action: str | None = None
    actor: str | None = None
    item_id: uuid.UUID | None = None
    from_: datetime | None = None  # at >= from_
    to: datetime | None = None  # at < to
    limit: int = EVENTS_DEFAULT_LIMIT
    after_seq: int | None = None  # the cursor: only events with a smaller seq

    def filter_names(self) -> list[str]:
        """The names of the filters set (never their values), for the reader's own event."""
        values = {"action": self.action, "actor": self.actor, "item_id": self.item_id,
                  "from": self.from_, "to": self.to}
        return sorted(name for name, value in values.items() if value is not None)


@dataclass(frozen=True)
class EventPage:
    events: list[AuditEvent]
    next_cursor: str | None


def encode_event_cursor(seq: int) -> str:
    """The opaque position after the event of ``seq`` (in its tenant's chain)."""
    return base64.urlsafe_b64encode(struct.pack(">q", seq)).decode().rstrip("=")


def _decode_event_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise ValueError("is not a cursor from a previous page") from None
    if len(raw) != 8:
        raise ValueError("is not a cursor from a previous page")
    (seq,) = struct.unpack(">q", raw)
    if seq < 1:
        raise ValueError("is not a cursor from a previous page")
    return int(seq)


def _event_action(value: str) -> str:
    if len(value) > _MAX_ACTION or not _ACTION.match(value):
        raise ValueError("must be an action such as item.view, or a prefix such as item.")
    return value


def _event_actor(value: str) -> str:
    if len(value) > _MAX_ACTOR or any(not ch.isprintable() for ch in value):
        raise ValueError(f"must be at most {_MAX_ACTOR} printable characters, such as "
                         "token:ID or user:ID")
    return value


def _event_item(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValueError("is not an item id (a UUID)") from None


def _event_limit(value: str) -> int:
    if value.isdigit() and 1 <= int(value) <= EVENTS_MAX_LIMIT:
        return int(value)
    raise ValueError(f"must be a whole number from 1 to {EVENTS_MAX_LIMIT}")


def parse_event_query(params: Mapping[str, Any]) -> EventQuery:
    """An EventQuery from query-string values (empty ones are ignored); ``BadRequestError``
    naming every unknown parameter and every bad value. ``from`` and ``to`` take what the item
    search takes: a date (midnight UTC) or ISO 8601 with an offset."""
    errors = [FieldError(name, "is not a known parameter")
              for name in sorted(set(params) - set(EVENT_PARAMETERS))]
    raw: dict[str, str] = {}
    for name in EVENT_PARAMETERS:
        value = params.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            errors.append(FieldError(name, "must be a string"))
        elif value.strip():
            raw[name] = value.strip()
    parsers: dict[str, Any] = {"action": _event_action, "actor": _event_actor,
                               "item_id": _event_item, "limit": _event_limit,
                               "cursor": _decode_event_cursor}
    values: dict[str, Any] = {}
    for name, parse in parsers.items():
        if name in raw:
            try:
                values[name] = parse(raw[name])
            except ValueError as exc:
                errors.append(FieldError(name, str(exc)))
    times: dict[str, str] = {k: raw[k] for k in ("from", "to") if k in raw}
    try:
        moments = parse_query(times)
    except BadRequestError as exc:
        errors += exc.errors
    else:
        values["from_"], values["to"] = moments.from_, moments.to
    if errors:
        raise BadRequestError("the audit filters have errors", errors=errors)
    if "cursor" in values:
        values["after_seq"] = values.pop("cursor")
    return EventQuery(**values)


async def list_events(session: AsyncSession, tenant: str, query: EventQuery) -> EventPage:
    """A page of the tenant's events matching ``query``, newest (highest seq) first, paged by
    keyset on ``seq``: events appended while someone pages sort before the cursor and never
    shift a page."""
    stmt = select(AuditEvent).where(AuditEvent.tenant == tenant)
    if query.action is not None:
        stmt = stmt.where(col(AuditEvent.action).startswith(query.action, autoescape=True)
                          if query.action.endswith(".") else AuditEvent.action == query.action)
    if query.actor is not None:
        stmt = stmt.where(AuditEvent.actor == query.actor)
    if query.item_id is not None:
        stmt = stmt.where(AuditEvent.item_id == query.item_id)
    if query.from_ is not None:
        stmt = stmt.where(col(AuditEvent.at) >= query.from_)
    if query.to is not None:
        stmt = stmt.where(col(AuditEvent.at) < query.to)
    if query.after_seq is not None:
        stmt = stmt.where(col(AuditEvent.seq) < query.after_seq)
    stmt = stmt.order_by(col(AuditEvent.seq).desc()).limit(query.limit + 1)
    rows = list((await session.exec(stmt)).all())
    more = len(rows) > query.limit
    events = rows[:query.limit]
    return EventPage(events, encode_event_cursor(events[-1].seq) if more and events else None)


def event_json(event: AuditEvent) -> dict[str, Any]:
    """The public view of an event (its detail holds no personal data, by rule of ``append``)."""
    return {"seq": event.seq, "at": event.at.astimezone(UTC).isoformat(), "actor": event.actor,
            "role": event.role, "action": event.action,
            "item_id": str(event.item_id) if event.item_id else None,
            "detail": event.detail, "hash": event.hash}


async def verify_tenant(session: AsyncSession, tenant: str) -> ChainReport:
    """One tenant's chain verification (an empty chain is intact with 0 events)."""
    [report] = await verify(session, tenant)
    return report
