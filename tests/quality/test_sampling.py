"""Sampling: the allocation across agents, uniformity within an agent, reproducibility,
every exclusion, bad input, storing and listing. Runs on SQLite and PostgreSQL."""

import random
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from archive import sampling
from archive.db import Database
from archive.errors import BadRequestError, NotFoundError
from archive.ids import uuid7
from archive.models import AuditEvent, Channel, Form, Item, ItemStatus, Review, Sample
from archive.service import Actor
from tests.archive.test_search import add_item, add_tenant
from tests.conftest import START

T = "camden"
ACTOR = Actor("monitor-1", "quality")
FROM = (START - timedelta(days=7)).isoformat()
TO = START.isoformat()
# Calls per agent in the window: A has few, B a middling number, C and D many.
CALLS = {"A": 2, "B": 5, "C": 8, "D": 8}


def at(n: int) -> Any:
    """The n-th moment in the window, an hour apart from the start."""
    return START - timedelta(days=7) + timedelta(hours=n)


async def calls(db: Database, counts: dict[str, int] = CALLS, **fields: Any) -> list[Item]:
    await add_tenant(db)
    made = []
    n = 0
    for agent, count in counts.items():
        for _ in range(count):
            made.append(await add_item(db, at(n), agent_id=agent, duration=60.0 + n,
                                       service="housing", **fields))
            n += 1
    return made


async def draw(db: Database, tenant: str = T, **raw: Any) -> sampling.Drawn:
    return await sampling.draw(db, tenant=tenant, actor=ACTOR,
                               raw={"from": FROM, "to": TO, **raw}, now=START)


def per_agent(drawn: sampling.Drawn) -> dict[str, int]:
    return dict(Counter(c.agent_id or "" for c in drawn.calls))


# -- allocation and ranking (no database) -------------------------------------------------------

def test_water_filling_gives_small_agents_all_and_shares_the_rest_evenly() -> None:
    counts = {"a": 1, "b": 3, "c": 10, "d": 10}
    assert sampling.allocate(counts, "s", size=12) == {"a": 1, "b": 3, "c": 4, "d": 4}
    assert sampling.allocate(counts, "s", size=4) == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert sampling.allocate(counts, "s", size=100) == counts
    assert sampling.allocate(counts, "s", per_agent=3) == {"a": 1, "b": 3, "c": 3, "d": 3}
    # 13 = 1 + 3 + 4 + 4 + one more: to c or to d, as the seed says.
    winners: Counter[str] = Counter()
    for n in range(200):
        shares = sampling.allocate(counts, f"seed-{n}", size=13)
        assert sum(shares.values()) == 13
        assert shares["a"] == 1 and shares["b"] == 3
        assert sorted([shares["c"], shares["d"]]) == [4, 5]
        winners[max("cd", key=lambda a: shares[a])] += 1
        assert sampling.allocate(counts, f"seed-{n}", size=13) == shares  # the seed fixes it
    assert 60 < winners["c"] < 140  # neither agent is favoured


def test_size_smaller_than_the_agents_gives_one_each_to_agents_the_seed_picks() -> None:
    counts = {f"agent-{n}": 5 for n in range(10)}
    shares = sampling.allocate(counts, "x", size=3)
    assert sorted(shares.values()) == [0] * 7 + [1] * 3
    assert sampling.allocate(counts, "y", size=3) != shares or \
        sampling.allocate(counts, "z", size=3) != shares


def test_each_call_of_an_agent_is_equally_likely() -> None:
    ids = [uuid7().hex for _ in range(10)]
    chosen: Counter[str] = Counter()
    for n in range(5000):
        inputs = sampling.parse_inputs({"from": FROM, "to": TO, "size": 1, "seed": str(n)})
        [(_, picked)] = sampling.choose({"a": ids}, inputs)
        chosen[uuid.UUID(picked[0]).hex] += 1
    assert len(chosen) == 10
    assert all(400 < n < 600 for n in chosen.values()), chosen  # 500 expected each


# -- draws over the index -----------------------------------------------------------------------

async def test_each_agent_gets_the_water_filling_share(db: Database) -> None:
    await calls(db)
    assert per_agent(await draw(db, size=14, seed="s")) == {"A": 2, "B": 4, "C": 4, "D": 4}
    assert per_agent(await draw(db, size=100, seed="s")) == CALLS  # every call
    drawn = await draw(db, per_agent=3, seed="s")
    assert per_agent(drawn) == {"A": 2, "B": 3, "C": 3, "D": 3}
    assert drawn.per_agent == {"A": 2, "B": 3, "C": 3, "D": 3}
    # Draw order: grouped by agent, agents in order.
    agents = [c.agent_id or "" for c in drawn.calls]
    assert agents == sorted(agents)
    drawn = await draw(db, size=13, seed="s")
    shares = per_agent(drawn)
    assert shares["A"] == 2 and sorted([shares["B"], shares["C"], shares["D"]]) == [3, 4, 4]


