"""Legal holds: place, extend, release, list and read them; keep S3 Object Lock in step.

While a hold is active none of its items may be destroyed (``Archive.destroy`` and the purge
worker check ``hold_items`` inside the transaction that would destroy). An item may sit under
several holds and stays held until the last one is released.

A hold selects items by id or by a search ``query`` (the filters of ``GET /v1/items``). A query
hold is live: it takes every matching item at once, with one ``INSERT ... SELECT``, and the
Archive adds items that arrive later while it is active (``archive.search.live_holds_matching``).
Placing a hold takes the tenant's lock exclusively (``archive.db.tenant_lock``) and an item's
activation takes it shared, so a new query hold and an arriving item never miss each other.

Races with destruction: placing a hold locks the rows of the items it takes (``FOR UPDATE`` on
PostgreSQL; SQLite's single writer does the same), as destruction does. Either the hold commits
first and the destruction, re-checking holds, is refused; or the destruction commits first and
the hold sees the item destroyed, leaves it out and reports it in ``already_destroyed``.

Object Lock: the index is the authority and protects an item from the moment the hold commits.
After the commit, the store's legal hold is set on the objects of newly held items, and cleared
on the objects of items that a release left under no active hold. Store failures are logged and
left to the reconciler (``lifecycle/reconcile.py``), which repairs any drift.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from archive import audit
from archive.db import tenant_lock
from archive.errors import (
    ArchiveError,
    BadRequestError,
    ConflictError,
    FieldError,
    NotFoundError,
)
from archive.ids import uuid7
from archive.models import Hold, HoldItem, Item, ItemStatus
from archive.search import NOT_FOR_HOLDS, _conditions, parse_query, refresh_held
from archive.service import Actor, Archive, object_keys, translate_storage_error
from storage.errors import StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

ACTIVE = "active"
RELEASED = "released"
STATUSES = (ACTIVE, RELEASED)
MAX_CASE_REF = 100
MAX_REASON = 2000
MAX_ITEM_IDS = 10_000  # per request; a query hold has no limit
MAX_PAGE = 500
DEFAULT_ITEMS_PAGE = 100
DEFAULT_HOLDS_PAGE = 100
LOCK_CONCURRENCY = 8  # store calls in flight while setting or clearing object locks
_BATCH = 500  # items read at a time after a commit
_IN_CHUNK = 1000  # ids per IN (...) list: well inside every driver's parameter limit


@dataclass(frozen=True)
class Placed:
    """A hold just placed: how many items it holds, and the ids asked for that were already
    destroyed (left out)."""

    hold: Hold
    item_count: int
    already_destroyed: list[uuid.UUID]


@dataclass(frozen=True)
class Added:
    """The outcome of adding items to a hold, each id asked for in exactly one list."""

    hold: Hold
    added: list[uuid.UUID]
    already_held: list[uuid.UUID]
    already_destroyed: list[uuid.UUID]
    item_count: int


@dataclass(frozen=True)
class Released:
    """A hold just released, and how many items it held."""

    hold: Hold
    item_count: int


@dataclass(frozen=True)
class HoldPage:
    """A page of holds, newest first, each with its item count."""

    holds: list[tuple[Hold, int]]
    next_cursor: str | None


@dataclass(frozen=True)
class HoldDetail:
    """One hold, its item count and a page of its items in id order."""

    hold: Hold
    item_count: int
    items: list[Item]
    next_cursor: str | None


# -- checking input ---------------------------------------------------------------------------

def _text_errors(field: str, value: str | None, limit: int, *, lines: bool) -> list[FieldError]:
    """1..limit characters once stripped; no control characters (newlines and tabs allowed
    where ``lines``)."""
    text = (value or "").strip()
    if not text:
        return [FieldError(field, "is required")]
    if len(text) > limit:
        return [FieldError(field, f"must be at most {limit} characters")]
    allowed = {"\n", "\r", "\t"} if lines else set()
    if any(not ch.isprintable() and ch not in allowed for ch in text):
        return [FieldError(field, "must not contain control characters")]
    return []


def check_reason(reason: str | None, field: str = "reason") -> list[FieldError]:
    return _text_errors(field, reason, MAX_REASON, lines=True)


def check_item_ids(item_ids: Sequence[uuid.UUID], field: str = "item_ids") -> list[FieldError]:
    if not item_ids:
        return [FieldError(field, "must list at least one item id")]
    if len(item_ids) > MAX_ITEM_IDS:
        return [FieldError(field, f"must list at most {MAX_ITEM_IDS} item ids; hold more "
                                  "with a query, or add them in several requests")]
    return []


def check_query(query: Mapping[str, Any]) -> list[FieldError]:
    """What is wrong with a hold's query: filters a hold may not use, unknown filters, bad
    values, or no filter at all (each named ``query.<filter>``)."""
    errors = [FieldError(f"query.{name}", "may not be used in a hold: a hold selects contacts, "
                                          "not their current state")
              for name in NOT_FOR_HOLDS if name in query]
    try:
        parsed = parse_query({k: v for k, v in query.items() if k not in NOT_FOR_HOLDS})
    except BadRequestError as exc:
        return errors + [FieldError(f"query.{e.field}", e.message) for e in exc.errors]
    if not errors and not parsed.filter_names():
        errors.append(FieldError("query", "must set at least one filter"))
    return errors


def check_placement(case_ref: str | None, reason: str | None,
                    item_ids: Sequence[uuid.UUID] | None,
                    query: Mapping[str, Any] | None) -> list[FieldError]:
    """Every error that can be found without the index, each naming its field."""
    errors = _text_errors("case_ref", case_ref, MAX_CASE_REF, lines=False)
    errors += check_reason(reason)
    if item_ids is None and query is None:
        errors.append(FieldError("item_ids", "give exactly one of item_ids and query"))
    elif item_ids is not None and query is not None:
        errors.append(FieldError("query", "cannot be given with item_ids: give one of them"))
    elif item_ids is not None:
        errors += check_item_ids(item_ids)
    else:
        assert query is not None
        errors += check_query(query)
    return errors


def _unique(ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    return list(dict.fromkeys(ids))


def _chunks(ids: Sequence[uuid.UUID]) -> Iterable[Sequence[uuid.UUID]]:
    return (ids[i:i + _IN_CHUNK] for i in range(0, len(ids), _IN_CHUNK))


# -- placing and extending ---------------------------------------------------------------------

async def _lock_items(session: AsyncSession, tenant: str,
                      item_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, bool]:
    """Lock the rows of the tenant's (non-pending) items among ``item_ids``, in id order, and
    say of each whether it was already destroyed (its wrapped key is gone)."""
    found: dict[uuid.UUID, bool] = {}
    for chunk in _chunks(sorted(item_ids)):
        rows = await session.exec(
            select(col(Item.id), col(Item.wrapped_key).is_(None))
            .where(col(Item.id).in_(chunk), col(Item.tenant) == tenant,
                   col(Item.status) != ItemStatus.PENDING.value)
            .order_by(col(Item.id)).with_for_update())
        found.update({item_id: bool(destroyed) for item_id, destroyed in rows.all()})
    return found


def _unknown(item_ids: Sequence[uuid.UUID], found: Mapping[uuid.UUID, bool]) -> None:
    """Refuse ids the tenant does not have (another tenant's look like none)."""
    errors = [FieldError(f"item_ids[{n}]", "is not an item of this tenant")
              for n, item_id in enumerate(item_ids) if item_id not in found]
    if errors:
        raise BadRequestError("some item ids are not items of this tenant", errors=errors)


def _members_of(hold_id: uuid.UUID) -> Any:
    """The ids of a hold's items, as a subquery."""
    return select(HoldItem.item_id).where(HoldItem.hold_id == hold_id)


async def _insert_members(session: AsyncSession, hold_id: uuid.UUID,
                          item_ids: Sequence[uuid.UUID], actor: Actor, now: Any) -> None:
    if item_ids:
        await session.exec(sa.insert(HoldItem), params=[
            {"hold_id": hold_id, "item_id": i, "added_by": actor.name, "added_at": now}
            for i in item_ids])


async def _insert_matching(session: AsyncSession, hold: Hold, query: Mapping[str, Any],
                           actor: Actor) -> int:
    """Add every item the query matches now, in one statement; lock their rows as it reads
    them (PostgreSQL re-checks a row that a concurrent destruction changed, and skips it)."""
    table = HoldItem.__table__.c  # type: ignore[attr-defined]  # SQLModel declares no stub
    matching = (sa.select(sa.literal(hold.id, table.hold_id.type), col(Item.id),
                          sa.literal(actor.name, table.added_by.type),
                          sa.literal(hold.placed_at, table.added_at.type))
                .where(*_conditions(hold.tenant, parse_query(query)),
                       col(Item.wrapped_key).is_not(None))
                .with_for_update())
    result = await session.exec(
        sa.insert(HoldItem).from_select(["hold_id", "item_id", "added_by", "added_at"],
                                        matching))
    return result.rowcount


async def place_hold(
    archive: Archive, *, tenant: str, actor: Actor, case_ref: str, reason: str,
    item_ids: Sequence[uuid.UUID] | None = None, query: Mapping[str, Any] | None = None,
) -> Placed:
    """Place a hold on the items named by ``item_ids`` or matched by ``query`` (and, for a
    query, on every matching item that arrives while the hold is active).

    Raises ``BadRequestError`` naming every bad field; ids the tenant does not have (unknown,
    another tenant's, pending) are named ``item_ids[n]`` and nothing is created. Items already
    destroyed are left out and listed in ``already_destroyed``.
    """
    errors = check_placement(case_ref, reason, item_ids, query)
    if errors:
        raise BadRequestError("the hold has errors", errors=errors)
    now = archive.clock.now()
    hold = Hold(id=uuid7(), tenant=tenant, case_ref=case_ref.strip(), reason=reason.strip(),
                query=dict(query) if query is not None else None, status=ACTIVE,
                placed_by=actor.name, placed_at=now)
    destroyed: list[uuid.UUID] = []
    async with archive.db.session() as session:
        await tenant_lock(session, tenant, exclusive=True)
        # An item-list hold's query is SQL NULL, which the live-hold lookup skips (the ORM
        # would write the JSON value null, which is not NULL).
        await session.exec(sa.insert(Hold).values(
            {**hold.model_dump(), "query": hold.query if hold.query is not None else sa.null()}))
        if item_ids is not None:
            wanted = _unique(item_ids)
            found = await _lock_items(session, tenant, wanted)
            _unknown(item_ids, found)
            destroyed = [i for i in wanted if found[i]]
            held = [i for i in wanted if not found[i]]
            await _insert_members(session, hold.id, held, actor, now)
            count = len(held)
        else:
            assert query is not None
            count = await _insert_matching(session, hold, query, actor)
        await refresh_held(session, _members_of(hold.id))
        await audit.append(session, tenant=tenant, at=now, actor=actor.name, role=actor.role,
                           action="hold.place",
                           detail={"hold_id": str(hold.id), "case_ref": hold.case_ref,
                                   "kind": "items" if item_ids is not None else "query",
                                   "items": count, "already_destroyed": len(destroyed)})
        await session.commit()
    log.info("hold %s placed on %d items", hold.id, count)
    await _settle_members(archive, hold.id, None)
    return Placed(hold, count, destroyed)


async def _hold_for_update(session: AsyncSession, tenant: str, hold_id: uuid.UUID) -> Hold:
    hold = (await session.exec(select(Hold).where(Hold.id == hold_id, Hold.tenant == tenant)
                               .with_for_update())).first()
    if hold is None:
        raise NotFoundError(f"no hold {hold_id}")
    return hold


async def add_items(archive: Archive, *, tenant: str, actor: Actor, hold_id: uuid.UUID,
                    item_ids: Sequence[uuid.UUID]) -> Added:
    """Add items to an active hold (``ConflictError`` once released); validated as when
    placing one."""
    errors = check_item_ids(item_ids)
    if errors:
        raise BadRequestError("the items have errors", errors=errors)
    now = archive.clock.now()
    wanted = _unique(item_ids)
    async with archive.db.session() as session:
        await tenant_lock(session, tenant, exclusive=True)
        hold = await _hold_for_update(session, tenant, hold_id)
        if hold.status != ACTIVE:
            raise ConflictError(f"hold {hold_id} was released; place a new hold")
        found = await _lock_items(session, tenant, wanted)
        _unknown(item_ids, found)
        members: set[uuid.UUID] = set()
        for chunk in _chunks(wanted):
            members.update((await session.exec(
                select(HoldItem.item_id).where(HoldItem.hold_id == hold_id,
                                               col(HoldItem.item_id).in_(chunk)))).all())
        already_held = [i for i in wanted if i in members]
        destroyed = [i for i in wanted if found[i] and i not in members]
        added = [i for i in wanted if not found[i] and i not in members]
        await _insert_members(session, hold.id, added, actor, now)
        for chunk in _chunks(added):
            await refresh_held(session, list(chunk))
        await audit.append(session, tenant=tenant, at=now, actor=actor.name, role=actor.role,
                           action="hold.add",
                           detail={"hold_id": str(hold.id), "case_ref": hold.case_ref,
                                   "added": len(added), "already_held": len(already_held),
                                   "already_destroyed": len(destroyed)})
        count = await _count(session, hold.id)
        await session.commit()
    await _settle_members(archive, hold.id, added)
    return Added(hold, added, already_held, destroyed, count)


async def release_hold(archive: Archive, *, tenant: str, actor: Actor, hold_id: uuid.UUID,
                       reason: str) -> Released:
    """Release an active hold (``ConflictError`` if already released). Its items stay held
    by any other active hold; the rest may be destroyed from now on."""
    errors = check_reason(reason)
    if errors:
        raise BadRequestError("the release has errors", errors=errors)
    now = archive.clock.now()
    async with archive.db.session() as session:
        hold = await _hold_for_update(session, tenant, hold_id)
        if hold.status != ACTIVE:
            raise ConflictError(f"hold {hold_id} was already released")
        hold.status = RELEASED
        hold.released_by, hold.released_at = actor.name, now
        hold.release_reason = reason.strip()
        session.add(hold)
        await session.flush()
        await refresh_held(session, _members_of(hold.id))
        count = await _count(session, hold.id)
        await audit.append(session, tenant=tenant, at=now, actor=actor.name, role=actor.role,
                           action="hold.release",
                           detail={"hold_id": str(hold.id), "case_ref": hold.case_ref,
                                   "items": count})
        await session.commit()
    log.info("hold %s released (%d items)", hold.id, count)
    await _settle_members(archive, hold.id, None, locked=True)
    return Released(hold, count)


# -- reading -----------------------------------------------------------------------------------

async def _count(session: AsyncSession, hold_id: uuid.UUID) -> int:
    stmt = select(sa.func.count()).select_from(HoldItem).where(HoldItem.hold_id == hold_id)
    return int((await session.exec(stmt)).one())


def _limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequestError(errors=[FieldError("limit", f"must be 1 to {MAX_PAGE}")])


def _bad_cursor() -> BadRequestError:
    return BadRequestError("the cursor is not valid", errors=[
        FieldError("cursor", "is not a cursor from a previous page")])


def check_list_filters(status: str | None, case_ref: str | None, limit: int,
                       cursor: str | None) -> list[FieldError]:
    errors = []
    if status is not None and status not in STATUSES:
        errors.append(FieldError("status", f"must be one of {', '.join(STATUSES)}"))
    if case_ref is not None:
        errors += _text_errors("case_ref", case_ref, MAX_CASE_REF, lines=False)
    if not 1 <= limit <= MAX_PAGE:
        errors.append(FieldError("limit", f"must be 1 to {MAX_PAGE}"))
    if cursor and _parse_id(cursor) is None:
        errors.append(FieldError("cursor", "is not a cursor from a previous page"))
    return errors


async def list_holds(archive: Archive, tenant: str, *, status: str | None = None,
                     case_ref: str | None = None, limit: int = DEFAULT_HOLDS_PAGE,
                     cursor: str | None = None) -> HoldPage:
    """The tenant's holds, newest first, optionally only active or released ones, or those
    of one case. The cursor is the id of the last hold of the previous page."""
    errors = check_list_filters(status, case_ref, limit, cursor)
    if errors:
        raise BadRequestError("the hold filters have errors", errors=errors)
    after = _parse_id(cursor) if cursor else None
    where: list[Any] = [Hold.tenant == tenant]
    if status is not None:
        where.append(Hold.status == status)
    if case_ref is not None:
        where.append(Hold.case_ref == case_ref.strip())
    async with archive.db.reader() as session:
        if after is not None:
            last = (await session.exec(select(Hold).where(Hold.id == after,
                                                          Hold.tenant == tenant))).first()
            if last is None:
                raise _bad_cursor()
            where.append(sa.or_(col(Hold.placed_at) < last.placed_at,
                                sa.and_(col(Hold.placed_at) == last.placed_at,
                                        col(Hold.id) < last.id)))
        holds = list((await session.exec(
            select(Hold).where(*where)
            .order_by(col(Hold.placed_at).desc(), col(Hold.id).desc()).limit(limit + 1))).all())
        more = len(holds) > limit
        holds = holds[:limit]
        counts: dict[uuid.UUID, int] = {}
        if holds:
            rows = await session.exec(
                select(col(HoldItem.hold_id), sa.func.count())
                .where(col(HoldItem.hold_id).in_([h.id for h in holds]))
                .group_by(col(HoldItem.hold_id)))
            counts = {hold_id: int(n) for hold_id, n in rows.all()}
    return HoldPage([(h, counts.get(h.id, 0)) for h in holds],
                    str(holds[-1].id) if more else None)


def _parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def get_hold(archive: Archive, tenant: str, hold_id: uuid.UUID, *,
                   limit: int = DEFAULT_ITEMS_PAGE, cursor: str | None = None) -> HoldDetail:
    """A hold of the tenant (``NotFoundError`` for another tenant's), its item count and a
    page of its items by id; the cursor is the last item id of the previous page."""
    _limit(limit)
    after = _parse_id(cursor) if cursor else None
    if cursor and after is None:
        raise _bad_cursor()
    async with archive.db.reader() as session:
        hold = (await session.exec(select(Hold).where(Hold.id == hold_id,
                                                      Hold.tenant == tenant))).first()
        if hold is None:
            raise NotFoundError(f"no hold {hold_id}")
        count = await _count(session, hold_id)
        stmt = (select(Item).join(HoldItem, col(HoldItem.item_id) == col(Item.id))
                .where(HoldItem.hold_id == hold_id))
        if after is not None:
            stmt = stmt.where(col(Item.id) > after)
        items = list((await session.exec(stmt.order_by(col(Item.id)).limit(limit + 1))).all())
    more = len(items) > limit
    items = items[:limit]
    return HoldDetail(hold, count, items, str(items[-1].id) if more else None)


async def is_held(session: AsyncSession, item_id: uuid.UUID) -> bool:
    """Whether the item is under at least one active hold."""
    stmt = (select(HoldItem.item_id).join(Hold, col(Hold.id) == col(HoldItem.hold_id))
            .where(HoldItem.item_id == item_id, Hold.status == ACTIVE).limit(1))
    return (await session.exec(stmt)).first() is not None


def held_ids() -> Any:
    """The ids of every item under an active hold, as a subquery: selects held items by
    membership, without visiting every item."""
    return (select(HoldItem.item_id).join(Hold, col(Hold.id) == col(HoldItem.hold_id))
            .where(Hold.status == ACTIVE))


# -- object-level legal holds ------------------------------------------------------------------

async def for_each(items: Sequence[T], work: Callable[[T], Awaitable[None]],
                   concurrency: int = LOCK_CONCURRENCY) -> None:
    """Run ``work`` on every item, at most ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> None:
        async with gate:
            await work(item)

    await asyncio.gather(*(one(i) for i in items))


async def settle_object_lock(archive: Archive, item: Item) -> bool | None:
    """Make the store's legal hold on the item's objects follow the index: on while the item
    is under an active hold, off otherwise (and for a destroyed item, off on whatever of its
    objects is left). Return the state set, or ``None`` when ``items.object_lock`` already
    agreed and nothing was done.

    The index is read again after the change: a hold placed or released meanwhile, whose
    own settling read the flag before this one changed it, would otherwise be missed. Store
    errors are raised (as archive errors) for the caller to count or log.
    """
    if not archive.store.supports_legal_hold:
        return None
    async with archive.db.reader() as session:
        want = await is_held(session, item.id) and item.wrapped_key is not None
    if item.object_lock == want:
        return None
    await _apply(archive, item, want)
    async with archive.db.reader() as session:
        now_wanted = await is_held(session, item.id) and item.wrapped_key is not None
    if now_wanted != want:
        await _apply(archive, item, now_wanted)
        return now_wanted
    return want


async def _apply(archive: Archive, item: Item, on: bool) -> None:
    if item.wrapped_key is not None:
        await archive.set_object_lock(item, on)
        return
    await clear_destroyed(archive, item)


async def clear_destroyed(archive: Archive, item: Item) -> None:
    """A destroyed item keeps no lock: clear it from any of its objects still in the store
    (so the deletion queued for them can succeed), then reset ``items.object_lock``."""
    if item.object_key is not None:
        try:
            for key in object_keys(item):
                info = await archive.store.stat(key)
                if info is not None and info.legal_hold:
                    await archive.store.set_legal_hold(key, False)
        except StorageError as exc:
            raise translate_storage_error(exc) from exc
    await set_lock_flag(archive, item, False)


async def set_lock_flag(archive: Archive, item: Item, on: bool) -> None:
    """Record in the index whether the item's objects carry the store's legal hold."""
    async with archive.db.session() as session:
        await session.exec(sa.update(Item).where(col(Item.id) == item.id)
                           .values(object_lock=on))
        await session.commit()
    item.object_lock = on


async def _members(archive: Archive, hold_id: uuid.UUID, only: Sequence[uuid.UUID] | None,
                   locked: bool) -> AsyncIterator[list[Item]]:
    """Batches of the hold's items whose ``object_lock`` is ``locked`` (among ``only``)."""
    base = (select(Item).join(HoldItem, col(HoldItem.item_id) == col(Item.id))
            .where(HoldItem.hold_id == hold_id, Item.object_lock == locked)
            .order_by(col(Item.id)))
    if only is not None:
        for chunk in _chunks(sorted(only)):
            async with archive.db.reader() as session:
                yield list((await session.exec(base.where(col(Item.id).in_(chunk)))).all())
        return
    last: uuid.UUID | None = None
    while True:
        stmt = base if last is None else base.where(col(Item.id) > last)
        async with archive.db.reader() as session:
            batch = list((await session.exec(stmt.limit(_BATCH))).all())
        yield batch
        if len(batch) < _BATCH:
            return
        last = batch[-1].id


async def _settle_members(archive: Archive, hold_id: uuid.UUID,
                          only: Sequence[uuid.UUID] | None, *, locked: bool = False) -> None:
    """After a hold's commit: settle the object locks of its members (``only`` those ids,
    if given) whose flag may now be wrong: unlocked ones after a placement or an addition,
    locked ones (``locked``) after a release. Failures are logged for the reconciler."""
    if not archive.store.supports_legal_hold:
        return
    changed = failed = 0

    async def settle(item: Item) -> None:
        nonlocal changed, failed
        try:
            if await settle_object_lock(archive, item) is not None:
                changed += 1
        except ArchiveError:
            failed += 1

    async for batch in _members(archive, hold_id, only, locked):
        await for_each(batch, settle)
    if failed:
        log.warning("object locks of %d items of hold %s not settled; the reconciler will",
                    failed, hold_id)
    elif changed:
        log.info("object locks of %d items of hold %s settled", changed, hold_id)
