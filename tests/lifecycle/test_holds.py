"""Legal holds in the domain layer: placing by ids and by a live query, adding, releasing,
listing, and what they protect. Runs on SQLite and PostgreSQL."""

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import col, select

from archive.clock import ManualClock
from archive.errors import BadRequestError, ConflictError, NotFoundError
from archive.models import AuditEvent, Channel, Hold, HoldItem, Item, ItemStatus
from archive.search import parse_query, search
from archive.service import Actor, Archive
from archive.tokens import ensure_tenant
from lifecycle import holds
from storage.base import iter_bytes
from tests.archive.test_search import add_item

T = "camden"
CLERK = Actor("token:clerk", "complaints")
INGEST = Actor("token:pbx", "ingest")
REASON = "Mrs Example complains about call handling on 3 Nov; keep for the ombudsman"
NUMBER = "+442079460000"


@pytest.fixture
async def tenants(archive: Archive) -> None:
    async with archive.db.session() as session:
        for t in (T, "barnet"):
            await ensure_tenant(session, t, archive.clock.now())
        await session.commit()


pytestmark = pytest.mark.usefixtures("tenants")


async def put(archive: Archive, tenant: str = T, channel: Channel = Channel.CALL,
              **fields: Any) -> Item:
    return await archive.put(
        tenant=tenant, channel=channel, external_id=f"x-{uuid.uuid4()}",
        started_at=archive.clock.now() - timedelta(minutes=5), media_type="audio/wav",
        chunks=iter_bytes(b"RIFF recording"), actor=INGEST, fields=fields)


async def place(archive: Archive, tenant: str = T, case_ref: str = "CMP-1",
                **kw: Any) -> holds.Placed:
    return await holds.place_hold(archive, tenant=tenant, actor=CLERK, case_ref=case_ref,
                                  reason=REASON, **kw)


async def release(archive: Archive, hold_id: uuid.UUID, tenant: str = T) -> holds.Released:
    return await holds.release_hold(archive, tenant=tenant, actor=CLERK, hold_id=hold_id,
                                    reason="complaint closed")


async def members(archive: Archive, hold_id: uuid.UUID) -> set[uuid.UUID]:
    async with archive.db.reader() as session:
        return set((await session.exec(
            select(HoldItem.item_id).where(HoldItem.hold_id == hold_id))).all())


async def destroyable(archive: Archive, item: Item) -> bool:
    """Whether erasure goes ahead: it destroys the item (so use it last)."""
    try:
        await archive.destroy(item.tenant, item.id, reason="erasure", actor=CLERK)
    except ConflictError as exc:
        assert "legal hold" in str(exc)
        return False
    return True


async def hold_events(archive: Archive) -> list[AuditEvent]:
    async with archive.db.reader() as session:
        return list((await session.exec(
            select(AuditEvent).where(col(AuditEvent.action).startswith("hold."))
            .order_by(col(AuditEvent.seq)))).all())


async def hold_count(archive: Archive) -> int:
    async with archive.db.reader() as session:
        return len((await session.exec(select(Hold.id))).all())


# -- placing by ids ----------------------------------------------------------------------------

async def test_a_hold_on_items_keeps_them_from_destruction(archive: Archive) -> None:
    a, b, free = await put(archive), await put(archive), await put(archive)
    placed = await place(archive, item_ids=[a.id, b.id, a.id])  # a repeated id counts once
    assert placed.item_count == 2 and placed.already_destroyed == []
    hold = placed.hold
    assert (hold.case_ref, hold.reason, hold.status, hold.query) == (
        "CMP-1", REASON, "active", None)
    assert hold.placed_by == CLERK.name and hold.placed_at == archive.clock.now()
    assert await members(archive, hold.id) == {a.id, b.id}
    assert await archive.active_holds(T, a.id) == ["CMP-1"]
    assert not await destroyable(archive, a)
    assert not await destroyable(archive, b)
    assert await destroyable(archive, free)
    [event] = await hold_events(archive)
    assert event.action == "hold.place" and event.actor == CLERK.name
    assert event.detail == {"hold_id": str(hold.id), "case_ref": "CMP-1", "kind": "items",
                            "items": 2, "already_destroyed": 0}


