"""GET /v1/audit/events and /v1/audit/verify: who may read the log, filters, paging, bad
filters, another tenant's events, no personal data, and a tampered event found by verify."""

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col

from archive import audit
from archive.clock import ManualClock
from archive.models import AuditEvent, Role
from tests.archive.test_search import add_item, add_tenant
from tests.conftest import START, Client
from tests.helpers import bearer, make_token
from web.keys import DATABASE

PROBLEM = "application/problem+json"
ITEM = uuid.UUID("01900000-0000-7000-8000-000000000001")
# (action, actor, item) of the seeded events, oldest first, one minute apart from START.
SEEDED = [("item.ingest", "token:ingest-1", ITEM), ("item.view", "token:staff-1", ITEM),
          ("hold.place", "token:staff-1", None), ("item.play", "token:staff-2", ITEM),
          ("item.view", "token:staff-2", None), ("policy.change", "user:admin-1", None)]


async def token(client: Client, role: Role, tenant: str = "camden") -> dict[str, str]:
    return bearer(await make_token(client.app[DATABASE], tenant, role, START))


async def seed(client: Client, clock: ManualClock) -> None:
    db = client.app[DATABASE]
    for n, (action, actor, item) in enumerate(SEEDED):
        async with db.session() as session:
            await audit.append(session, tenant="camden", at=START + timedelta(minutes=n),
                               actor=actor, role="complaints", action=action, item_id=item,
                               detail={"n": n})
            await session.commit()
    async with db.session() as session:
        await audit.append(session, tenant="barnet", at=START, actor="token:barnet",
                           role="admin", action="item.view", item_id=ITEM)
        await session.commit()
    clock.set(START + timedelta(hours=1))


async def events(client: Client, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    r = await client.get("/v1/audit/events", params=params, headers=headers)
    body = await r.json()
    assert r.status == 200, body
    return [e for e in body["events"] if not e["action"].startswith("audit.")]


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN])
async def test_auditors_and_admins_read_the_log_newest_first(
    client: Client, clock: ManualClock, role: Role
) -> None:
    await seed(client, clock)
    found = await events(client, await token(client, role))
    assert [(e["action"], e["actor"]) for e in found] == [
        (a, who) for a, who, _ in reversed(SEEDED)]
    first = found[-1]
    assert first["seq"] == 1 and first["item_id"] == str(ITEM) and first["detail"] == {"n": 0}
    assert first["at"] == START.isoformat() and len(first["hash"]) == 64
    assert "token:barnet" not in {e["actor"] for e in found}  # another tenant's log

    r = await client.get("/v1/audit/verify", headers=await token(client, role))
    body = await r.json()
    assert r.status == 200, body
    assert body["ok"] is True and body["first_problem"] is None
    assert body["tenant"] == "camden" and body["events"] >= len(SEEDED)


@pytest.mark.parametrize("role", [Role.COMPLAINTS, Role.QUALITY, Role.PRIVACY, Role.INGEST])
async def test_other_roles_may_not_read_the_log(client: Client, role: Role) -> None:
    headers = await token(client, role)
    for path in ("/v1/audit/events", "/v1/audit/verify"):
        r = await client.get(path, headers=headers)
        assert r.status == 403, path
        assert r.content_type == PROBLEM


@pytest.mark.parametrize(("params", "expected"), [
    ({"action": "item.view"}, [4, 1]),
    ({"action": "item."}, [4, 3, 1, 0]),
    ({"actor": "token:staff-2"}, [4, 3]),
    ({"item_id": str(ITEM)}, [3, 1, 0]),
    ({"from": "2026-11-23T09:02:00Z", "to": "2026-11-23T09:04:00+00:00"}, [3, 2]),
    ({"action": "item.", "actor": "token:staff-1"}, [1]),
    ({"from": "2026-11-24"}, []),
])
async def test_filters(client: Client, clock: ManualClock, params: dict[str, str],
                       expected: list[int]) -> None:
    await seed(client, clock)
    found = await events(client, await token(client, Role.AUDITOR), **params)
    assert [e["detail"]["n"] for e in found] == expected


