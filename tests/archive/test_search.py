"""Search: every filter alone and combined, keyset paging while items arrive, holds, and
the parsing of what users type. Runs on SQLite and PostgreSQL."""

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive.db import Database
from archive.errors import BadRequestError
from archive.ids import uuid7
from archive.models import Channel, Hold, HoldItem, Item, ItemStatus, Tenant
from archive.search import (
    ItemQuery,
    Page,
    active_holds_of,
    matching_ids,
    parse_query,
    refresh_held,
    search,
)
from tests.conftest import START

T = "camden"


async def add_tenant(db: Database, tenant: str = T) -> None:
    async with db.session() as session:
        if await session.get(Tenant, tenant) is None:
            session.add(Tenant(id=tenant, name=tenant, created_at=START))
            await session.commit()


async def add_item(db: Database, started_at: datetime, *, tenant: str = T,
                   channel: Channel = Channel.CALL, status: ItemStatus = ItemStatus.ACTIVE,
                   item_id: uuid.UUID | None = None, **fields: Any) -> Item:
    item = Item(id=item_id or uuid7(), tenant=tenant, channel=channel.value,
                external_id=f"x-{uuid.uuid4()}", status=status.value, started_at=started_at,
                created_at=START, updated_at=START, **fields)
    async with db.session() as session:
        session.add(item)
        await session.commit()
    return item


async def add_hold(db: Database, case_ref: str, items: list[Item], *, tenant: str = T,
                   status: str = "active") -> None:
    hold = Hold(id=uuid7(), tenant=tenant, case_ref=case_ref, reason="complaint",
                status=status, placed_by="t", placed_at=START)
    async with db.session() as session:
        session.add(hold)
        await session.flush()
        for item in items:
            session.add(HoldItem(hold_id=hold.id, item_id=item.id, added_by="t",
                                 added_at=START))
        await session.flush()
        await refresh_held(session, [i.id for i in items])
        await session.commit()


async def ids(db: Database, query: ItemQuery, tenant: str = T) -> list[uuid.UUID]:
    page = await search(db, tenant, query, limit=500)
    assert page.next_cursor is None
    return [i.id for i in page.items]


def q(**params: Any) -> ItemQuery:
    return parse_query(params)


@pytest.fixture
async def corpus(db: Database) -> dict[str, Item]:
    """A small tenant: calls and chats with distinct metadata, an hour apart, newest last."""
    await add_tenant(db)
    await add_tenant(db, "barnet")
    at = iter(START - timedelta(hours=h) for h in range(20, 0, -1))
    items = {
        "call_in": await add_item(db, next(at), caller_number="+442079460000",
                                  called_number="+442079460999", agent_id="a1",
                                  service="housing"),
        "call_out": await add_item(db, next(at), caller_number="+442079460999",
                                   called_number="+442079460000", agent_id="a2",
                                   service="council-tax"),
        "call_other": await add_item(db, next(at), caller_number="+447700900123",
                                     called_number="+442079460999", agent_id="a1",
                                     service="council-tax"),
        "chat_ann": await add_item(db, next(at), channel=Channel.CHAT,
                                   customer_name="Ann O'Neill", customer_name_key="ann o'neill",
                                   customer_email="ann@example.org",
                                   customer_postcode="SW1A 1AA", agent_id="a2",
                                   service="housing"),
        "chat_bob": await add_item(db, next(at), channel=Channel.CHAT, customer_name="Bob",
                                   customer_name_key="bob", customer_email="bob@example.org",
                                   customer_postcode="N1 9GU", agent_id="a1",
                                   service="housing"),
        "erased": await add_item(db, next(at), status=ItemStatus.ERASED, agent_id="a1"),
        "pending": await add_item(db, next(at), status=ItemStatus.PENDING,
                                  caller_number="+442079460000", agent_id="a1"),
        "barnet": await add_item(db, next(at), tenant="barnet",
                                 caller_number="+442079460000", agent_id="a1",
                                 customer_email="ann@example.org", service="housing"),
    }
    await add_hold(db, "CMP-1", [items["call_in"], items["chat_ann"]])
    await add_hold(db, "CMP-2", [items["call_in"]])
    await add_hold(db, "CMP-OLD", [items["call_other"]], status="released")
    await add_hold(db, "CMP-1", [items["barnet"]], tenant="barnet")
    return items


def newest_first(corpus: dict[str, Item], *names: str) -> list[uuid.UUID]:
    chosen = sorted((corpus[n] for n in names), key=lambda i: (i.started_at, i.id), reverse=True)
    return [i.id for i in chosen]