async def test_ids_the_tenant_does_not_have_are_named_and_nothing_is_created(
    archive: Archive,
) -> None:
    mine = await put(archive)
    theirs = await put(archive, tenant="barnet")
    pending = await add_item(archive.db, archive.clock.now(), status=ItemStatus.PENDING)
    with pytest.raises(BadRequestError) as refused:
        await place(archive, item_ids=[mine.id, uuid.uuid4(), theirs.id, pending.id])
    assert [e.field for e in refused.value.errors] == ["item_ids[1]", "item_ids[2]",
                                                       "item_ids[3]"]
    assert await hold_count(archive) == 0
    assert await hold_events(archive) == []
    assert await archive.active_holds(T, mine.id) == []


async def test_destroyed_items_are_reported_not_held(archive: Archive) -> None:
    gone, kept = await put(archive), await put(archive)
    await archive.destroy(T, gone.id, reason="erasure", actor=CLERK)
    placed = await place(archive, item_ids=[gone.id, kept.id])
    assert placed.item_count == 1
    assert placed.already_destroyed == [gone.id]
    assert await members(archive, placed.hold.id) == {kept.id}


@pytest.mark.parametrize(("args", "fields"), [
    ({"case_ref": "", "item_ids": "x"}, ["case_ref"]),
    ({"case_ref": "C" * 101, "item_ids": "x"}, ["case_ref"]),
    ({"case_ref": "CMP\x00-1", "item_ids": "x"}, ["case_ref"]),
    ({"reason": "   ", "item_ids": "x"}, ["reason"]),
    ({"reason": "r" * 2001, "item_ids": "x"}, ["reason"]),
    ({}, ["item_ids"]),
    ({"item_ids": "x", "query": {"agent_id": "a1"}}, ["query"]),
    ({"item_ids": []}, ["item_ids"]),
    ({"query": {}}, ["query"]),
    ({"query": {"agent_id": "  "}}, ["query"]),
    ({"query": {"status": "purged", "agent_id": "a1"}}, ["query.status"]),
    ({"query": {"held": "true", "case_ref": "CMP-9"}}, ["query.held", "query.case_ref"]),
    ({"query": {"colour": "red", "caller_number": "not a number"}},
     ["query.colour", "query.caller_number"]),
    ({"query": {"from": "2026-11-23", "to": "2026-11-01"}}, ["query.to"]),
    ({"case_ref": "", "reason": "", "query": {"limit": "5"}},
     ["case_ref", "reason", "query.limit"]),
])
async def test_bad_holds_name_every_bad_field_and_create_nothing(
    archive: Archive, args: dict[str, Any], fields: list[str]
) -> None:
    item = await put(archive)
    kw: dict[str, Any] = {"case_ref": "CMP-1", "reason": REASON, **args}
    if kw.get("item_ids") == "x":
        kw["item_ids"] = [item.id]
    with pytest.raises(BadRequestError) as refused:
        await holds.place_hold(archive, tenant=T, actor=CLERK, **kw)
    assert sorted(e.field for e in refused.value.errors) == sorted(fields)
    assert await hold_count(archive) == 0


# -- live query holds --------------------------------------------------------------------------