async def test_same_seed_same_sample_whatever_the_row_order(db: Database) -> None:
    made = await calls(db)
    first = await draw(db, size=11, seed="audit-2026")
    again = await draw(db, size=11, seed="audit-2026")
    assert again.sample.item_ids == first.sample.item_ids
    assert [str(c.id) for c in first.calls] == first.sample.item_ids
    # The same rows written again in another order draw the same sample.
    async with db.session() as session:
        await session.exec(sa.delete(Item))
        await session.commit()
    shuffled = list(made)
    random.Random(5).shuffle(shuffled)
    for item in shuffled:
        await add_item(db, item.started_at, item_id=item.id, agent_id=item.agent_id,
                       duration=item.duration, service=item.service)
    assert (await draw(db, size=11, seed="audit-2026")).sample.item_ids == first.sample.item_ids
    # Another seed draws another sample (of the same shape).
    other = await draw(db, size=11, seed="audit-2027")
    assert other.sample.item_ids != first.sample.item_ids
    assert Counter(c.agent_id for c in other.calls) == Counter(c.agent_id for c in first.calls)


async def test_a_missing_seed_is_generated_and_redraws_the_sample(db: Database) -> None:
    await calls(db)
    first = await draw(db, size=6)
    seed = first.sample.seed
    assert len(seed) == 32 and first.sample.inputs["seed"] == seed
    assert (await draw(db, size=6)).sample.seed != seed
    again = await sampling.draw(db, tenant=T, actor=ACTOR, raw=first.sample.inputs, now=START)
    assert again.sample.item_ids == first.sample.item_ids


async def test_only_matching_active_unheld_unreviewed_calls_of_the_tenant(db: Database) -> None:
    await add_tenant(db)
    await add_tenant(db, "barnet")
    good = await add_item(db, at(1), agent_id="A", duration=120.0, service="housing")
    left_out = {
        "held": await add_item(db, at(2), agent_id="A", duration=120.0, service="housing",
                               held=True),
        "reviewed": await add_item(db, at(3), agent_id="A", duration=120.0,
                                   service="housing"),
        "chat": await add_item(db, at(4), channel=Channel.CHAT, agent_id="A", duration=120.0,
                               service="housing"),
        "barnet": await add_item(db, at(5), tenant="barnet", agent_id="A", duration=120.0,
                                 service="housing"),
        "before": await add_item(db, at(-1), agent_id="A", duration=120.0, service="housing"),
        "at to": await add_item(db, START, agent_id="A", duration=120.0, service="housing"),
        "short": await add_item(db, at(6), agent_id="A", duration=29.0, service="housing"),
        "no duration": await add_item(db, at(7), agent_id="A", service="housing"),
        "other service": await add_item(db, at(8), agent_id="A", duration=120.0,
                                        service="parking"),
        "other agent": await add_item(db, at(9), agent_id="Z", duration=120.0,
                                      service="housing"),
        "no agent": await add_item(db, at(10), duration=120.0, service="housing"),
        "purged": await add_item(db, at(11), status=ItemStatus.PURGED, agent_id="A",
                                 duration=120.0, service="housing"),
        "pending": await add_item(db, at(12), status=ItemStatus.PENDING, agent_id="A",
                                  duration=120.0, service="housing"),
    }
    at_from = await add_item(db, START - timedelta(days=7), agent_id="A", duration=30.0,
                             service="housing")
    form = Form(id=uuid7(), tenant=T, name="calls", version=1,
                criteria=[{"key": "greeting", "label": "Greeting", "weight": 1,
                           "max_score": 5}], created_by="admin", created_at=START)
    async with db.session() as session:
        session.add(form)
        await session.flush()
        session.add(Review(id=uuid7(), tenant=T, item_id=left_out["reviewed"].id,
                           reviewer="monitor-2", form_id=form.id, scores={"greeting": 4},
                           score=80.0, created_at=START, updated_at=START))
        await session.commit()
    filters: dict[str, Any] = {"service": "housing", "agent_ids": ["A", "B"], "min_duration": 30}
    drawn = await draw(db, size=100, seed="s", **filters)
    assert {c.id for c in drawn.calls} == {good.id, at_from.id}
    # Held and reviewed calls come back when asked for.
    drawn = await draw(db, size=100, seed="s", exclude_held=False, exclude_reviewed=False,
                       **filters)
    assert {c.id for c in drawn.calls} == {good.id, at_from.id, left_out["held"].id,
                                           left_out["reviewed"].id}
    # Without the filters, the other service, agent and short calls are candidates too.
    drawn = await draw(db, size=100, seed="s")
    assert {c.id for c in drawn.calls} == {good.id, at_from.id, left_out["short"].id,
                                           left_out["no duration"].id,
                                           left_out["other service"].id,
                                           left_out["other agent"].id}