ACTIVE_CAMDEN = ("call_in", "call_out", "call_other", "chat_ann", "chat_bob")


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ACTIVE_CAMDEN),
    # National notation finds the number on either side of the call.
    ({"caller_number": "020 7946 0000"}, ("call_in", "call_out")),
    ({"caller_number": "+44 (0)20 7946 0999"}, ("call_in", "call_out", "call_other")),
    ({"caller_number": "07700 900123"}, ("call_other",)),
    ({"email": "ANN@Example.org"}, ("chat_ann",)),
    ({"postcode": "sw1a1aa"}, ("chat_ann",)),
    ({"postcode": " n1 9gu "}, ("chat_bob",)),
    ({"name": "ANN O'NEILL"}, ("chat_ann",)),
    ({"name": "ann"}, ()),  # exact, not a prefix
    ({"agent_id": "a1"}, ("call_in", "call_other", "chat_bob")),
    ({"service": "council-tax"}, ("call_out", "call_other")),
    ({"channel": "chat"}, ("chat_ann", "chat_bob")),
    ({"channel": "call"}, ("call_in", "call_out", "call_other")),
    ({"status": "erased"}, ("erased",)),
    ({"status": "purged"}, ()),
    ({"held": "true"}, ("call_in", "chat_ann")),  # a released hold does not count
    ({"held": False}, ("call_out", "call_other", "chat_bob")),
    ({"case_ref": "CMP-1"}, ("call_in", "chat_ann")),
    ({"case_ref": "CMP-2"}, ("call_in",)),
    ({"case_ref": "CMP-OLD"}, ()),
    # Combinations: every filter must match.
    ({"agent_id": "a1", "service": "housing"}, ("call_in", "chat_bob")),
    ({"agent_id": "a1", "channel": "call", "held": "false"}, ("call_other",)),
    ({"caller_number": "02079460000", "agent_id": "a2"}, ("call_out",)),
    ({"service": "housing", "case_ref": "CMP-1", "channel": "chat"}, ("chat_ann",)),
    ({"email": "ann@example.org", "postcode": "N1 9GU"}, ()),
])
async def test_each_filter_and_combinations(
    db: Database, corpus: dict[str, Item], params: dict[str, Any], expected: tuple[str, ...]
) -> None:
    assert await ids(db, q(**params)) == newest_first(corpus, *expected)


async def test_from_is_inclusive_and_to_exclusive(db: Database, corpus: dict[str, Item]) -> None:
    out, other = corpus["call_out"].started_at, corpus["call_other"].started_at
    assert await ids(db, q(**{"from": out.isoformat(), "to": other.isoformat()})) == \
        [corpus["call_out"].id]
    assert await ids(db, ItemQuery(from_=other)) == newest_first(
        corpus, "call_other", "chat_ann", "chat_bob")
    assert await ids(db, ItemQuery(to=out)) == [corpus["call_in"].id]
    # Another offset names the same instant; a plain date is midnight UTC.
    local = out.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert "+05:30" in local
    assert await ids(db, q(**{"from": local, "to": other.isoformat()})) == [corpus["call_out"].id]
    assert await ids(db, q(**{"from": "2026-11-23"})) == []
    assert len(await ids(db, q(**{"to": "2026-11-23"}))) == 5


async def test_tenants_never_see_each_other(db: Database, corpus: dict[str, Item]) -> None:
    assert await ids(db, q(email="ann@example.org"), "barnet") == [corpus["barnet"].id]
    assert await ids(db, q(case_ref="CMP-1"), "barnet") == [corpus["barnet"].id]
    assert await ids(db, q(), "barnet") == [corpus["barnet"].id]
    assert await ids(db, q(), "nobody") == []
    holds = await active_holds_of(db, "barnet", [corpus["call_in"].id, corpus["barnet"].id])
    assert holds == {corpus["call_in"].id: [], corpus["barnet"].id: ["CMP-1"]}


async def test_active_holds_of_lists_case_refs_per_item(
    db: Database, corpus: dict[str, Item]
) -> None:
    wanted = [corpus[n].id for n in ("call_in", "chat_ann", "call_other", "chat_bob")]
    assert await active_holds_of(db, T, wanted) == {
        corpus["call_in"].id: ["CMP-1", "CMP-2"], corpus["chat_ann"].id: ["CMP-1"],
        corpus["call_other"].id: [], corpus["chat_bob"].id: []}
    assert await active_holds_of(db, T, []) == {}


async def test_matching_ids_lists_all_or_refuses_too_many(
    db: Database, corpus: dict[str, Item]
) -> None:
    assert await matching_ids(db, T, q(agent_id="a1"), max_items=3) == newest_first(
        corpus, "call_in", "call_other", "chat_bob")
    with pytest.raises(BadRequestError) as err:
        await matching_ids(db, T, q(agent_id="a1"), max_items=2)
    assert [e.field for e in err.value.errors] == ["query"]


async def test_paging_with_items_added_between_pages(db: Database) -> None:
    """Items added while paging: newer ones are not shown (they sort before the cursor),
    older ones appear in their place, and nothing is shown twice or skipped."""
    await add_tenant(db)
    first = [await add_item(db, START - timedelta(minutes=m)) for m in range(10)]
    seen: list[uuid.UUID] = []
    page = await search(db, T, ItemQuery(), limit=4)
    seen += [i.id for i in page.items]
    newer = await add_item(db, START + timedelta(minutes=1))
    older = await add_item(db, START - timedelta(minutes=100))
    # At the same instant as the page's last item, the id decides the side of the cursor.
    last = page.items[-1]
    tie_before = await add_item(db, last.started_at, item_id=uuid.UUID(int=last.id.int + 1))
    tie_after = await add_item(db, last.started_at, item_id=uuid.UUID(int=last.id.int - 1))
    while page.next_cursor:
        page = await search(db, T, ItemQuery(), limit=4, cursor=page.next_cursor)
        seen += [i.id for i in page.items]
        await add_item(db, START + timedelta(hours=1))
    assert len(seen) == len(set(seen))
    assert set(seen) >= {i.id for i in first} | {older.id}
    assert newer.id not in seen and tie_before.id not in seen
    assert seen[4] == tie_after.id
    assert seen[-1] == older.id
    assert len(seen) == 12


