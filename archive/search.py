"""Finding items: the filters of ``GET /v1/items``, evidence exports and subject access.

Filters hold normalised values (E.164 numbers, lower-case emails, ``SW1A 1AA`` postcodes,
case-folded names), the same forms ingest stores, so each is an equality on an indexed column.

Results are newest first by ``(started_at, id)`` and paged by keyset: the cursor is the last
``(started_at, id)`` of a page and the next page holds what sorts strictly after it. Items added
while someone pages therefore never show up twice and never push an existing item off a page:
newer ones sort before the cursor (not shown), older ones land on a later page in their place.
"""

import base64
import binascii
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from archive.db import Database
from archive.errors import BadRequestError, FieldError
from archive.models import Channel, Hold, HoldItem, Item, ItemStatus
from ingest.metadata import normalise_phone, normalise_postcode

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
# The query-string name of each ItemQuery field (``from`` is a Python keyword).
PARAMETERS = ("caller_number", "email", "postcode", "name", "agent_id", "service", "channel",
              "from", "to", "status", "held", "case_ref")
_FIELD_OF = {"from": "from_"}
SEARCHABLE_STATUSES = tuple(s.value for s in ItemStatus if s != ItemStatus.PENDING)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ItemQuery:
    """What to look for; every field is optional and set fields must all match.

    Values are in their stored form: build one with ``parse_query`` from user input.
    """

    caller_number: str | None = None  # E.164; matches the caller or the called number
    email: str | None = None  # lower case
    postcode: str | None = None  # "SW1A 1AA"
    name: str | None = None  # case-folded customer name
    agent_id: str | None = None
    service: str | None = None
    channel: Channel | None = None
    from_: datetime | None = None  # started_at >= from_
    to: datetime | None = None  # started_at < to
    status: ItemStatus = ItemStatus.ACTIVE
    held: bool | None = None  # under at least one active hold (True) / under none (False)
    case_ref: str | None = None  # under an active hold with this case reference

    def filter_names(self) -> list[str]:
        """The parameter names of the filters set (``status`` when not the default): for audit
        details, which must never hold the values."""
        names = []
        for name in PARAMETERS:
            value = getattr(self, _FIELD_OF.get(name, name))
            if name == "status" and value == ItemStatus.ACTIVE:
                continue
            if value is not None:
                names.append(name)
        return sorted(names)


@dataclass(frozen=True)
class Page:
    items: list[Item]
    next_cursor: str | None


def _text(limit: int) -> Any:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError("must be a string")
        text = value.strip()
        if len(text) > limit:
            raise ValueError(f"must be at most {limit} characters")
        if any(not ch.isprintable() for ch in text):
            raise ValueError("must not contain control characters")
        return text
    return parse


def _phone(value: Any) -> str:
    number = normalise_phone(_text(64)(value))
    if number is None:
        raise ValueError("is not a phone number")
    return number


def _postcode(value: Any) -> str:
    code = normalise_postcode(_text(16)(value))
    if code is None:
        raise ValueError("is not a UK postcode")
    return code


def _moment(value: Any) -> datetime:
    """ISO 8601 with a UTC offset, or a plain date (midnight UTC)."""
    if not isinstance(value, str):
        raise TypeError("must be an ISO 8601 date or timestamp string")
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("must be an ISO 8601 date or timestamp with a UTC offset") from None
    if moment.tzinfo is None:
        raise ValueError("must include a UTC offset (e.g. Z or +01:00)")
    return moment.astimezone(UTC)