async def test_a_query_hold_holds_matches_now_and_on_arrival_until_released(
    archive: Archive,
) -> None:
    caller = await put(archive, caller_number=NUMBER, agent_id="a1")
    called = await put(archive, caller_number="+447700900123", called_number=NUMBER)
    other = await put(archive, caller_number="+447700900123", agent_id="a1")
    chat = await put(archive, channel=Channel.CHAT, agent_id="a1")
    barnet = await put(archive, tenant="barnet", caller_number=NUMBER)
    query = {"caller_number": "020 7946 0000", "channel": "call"}
    placed = await place(archive, query=query)
    assert placed.item_count == 2 and placed.already_destroyed == []
    assert placed.hold.query == query  # the filters as asked
    assert await members(archive, placed.hold.id) == {caller.id, called.id}

    # Live: a matching item arriving later is held from the moment it is active.
    later = await put(archive, caller_number=NUMBER)
    unrelated = await put(archive, caller_number="+447700900999")
    other_tenant = await put(archive, tenant="barnet", caller_number=NUMBER)
    assert await members(archive, placed.hold.id) == {caller.id, called.id, later.id}
    assert await archive.active_holds(T, later.id) == ["CMP-1"]
    assert await archive.active_holds(T, unrelated.id) == []
    for item in (other, chat, barnet, other_tenant, unrelated):
        assert await destroyable(archive, item)
    assert not await destroyable(archive, later)

    await release(archive, placed.hold.id)
    after = await put(archive, caller_number=NUMBER)
    assert await archive.active_holds(T, after.id) == []
    assert await members(archive, placed.hold.id) == {caller.id, called.id, later.id}
    for item in (caller, called, later, after):
        assert await destroyable(archive, item)
    [event, *_] = await hold_events(archive)
    assert event.detail == {"hold_id": str(placed.hold.id), "case_ref": "CMP-1",
                            "kind": "query", "items": 2, "already_destroyed": 0}


async def test_a_query_hold_on_an_agent_also_holds_their_later_chats(archive: Archive) -> None:
    placed = await place(archive, query={"agent_id": "a7"})
    assert placed.item_count == 0  # nothing yet: still a valid, live hold
    chat = await put(archive, channel=Channel.CHAT, agent_id="a7")
    other = await put(archive, channel=Channel.CHAT, agent_id="a8")
    assert await members(archive, placed.hold.id) == {chat.id}
    assert await archive.active_holds(T, other.id) == []


async def test_an_item_under_two_holds_stays_held_until_both_are_released(
    archive: Archive,
) -> None:
    item = await put(archive, agent_id="a1")
    by_id = await place(archive, case_ref="CMP-1", item_ids=[item.id])
    by_query = await place(archive, case_ref="CMP-2", query={"agent_id": "a1"})
    assert await archive.active_holds(T, item.id) == ["CMP-1", "CMP-2"]
    await release(archive, by_id.hold.id)
    assert await archive.active_holds(T, item.id) == ["CMP-2"]
    page = await search(archive.db, T, parse_query({"held": "true"}))
    assert [i.id for i in page.items] == [item.id]
    assert not await destroyable(archive, item)
    await release(archive, by_query.hold.id)
    assert await archive.active_holds(T, item.id) == []
    page = await search(archive.db, T, parse_query({"held": "true"}))
    assert page.items == []
    assert await destroyable(archive, item)


# -- adding and releasing ----------------------------------------------------------------------

async def test_adding_items_reports_what_was_added_held_or_destroyed(archive: Archive) -> None:
    first, second, gone = await put(archive), await put(archive), await put(archive)
    await archive.destroy(T, gone.id, reason="erasure", actor=CLERK)
    placed = await place(archive, item_ids=[first.id])
    added = await holds.add_items(archive, tenant=T, actor=CLERK, hold_id=placed.hold.id,
                                  item_ids=[first.id, second.id, gone.id, second.id])
    assert (added.added, added.already_held, added.already_destroyed) == (
        [second.id], [first.id], [gone.id])
    assert added.item_count == 2
    assert await members(archive, placed.hold.id) == {first.id, second.id}
    assert not await destroyable(archive, second)
    event = (await hold_events(archive))[-1]
    assert event.action == "hold.add"
    assert event.detail == {"hold_id": str(placed.hold.id), "case_ref": "CMP-1", "added": 1,
                            "already_held": 1, "already_destroyed": 1}

    theirs = await put(archive, tenant="barnet")
    with pytest.raises(BadRequestError) as refused:
        await holds.add_items(archive, tenant=T, actor=CLERK, hold_id=placed.hold.id,
                              item_ids=[second.id, theirs.id])
    assert [e.field for e in refused.value.errors] == ["item_ids[1]"]
    with pytest.raises(BadRequestError) as empty:
        await holds.add_items(archive, tenant=T, actor=CLERK, hold_id=placed.hold.id,
                              item_ids=[])
    assert [e.field for e in empty.value.errors] == ["item_ids"]
    with pytest.raises(NotFoundError):  # another tenant's hold is no hold
        await holds.add_items(archive, tenant="barnet", actor=CLERK, hold_id=placed.hold.id,
                              item_ids=[theirs.id])
    await release(archive, placed.hold.id)
    with pytest.raises(ConflictError):
        await holds.add_items(archive, tenant=T, actor=CLERK, hold_id=placed.hold.id,
                              item_ids=[second.id])
    assert await members(archive, placed.hold.id) == {first.id, second.id}