async def test_a_draw_is_stored_and_audited_without_ids_of_people(db: Database) -> None:
    await calls(db)
    drawn = await draw(db, per_agent=2, seed="s", agent_ids=["D", "B", "B"])
    async with db.reader() as session:
        stored = (await session.exec(select(Sample))).one()
        [event] = (await session.exec(select(AuditEvent).where(
            AuditEvent.action == "sample.draw"))).all()
    assert stored.id == drawn.sample.id and stored.tenant == T
    assert stored.created_by == "monitor-1" and stored.seed == "s"
    assert stored.item_ids == drawn.sample.item_ids and len(stored.item_ids) == 4
    assert stored.inputs == {"from": FROM, "to": TO, "size": None, "per_agent": 2,
                             "service": None, "agent_ids": ["B", "D"], "min_duration": None,
                             "exclude_reviewed": True, "exclude_held": True, "seed": "s"}
    assert event.detail == {"sample_id": str(drawn.sample.id), "count": 4, "agents": 2}
    assert event.actor == "monitor-1" and event.role == "quality" and event.item_id is None


async def test_an_empty_window_draws_an_empty_sample(db: Database) -> None:
    await add_tenant(db)
    drawn = await draw(db, size=10, seed="s")
    assert drawn.calls == [] and drawn.sample.item_ids == [] and drawn.per_agent == {}


@pytest.mark.parametrize(("raw", "fields"), [
    ({}, {"from", "to", "size"}),
    ({"from": FROM, "to": FROM, "size": 5}, {"to"}),
    ({"from": "yesterday", "to": "2026-11-23T09:00:00", "size": 5}, {"from", "to"}),
    ({"from": FROM, "to": TO, "size": 5, "per_agent": 2}, {"per_agent"}),
    ({"from": FROM, "to": TO, "size": 0}, {"size"}),
    ({"from": FROM, "to": TO, "size": 10_001}, {"size"}),
    ({"from": FROM, "to": TO, "size": "5"}, {"size"}),
    ({"from": FROM, "to": TO, "per_agent": 1001}, {"per_agent"}),
    ({"from": FROM, "to": TO, "size": True}, {"size"}),
    ({"from": FROM, "to": TO, "size": 5, "service": "", "agent_ids": [],
      "min_duration": -1, "exclude_reviewed": "no", "exclude_held": 1, "seed": "x" * 65,
      "colour": "red"},
     {"service", "agent_ids", "min_duration", "exclude_reviewed", "exclude_held", "seed",
      "colour"}),
    ({"from": FROM, "to": TO, "size": 5, "agent_ids": ["A", 7, "x" * 101]},
     {"agent_ids[1]", "agent_ids[2]"}),
    ({"from": FROM, "to": TO, "size": 5, "seed": "bad\nseed", "min_duration": "long"},
     {"seed", "min_duration"}),
])
async def test_bad_input_names_every_bad_field_and_stores_nothing(
        db: Database, raw: dict[str, Any], fields: set[str]) -> None:
    await add_tenant(db)
    with pytest.raises(BadRequestError) as caught:
        await sampling.draw(db, tenant=T, actor=ACTOR, raw=raw, now=START)
    assert {e.field for e in caught.value.errors} == fields
    async with db.reader() as session:
        assert (await session.exec(select(Sample))).all() == []
        assert (await session.exec(select(AuditEvent))).all() == []


async def test_samples_are_listed_newest_first_a_page_at_a_time(db: Database) -> None:
    await calls(db)
    await add_tenant(db, "barnet")
    made = [(await sampling.draw(
        db, tenant=T, actor=ACTOR, raw={"from": FROM, "to": TO, "size": 2},
        now=START + timedelta(minutes=n))).sample.id for n in range(5)]
    await sampling.draw(db, tenant="barnet", actor=ACTOR,
                        raw={"from": FROM, "to": TO, "size": 2}, now=START)
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await sampling.list_samples(db, T, limit=2, cursor=cursor)
        seen += [s.id for s in page.samples]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == made[::-1]
    got = await sampling.get_sample(db, T, made[0])
    assert [str(c.id) for c in got.calls] == got.sample.item_ids
    assert sum(got.per_agent.values()) == 2
    with pytest.raises(NotFoundError):
        await sampling.get_sample(db, "barnet", made[0])
    with pytest.raises(BadRequestError):
        await sampling.list_samples(db, T, cursor="nonsense")
    with pytest.raises(BadRequestError):
        await sampling.list_samples(db, "barnet", cursor=str(made[0]))


async def test_a_sample_shows_calls_destroyed_since(db: Database) -> None:
    await calls(db, {"A": 3})
    drawn = await draw(db, size=3, seed="s")
    async with db.session() as session:
        await session.exec(sa.update(Item).where(
            col(Item.id) == drawn.calls[0].id).values(status=ItemStatus.PURGED.value))
        await session.commit()
    got = await sampling.get_sample(db, T, drawn.sample.id)
    assert [str(c.id) for c in got.calls] == drawn.sample.item_ids
    assert [c.status for c in got.calls] == ["purged", "active", "active"]