async def test_pending_items_never_appear(db: Database) -> None:
    await add_tenant(db)
    await add_item(db, START, status=ItemStatus.PENDING)
    assert await ids(db, ItemQuery()) == []
    with pytest.raises(BadRequestError):
        q(status="pending")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # one corpus for all
@given(limit=st.integers(1, 40), filtered=st.booleans())
async def test_paging_with_any_page_size_yields_the_full_newest_first_list(
    db: Database, limit: int, filtered: bool
) -> None:
    async with db.reader() as session:
        seeded = await session.get(Tenant, "paging")
    if seeded is None:  # 37 items, many sharing a started_at: the id breaks ties
        await add_tenant(db, "paging")
        for n in range(37):
            await add_item(db, START - timedelta(seconds=n // 4), tenant="paging",
                           agent_id=f"a{n % 3}")
    query = ItemQuery(agent_id="a1") if filtered else ItemQuery()
    everything = await search(db, "paging", query, limit=500)
    expected = sorted(everything.items, key=lambda i: (i.started_at, i.id), reverse=True)
    assert [i.id for i in everything.items] == [i.id for i in expected]
    paged: list[uuid.UUID] = []
    page = Page([], None)
    while True:
        page = await search(db, "paging", query, limit=limit, cursor=page.next_cursor)
        paged += [i.id for i in page.items]
        assert len(page.items) == limit or page.next_cursor is None
        if page.next_cursor is None:
            break
    assert paged == [i.id for i in expected]


@pytest.mark.parametrize("cursor", ["x", "!!!!", "AAAA", "A" * 33, "é" * 32])
async def test_a_malformed_cursor_is_refused(db: Database, cursor: str) -> None:
    with pytest.raises(BadRequestError) as err:
        await search(db, T, ItemQuery(), cursor=cursor)
    assert [e.field for e in err.value.errors] == ["cursor"]


@pytest.mark.parametrize("limit", [0, -1, 501])
async def test_a_bad_limit_is_refused(db: Database, limit: int) -> None:
    with pytest.raises(BadRequestError) as err:
        await search(db, T, ItemQuery(), limit=limit)
    assert [e.field for e in err.value.errors] == ["limit"]


# -- parsing --------------------------------------------------------------------------------


def test_parse_query_normalises_what_users_type() -> None:
    query = parse_query({"caller_number": "020 7946 0000", "email": " Ann@Example.ORG ",
                         "postcode": "sw1a1aa", "name": "ANN", "agent_id": "a1",
                         "service": "housing", "channel": "chat", "from": "2026-01-01",
                         "to": "2026-02-01T12:00:00+01:00", "status": "anonymised",
                         "held": "1", "case_ref": "CMP-1"})
    assert query == ItemQuery(
        caller_number="+442079460000", email="ann@example.org", postcode="SW1A 1AA",
        name="ann", agent_id="a1", service="housing", channel=Channel.CHAT,
        from_=datetime(2026, 1, 1, tzinfo=UTC), to=datetime(2026, 2, 1, 11, tzinfo=UTC),
        status=ItemStatus.ANONYMISED, held=True, case_ref="CMP-1")
    assert query.filter_names() == sorted(
        ["caller_number", "email", "postcode", "name", "agent_id", "service", "channel",
         "from", "to", "status", "held", "case_ref"])
    assert parse_query({"held": False, "service": ""}) == ItemQuery(held=False)
    assert parse_query({}).filter_names() == []


def test_parse_query_names_every_bad_field() -> None:
    with pytest.raises(BadRequestError) as err:
        parse_query({"caller_number": "not a number", "postcode": "XYZ", "channel": "fax",
                     "from": "2026-01-01T10:00:00", "to": "yesterday", "status": "pending",
                     "held": "maybe", "colour": "red", "name": 42, "agent_id": "a" * 101,
                     "service": "a\x00b"})
    fields = sorted(e.field for e in err.value.errors)
    assert fields == sorted(["caller_number", "postcode", "channel", "from", "to", "status",
                             "held", "colour", "name", "agent_id", "service"])
    messages = " ".join(e.message for e in err.value.errors)
    assert "not a number" not in messages and "XYZ" not in messages  # values not echoed


def test_to_must_be_after_from() -> None:
    with pytest.raises(BadRequestError) as err:
        parse_query({"from": "2026-01-02", "to": "2026-01-01"})
    assert [e.field for e in err.value.errors] == ["to"]