async def test_release_needs_a_reason_and_happens_once(archive: Archive,
                                                       clock: ManualClock) -> None:
    item = await put(archive)
    placed = await place(archive, item_ids=[item.id])
    with pytest.raises(BadRequestError) as refused:
        await holds.release_hold(archive, tenant=T, actor=CLERK, hold_id=placed.hold.id,
                                 reason=" ")
    assert [e.field for e in refused.value.errors] == ["reason"]
    with pytest.raises(NotFoundError):
        await holds.release_hold(archive, tenant="barnet", actor=CLERK,
                                 hold_id=placed.hold.id, reason="not ours")
    with pytest.raises(NotFoundError):
        await release(archive, uuid.uuid4())
    assert await archive.active_holds(T, item.id) == ["CMP-1"]

    clock.advance(timedelta(days=3))
    released = await release(archive, placed.hold.id)
    hold = released.hold
    assert released.item_count == 1
    assert (hold.status, hold.released_by, hold.release_reason) == (
        "released", CLERK.name, "complaint closed")
    assert hold.released_at == archive.clock.now()
    with pytest.raises(ConflictError):
        await release(archive, placed.hold.id)
    event = (await hold_events(archive))[-1]
    assert event.action == "hold.release"
    assert event.detail == {"hold_id": str(hold.id), "case_ref": "CMP-1", "items": 1}


async def test_audit_events_hold_neither_reasons_nor_filter_values(archive: Archive) -> None:
    item = await put(archive, caller_number=NUMBER)
    placed = await place(archive, query={"caller_number": NUMBER, "email": "ann@example.org"})
    await holds.add_items(archive, tenant=T, actor=CLERK, hold_id=placed.hold.id,
                          item_ids=[item.id])
    await holds.release_hold(archive, tenant=T, actor=CLERK, hold_id=placed.hold.id,
                             reason="Ombudsman closed the case of Mrs Example")
    events = await hold_events(archive)
    assert [e.action for e in events] == ["hold.place", "hold.add", "hold.release"]
    text = json.dumps([e.detail for e in events])
    for secret in ("Example", "ombudsman", "Ombudsman", NUMBER, "2079460000", "7946 0000", "ann@"):
        assert secret not in text


# -- listing and reading -----------------------------------------------------------------------

