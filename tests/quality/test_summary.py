"""The quality summary on a small fixed set, against figures worked out by hand: per agent
calls handled, calls reviewed, reviews, mean weighted score, spread and training needs; and
calibration (calls reviewed by two or more monitors). Calls outside the range, chats,
destroyed calls, calls without an agent and other tenants' calls do not count. Through the
core and over HTTP, on SQLite and PostgreSQL."""

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import select

from archive import reviews
from archive.db import Database
from archive.ids import uuid7
from archive.models import AuditEvent, Channel, Form, Item, ItemStatus, Review, Role
from tests.archive.test_search import add_item, add_tenant
from tests.conftest import START, Client
from tests.helpers import bearer, make_token
from web.keys import DATABASE

T = "camden"
M1, M2, M3 = "token:m1", "token:m2", "token:m3"
# score = 100 * (1 * a/4 + 3 * b/10) / 4 = 6.25 a + 7.5 b
FORM = {"name": "Calls", "criteria": [
    {"key": "a", "label": "Greeting", "weight": 1, "max_score": 4},
    {"key": "b", "label": "Resolution", "weight": 3, "max_score": 10}]}
NOV, DEC = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def day(n: int, hour: int = 10) -> datetime:
    return datetime(2026, 11, n, hour, tzinfo=UTC)


async def write(db: Database, item: Item, actor: str, a: float, b: float, *,
                need: bool = False, tenant: str = T) -> None:
    await reviews.create_review(db, tenant=tenant, actor=actor, role="quality", now=START,
                                item_id=item.id, body={"form": "Calls",
                                                       "scores": {"a": a, "b": b},
                                                       "training_need": need})


async def fixed_set(db: Database) -> dict[str, Item]:
    """The calls and reviews the expected figures below were worked out from."""
    for tenant in (T, "barnet"):
        await add_tenant(db, tenant)
        await reviews.save_form(db, tenant=tenant, actor="token:admin", role="admin",
                                now=START, form=reviews.parse_form(FORM))
    c: dict[str, Item] = {}
    for name, agent, when, service in [("call1", "a1", day(2), "tax"),
                                       ("call2", "a1", day(3), "tax"),
                                       ("call3", "a1", day(4), "tax"),
                                       ("call4", "a2", day(5), "tax"),
                                       ("call5", "a2", day(6), "tax"),
                                       ("call6", "a3", day(7), "housing"),
                                       ("call7", "a4", day(8), "tax"),
                                       ("at_to", "a1", DEC, "tax"),
                                       ("before", "a1", datetime(2026, 10, 31, 23, 59,
                                                                 tzinfo=UTC), "tax")]:
        c[name] = await add_item(db, when, agent_id=agent, service=service)
    c["no_agent"] = await add_item(db, day(9), service="tax")
    c["chat"] = await add_item(db, day(9), channel=Channel.CHAT, agent_id="a1", service="tax")
    c["erased"] = await add_item(db, day(9), status=ItemStatus.ERASED, agent_id="a1")
    c["theirs"] = await add_item(db, day(9), tenant="barnet", agent_id="a1", service="tax")

    await write(db, c["call1"], M1, 4, 10)             # 25 + 75 = 100
    await write(db, c["call1"], M2, 2, 6, need=True)   # 12.5 + 45 = 57.5
    await write(db, c["call1"], M3, 3, 8)              # 18.75 + 60 = 78.75
    await write(db, c["call2"], M1, 0, 4, need=True)   # 0 + 30 = 30
    await write(db, c["call4"], M1, 4, 8)              # 25 + 60 = 85
    await write(db, c["call5"], M1, 4, 6)              # 25 + 45 = 70
    await write(db, c["call5"], M2, 2, 10)             # 12.5 + 75 = 87.5
    await write(db, c["call6"], M1, 1, 2)              # 6.25 + 15 = 21.25
    # none of these count: outside the range, no agent, another tenant
    for name in ("at_to", "before", "no_agent"):
        await write(db, c[name], M1, 4, 10, need=True)
        await write(db, c[name], M2, 0, 0, need=True)
    await write(db, c["theirs"], M1, 0, 0, need=True, tenant="barnet")
    await write(db, c["theirs"], M2, 4, 10, need=True, tenant="barnet")
    # nor a (stray) review row of a chat
    async with db.session() as session:
        form = (await session.exec(select(Form).where(Form.tenant == T))).one()
        session.add(Review(id=uuid7(), tenant=T, item_id=c["chat"].id, reviewer=M1,
                           form_id=form.id, scores={"a": 0, "b": 0}, score=0.0,
                           training_need=True, created_at=START, updated_at=START))
        await session.commit()
    return c


def approx(value: float) -> Any:
    return pytest.approx(value, abs=0.006)