async def test_paging_follows_next_cursor_to_the_end(client: Client, clock: ManualClock) -> None:
    await seed(client, clock)
    headers = await token(client, Role.AUDITOR)
    seen: list[int] = []
    params = {"limit": "3", "action": "item."}
    pages = 0
    while True:
        r = await client.get("/v1/audit/events", params=params, headers=headers)
        body = await r.json()
        assert r.status == 200, body
        seen += [e["seq"] for e in body["events"]]
        pages += 1
        if body["next_cursor"] is None:
            break
        # An event appended between pages sorts before the cursor: it never shifts a page.
        async with client.app[DATABASE].session() as session:
            await audit.append(session, tenant="camden", at=clock.now(), actor="token:x",
                               role="complaints", action="item.view")
            await session.commit()
        params = {**params, "cursor": body["next_cursor"]}
    assert pages == 2
    assert seen == [5, 4, 2, 1]


async def test_bad_filters_are_400_naming_each(client: Client) -> None:
    headers = await token(client, Role.AUDITOR)
    r = await client.get("/v1/audit/events", params={
        "action": "Item View!", "item_id": "nope", "from": "yesterday", "limit": "0",
        "cursor": "!!", "colour": "red"}, headers=headers)
    body = await r.json()
    assert r.status == 400 and r.content_type == PROBLEM
    assert {e["field"] for e in body["errors"]} == {
        "action", "item_id", "from", "limit", "cursor", "colour"}
    r = await client.get("/v1/audit/events?from=2026-11-24&to=2026-11-23", headers=headers)
    assert [e["field"] for e in (await r.json())["errors"]] == ["to"]
    r = await client.get("/v1/audit/events?action=a&action=b", headers=headers)
    assert r.status == 400
    assert (await r.json())["errors"][0]["field"] == "action"
    r = await client.get("/v1/audit/verify?tenant=barnet", headers=headers)
    assert r.status == 400
    assert (await r.json())["errors"][0]["field"] == "tenant"


async def test_reading_the_log_is_recorded_without_filter_values(
    client: Client, clock: ManualClock
) -> None:
    await seed(client, clock)
    headers = await token(client, Role.AUDITOR)
    await client.get("/v1/audit/events", params={"actor": "token:staff-2"}, headers=headers)
    await client.get("/v1/audit/verify", headers=headers)
    r = await client.get("/v1/audit/events", params={"action": "audit."}, headers=headers)
    own = (await r.json())["events"]
    assert [e["action"] for e in own] == ["audit.verify", "audit.list"]
    assert own[1]["detail"]["filters"] == ["actor"] and own[1]["detail"]["count"] == 2
    assert "staff-2" not in json.dumps(own)
    assert own[0]["detail"]["ok"] is True


async def test_event_details_hold_no_personal_data(client: Client) -> None:
    db = client.app[DATABASE]
    await add_tenant(db)
    item = await add_item(db, START - timedelta(hours=1), caller_number="+442079460000",
                          customer_name="Ann Smith", customer_email="ann@example.org",
                          customer_postcode="SW1A 1AA")
    staff = await token(client, Role.COMPLAINTS)
    r = await client.get("/v1/items", params={"caller_number": "020 7946 0000",
                                              "email": "ann@example.org"}, headers=staff)
    assert r.status == 200
    assert (await client.get(f"/v1/items/{item.id}", headers=staff)).status == 200
    r = await client.get("/v1/audit/events", headers=await token(client, Role.AUDITOR))
    body = await r.json()
    assert {"item.search", "item.view"} <= {e["action"] for e in body["events"]}
    text = json.dumps(body)
    for personal in ("2079460000", "7946 0000", "ann@example.org", "Ann", "SW1A"):
        assert personal not in text


async def test_a_tampered_event_breaks_verification(client: Client, clock: ManualClock) -> None:
    await seed(client, clock)
    async with client.app[DATABASE].session() as session:
        await session.exec(sa.update(AuditEvent)
                           .where(col(AuditEvent.tenant) == "camden", col(AuditEvent.seq) == 3)
                           .values(actor="token:someone-else"))
        await session.commit()
    r = await client.get("/v1/audit/verify", headers=await token(client, Role.AUDITOR))
    body = await r.json()
    assert r.status == 200, body
    assert body["ok"] is False
    assert body["first_problem"] == "event 3 was altered"
    assert body["problem_count"] == 1 and body["events"] == len(SEEDED)


async def test_openapi_documents_the_audit_routes(client: Client) -> None:
    spec = await (await client.get("/openapi.json")).json()
    assert "get" in spec["paths"]["/v1/audit/events"]
    assert "get" in spec["paths"]["/v1/audit/verify"]
    assert "AuditVerification" in spec["components"]["schemas"]