async def test_holds_are_listed_newest_first_filtered_and_paged(archive: Archive,
                                                                clock: ManualClock) -> None:
    item = await put(archive)
    placed = []
    for case in ["CMP-1", "CMP-2", "CMP-1"]:
        clock.advance(timedelta(minutes=1))
        placed.append(await place(archive, case_ref=case, item_ids=[item.id]))
    await release(archive, placed[0].hold.id)
    other = await place(archive, tenant="barnet", item_ids=[(await put(
        archive, tenant="barnet")).id])

    page = await holds.list_holds(archive, T)
    assert [h.id for h, _ in page.holds] == [p.hold.id for p in reversed(placed)]
    assert [n for _, n in page.holds] == [1, 1, 1]
    assert other.hold.id not in [h.id for h, _ in page.holds]
    active = await holds.list_holds(archive, T, status="active")
    assert [h.id for h, _ in active.holds] == [placed[2].hold.id, placed[1].hold.id]
    released = await holds.list_holds(archive, T, status="released", case_ref="CMP-1")
    assert [h.id for h, _ in released.holds] == [placed[0].hold.id]

    first = await holds.list_holds(archive, T, limit=2)
    assert len(first.holds) == 2 and first.next_cursor is not None
    rest = await holds.list_holds(archive, T, limit=2, cursor=first.next_cursor)
    assert [h.id for h, _ in rest.holds] == [placed[0].hold.id] and rest.next_cursor is None

    with pytest.raises(BadRequestError) as refused:
        await holds.list_holds(archive, T, status="open", limit=0, cursor="nope")
    assert sorted(e.field for e in refused.value.errors) == ["cursor", "limit", "status"]
    with pytest.raises(BadRequestError):  # another tenant's hold is no cursor
        await holds.list_holds(archive, T, cursor=str(other.hold.id))


async def test_a_hold_is_read_with_a_page_of_its_items(archive: Archive) -> None:
    items = [await put(archive) for _ in range(5)]
    placed = await place(archive, item_ids=[i.id for i in items])
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        detail = await holds.get_hold(archive, T, placed.hold.id, limit=2, cursor=cursor)
        assert detail.item_count == 5 and detail.hold.id == placed.hold.id
        seen += [i.id for i in detail.items]
        cursor = detail.next_cursor
        if cursor is None:
            break
    assert seen == sorted(i.id for i in items)
    with pytest.raises(NotFoundError):
        await holds.get_hold(archive, "barnet", placed.hold.id)
    with pytest.raises(BadRequestError):
        await holds.get_hold(archive, T, placed.hold.id, limit=501)
    with pytest.raises(BadRequestError):
        await holds.get_hold(archive, T, placed.hold.id, cursor="not-an-id")


# -- races -------------------------------------------------------------------------------------

async def test_a_hold_racing_an_erasure_keeps_the_item_or_is_told_it_was_destroyed(
    archive: Archive,
) -> None:
    """Whichever commits first wins; never an item destroyed while held."""
    outcomes = set()
    for round_ in range(6):
        item = await put(archive, agent_id=f"r{round_}")
        by_query = round_ % 2 == 1
        selector: dict[str, Any] = ({"query": {"agent_id": f"r{round_}"}} if by_query
                                    else {"item_ids": [item.id]})
        placed, erased = await asyncio.gather(
            place(archive, **selector),
            archive.destroy(T, item.id, reason="erasure", actor=CLERK),
            return_exceptions=True)
        assert isinstance(placed, holds.Placed), placed
        async with archive.db.reader() as session:
            row = await session.get(Item, item.id)
        assert row is not None
        if isinstance(erased, ConflictError):
            outcomes.add("held")
            assert row.status == "active" and row.wrapped_key is not None
            assert placed.item_count == 1 and placed.already_destroyed == []
            assert await members(archive, placed.hold.id) == {item.id}
        else:
            assert not isinstance(erased, BaseException), erased
            outcomes.add("destroyed")
            assert row.status == "erased" and row.wrapped_key is None
            assert placed.item_count == 0
            assert placed.already_destroyed == ([] if by_query else [item.id])
            assert await members(archive, placed.hold.id) == set()
    assert outcomes  # (which ones occur depends on scheduling)


async def test_a_query_hold_and_an_arriving_item_never_miss_each_other(
    archive: Archive,
) -> None:
    for round_ in range(4):
        agent = f"live{round_}"
        placed, item = await asyncio.gather(
            place(archive, query={"agent_id": agent}), put(archive, agent_id=agent))
        assert isinstance(item, Item)
        assert await archive.active_holds(T, item.id) == ["CMP-1"], round_
        assert await members(archive, placed.hold.id) == {item.id}