def by_agent(summary: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {a["agent_id"]: (a["calls_handled"], a["calls_reviewed"], a["reviews"],
                            a["mean_score"], a["spread"], a["training_needs"])
            for a in summary["agents"]}


def check_whole_month(summary: dict[str, Any], calls: dict[str, Item]) -> None:
    # a1: calls 1-3; reviews 100, 57.5, 78.75, 30: mean 266.25 / 4 = 66.5625; deviations
    #     33.4375, -9.0625, 12.1875, -36.5625, squares summing to 2685.546875, / 4 =
    #     671.38671875, square root 25.911; two flagged.
    # a2: calls 4-5; reviews 85, 70, 87.5: mean 242.5 / 3 = 80.833; deviations 4.1667,
    #     -10.8333, 6.6667, squares 17.3611 + 117.3611 + 44.4444 = 179.1667, / 3 = 59.7222,
    #     square root 7.728.
    # a3: one review, 21.25: no spread. a4: one call, not reviewed.
    assert list(by_agent(summary)) == ["a1", "a2", "a3", "a4"]
    figures = by_agent(summary)
    assert figures["a1"] == (3, 2, 4, approx(66.56), approx(25.91), 2)
    assert figures["a2"] == (2, 2, 3, approx(80.83), approx(7.73), 0)
    assert figures["a3"] == (1, 1, 1, 21.25, None, 0)
    assert figures["a4"] == (1, 0, 0, None, None, 0)
    # calibration: call1 (100, 57.5, 78.75: range 42.5; mean 78.75, deviations 21.25,
    # -21.25, 0, variance 903.125 / 3 = 301.04, sd 17.35) and call5 (70, 87.5: range
    # 17.5, sd 8.75), by start.
    cal = summary["calibration"]
    assert [x["item_id"] for x in cal] == [str(calls["call1"].id), str(calls["call5"].id)]
    assert [(r["reviewer"], r["score"]) for r in cal[0]["reviews"]] == [
        (M1, 100.0), (M2, 57.5), (M3, 78.75)]
    assert (cal[0]["agent_id"], cal[0]["range"], cal[0]["stddev"]) == (
        "a1", 42.5, approx(17.35))
    assert [(r["reviewer"], r["score"]) for r in cal[1]["reviews"]] == [(M1, 70.0), (M2, 87.5)]
    assert (cal[1]["agent_id"], cal[1]["range"], cal[1]["stddev"]) == ("a2", 17.5, 8.75)
    assert summary["calibration_truncated"] is False


async def test_summary_equals_the_hand_computation(db: Database) -> None:
    calls = await fixed_set(db)
    whole = (await reviews.summary(db, T, start=NOV, end=DEC)).json()
    check_whole_month(whole, calls)
    assert (whole["from"], whole["to"], whole["service"]) == (
        NOV.isoformat(), DEC.isoformat(), None)

    # service tax: a3 (housing) drops out, the rest as before
    tax = by_agent((await reviews.summary(db, T, start=NOV, end=DEC, service="tax")).json())
    assert list(tax) == ["a1", "a2", "a4"] and tax["a1"][:3] == (3, 2, 4)

    # 3 to 6 November: call2, call3 (a1) and call4 (a2); no call reviewed twice
    part = (await reviews.summary(db, T, start=day(3, 0), end=day(6, 0))).json()
    assert by_agent(part) == {"a1": (2, 1, 1, 30.0, None, 1), "a2": (1, 1, 1, 85.0, None, 0)}
    assert part["calibration"] == []

    # the other tenant sees only its own call: reviews 0 and 100 (mean 50, sd 50)
    theirs = by_agent((await reviews.summary(db, "barnet", start=NOV, end=DEC)).json())
    assert theirs == {"a1": (1, 1, 2, 50.0, 50.0, 2)}

    # the calibration list is cut at its limit, and says so
    cut = (await reviews.summary(db, T, start=NOV, end=DEC, calibration_limit=1)).json()
    assert len(cut["calibration"]) == 1 and cut["calibration_truncated"] is True

    # 1 December alone: the call at the end of the month range, reviewed 100 and 0
    december = (await reviews.summary(db, T, start=DEC, end=DEC.replace(day=2))).json()
    assert by_agent(december) == {"a1": (1, 1, 2, 50.0, 50.0, 2)}
    assert [x["range"] for x in december["calibration"]] == [100.0]
    # and a range without calls
    empty = await reviews.summary(db, T, start=DEC.replace(day=2), end=DEC.replace(day=3))
    assert (empty.agents, empty.calibration) == ([], [])


async def test_summary_over_http(client: Client) -> None:
    db = client.app[DATABASE]
    calls = await fixed_set(db)
    quality = bearer(await make_token(db, T, Role.QUALITY, START))
    r = await client.get("/v1/quality/summary", params={
        "from": "2026-11-01", "to": "2026-12-01T00:00:00+00:00"},
        headers={**quality, "X-Purpose": "monthly report"})
    summary = await r.json()
    assert r.status == 200, summary
    check_whole_month(summary, calls)
    admin = bearer(await make_token(db, T, Role.ADMIN, START))
    r = await client.get("/v1/quality/summary", params={
        "from": "2026-11-01", "to": "2026-12-01", "service": "housing"}, headers=admin)
    assert list(by_agent(await r.json())) == ["a3"]

    async with db.reader() as session:
        events = (await session.exec(select(AuditEvent).where(
            AuditEvent.action == "quality.summary"))).all()
    assert [e.detail for e in events] == [
        {"purpose": "monthly report", "agents": 4, "calls": 7, "reviews": 8, "calibration": 2},
        {"purpose": "", "agents": 1, "calls": 1, "reviews": 1, "calibration": 0}]

    for params, fields in [({}, {"from", "to"}),
                           ({"from": "2026-11-01"}, {"to"}),
                           ({"from": "yesterday", "to": "2026-12-01"}, {"from"}),
                           ({"from": "2026-11-01T00:00:00", "to": "2026-12-01"}, {"from"}),
                           ({"from": "2026-12-01", "to": "2026-11-01"}, {"to"}),
                           ({"from": "2026-11-01", "to": "2026-12-01", "agent": "a1"},
                            {"agent"}),
                           ({"from": "2026-11-01", "to": "2026-12-01",
                             "service": "x" * 101}, {"service"})]:
        r = await client.get("/v1/quality/summary", params=params, headers=quality)
        problem = await r.json()
        assert r.status == 400, params
        assert {e["field"] for e in problem["errors"]} == fields, params
    r = await client.get("/v1/quality/summary?from=2026-11-01&from=2026-11-02&to=2026-12-01",
                         headers=quality)
    assert r.status == 400
    assert {e["field"] for e in (await r.json())["errors"]} == {"from"}