def _held(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0"}:
        return value.strip().lower() in {"true", "1"}
    raise ValueError("must be true or false")


def _choice(options: Sequence[str]) -> Any:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip() not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value.strip()
    return parse


_PARSERS: dict[str, Any] = {
    "caller_number": _phone,
    "email": lambda v: _text(320)(v).lower(),
    "postcode": _postcode,
    "name": lambda v: _text(200)(v).casefold(),
    "agent_id": _text(100),
    "service": _text(100),
    "channel": lambda v: Channel(_choice([c.value for c in Channel])(v)),
    "from": _moment,
    "to": _moment,
    "status": lambda v: ItemStatus(_choice(SEARCHABLE_STATUSES)(v)),
    "held": _held,
    "case_ref": _text(100),
}


def parse_query(params: Mapping[str, Any]) -> ItemQuery:
    """An ItemQuery from query-string (strings) or JSON values; empty values are ignored.
    Raises BadRequestError naming every unknown parameter and every bad value."""
    errors = [FieldError(name, "is not a known filter")
              for name in sorted(set(params) - set(PARAMETERS))]
    values: dict[str, Any] = {}
    for name in PARAMETERS:
        raw = params.get(name)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        try:
            values[_FIELD_OF.get(name, name)] = _PARSERS[name](raw)
        except (ValueError, TypeError) as exc:
            errors.append(FieldError(name, str(exc)))
    start, end = values.get("from_"), values.get("to")
    if start is not None and end is not None and end <= start:
        errors.append(FieldError("to", "must be after from"))
    if errors:
        raise BadRequestError("the search has errors", errors=errors)
    return ItemQuery(**values)


def encode_cursor(item: Item) -> str:
    """The opaque position after ``item``: microseconds since the epoch and the id."""
    micros = (item.started_at - _EPOCH) // timedelta(microseconds=1)
    raw = struct.pack(">q", micros) + item.id.bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    bad = BadRequestError("the cursor is not valid", errors=[
        FieldError("cursor", "is not a cursor from a previous page")])
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise bad from None
    if len(raw) != 24:
        raise bad
    (micros,) = struct.unpack(">q", raw[:8])
    try:
        return _EPOCH + timedelta(microseconds=micros), uuid.UUID(bytes=raw[8:])
    except OverflowError:
        raise bad from None


def under_active_hold() -> Any:
    """SQL condition on ``Item``: under at least one active hold. Read from the hold tables,
    the authority (``items.held`` is their denormalised copy, for searches). Only the item's
    own tenant's holds count (placement never mixes tenants; this makes sure)."""
    return _active_membership().where(col(Hold.tenant) == col(Item.tenant)).exists()


def _active_membership() -> Any:
    return (select(HoldItem.item_id).join(Hold, col(Hold.id) == col(HoldItem.hold_id))
            .where(col(HoldItem.item_id) == col(Item.id), Hold.status == "active"))


def _conditions(tenant: str, query: ItemQuery) -> list[Any]:
    where: list[Any] = [Item.tenant == tenant, Item.status == query.status.value]
    equal = {"customer_email": query.email, "customer_postcode": query.postcode,
             "customer_name_key": query.name, "agent_id": query.agent_id,
             "service": query.service,
             "channel": query.channel.value if query.channel else None}
    where += [getattr(Item, column) == value for column, value in equal.items()
              if value is not None]
    if query.caller_number is not None:
        where.append(sa.or_(col(Item.caller_number) == query.caller_number,
                            col(Item.called_number) == query.caller_number))
    if query.from_ is not None:
        where.append(col(Item.started_at) >= query.from_)
    if query.to is not None:
        where.append(col(Item.started_at) < query.to)
    if query.held is not None:
        # The bare column (not "IS true"): PostgreSQL then proves the partial index
        # ix_items_held (WHERE held) applies.
        where.append(col(Item.held) if query.held else ~col(Item.held))
    if query.case_ref is not None:
        where.append(_active_membership().where(Hold.tenant == tenant,
                                                Hold.case_ref == query.case_ref).exists())
    return where


_NEWEST_FIRST = (col(Item.started_at).desc(), col(Item.id).desc())


async def search(db: Database, tenant: str, query: ItemQuery, *, limit: int = DEFAULT_LIMIT,
                 cursor: str | None = None) -> Page:
    """One page of the tenant's items matching ``query``, newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequestError(errors=[FieldError("limit", f"must be 1 to {MAX_LIMIT}")])
    where = _conditions(tenant, query)
    if cursor:
        at, last_id = decode_cursor(cursor)
        # The plain bound on started_at lets every database use its (…, started_at) index.
        where += [col(Item.started_at) <= at,
                  sa.or_(col(Item.started_at) < at, col(Item.id) < last_id)]
    # Find the page's ids first, then read only those rows: filters that the index
    # (tenant, status, started_at, id) answers (status, dates, holds) then scan the index
    # alone instead of reading every skipped row from the table.
    page_ids = (select(Item.id).where(*where).order_by(*_NEWEST_FIRST).limit(limit + 1)
                .scalar_subquery())
    stmt = select(Item).where(col(Item.id).in_(page_ids)).order_by(*_NEWEST_FIRST)
    async with db.reader() as session:
        rows = list((await session.exec(stmt)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1]) if more else None)


async def matching_ids(db: Database, tenant: str, query: ItemQuery, *,
                       max_items: int) -> list[uuid.UUID]:
    """The ids of every match, newest first; more than ``max_items`` is refused (400)."""
    stmt = (select(Item.id).where(*_conditions(tenant, query)).order_by(*_NEWEST_FIRST)
            .limit(max_items + 1))
    async with db.reader() as session:
        ids = list((await session.exec(stmt)).all())
    if len(ids) > max_items:
        raise BadRequestError(errors=[FieldError(
            "query", f"matches more than {max_items} items; narrow it down")])
    return ids


# Filters a query hold may not use: they describe an item's state, not the contact it records.
NOT_FOR_HOLDS = ("status", "held", "case_ref")


async def live_holds_matching(session: Any, item: Item) -> list[uuid.UUID]:
    """The active query holds of the item's tenant whose query the item matches, in one
    round trip. Call inside the transaction that makes the item active, after a flush: a
    query hold is live, so an item that arrives after it is held from the start."""
    holds = [(hold_id, query) for hold_id, query in (await session.exec(
        select(Hold.id, Hold.query).where(Hold.tenant == item.tenant, Hold.status == "active",
                                          col(Hold.query).is_not(None)))).all()
             if query is not None]
    if not holds:
        return []
    checks = [select(sa.literal(n).label("n")).where(
                  col(Item.id) == item.id, *_conditions(item.tenant, parse_query(query)))
              for n, (_, query) in enumerate(holds)]
    matched = (await session.exec(sa.union_all(*checks))).scalars().all()
    return [holds[n][0] for n in sorted(matched)]


async def refresh_held(session: Any, item_ids: Any) -> None:
    """Set ``items.held`` of the items ``item_ids`` (a list of ids or a select of them) from the
    hold tables, in the caller's transaction: call it after any change of hold membership or
    of a hold's status."""
    if isinstance(item_ids, list) and not item_ids:
        return
    await session.exec(sa.update(Item).where(col(Item.id).in_(item_ids))
                       .values(held=under_active_hold()))


async def active_holds_of(db: Database, tenant: str,
                          item_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """The case references of the active holds on each item (every id is a key), in one
    query, sorted."""
    found: dict[uuid.UUID, set[str]] = {i: set() for i in item_ids}
    if not item_ids:
        return {}
    stmt = (select(HoldItem.item_id, Hold.case_ref)
            .join(Hold, col(Hold.id) == col(HoldItem.hold_id))
            .where(col(HoldItem.item_id).in_(list(item_ids)), Hold.tenant == tenant,
                   Hold.status == "active"))
    async with db.reader() as session:
        for item_id, case_ref in (await session.exec(stmt)).all():
            found[item_id].add(case_ref)
    return {i: sorted(refs) for i, refs in found.items()}

