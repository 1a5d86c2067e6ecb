"""Policies and the lifecycle preview over HTTP: admins only, the token's tenant only; a change
is previewed, then applied with the preview's token; bad input is refused field by field and
leaves nothing behind; windows the settings file fixes are synced at start and refused."""

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient
from sqlmodel import select

from archive.clock import ManualClock
from archive.db import Database
from archive.models import AuditEvent, Channel, Role
from archive.service import Actor
from archive.settings import Settings
from storage.base import iter_bytes
from tests.archive.test_search import add_hold, add_item
from tests.conftest import START, Client
from tests.helpers import bearer, make_token
from web.app import create_app
from web.keys import ARCHIVE, DATABASE

DAY = timedelta(days=1)


async def admin(client: Client, tenant: str = "camden", role: Role = Role.ADMIN
                ) -> dict[str, str]:
    return bearer(await make_token(client.app[DATABASE], tenant, role, START))


async def store_call(client: Client, external_id: str, days_ago: int,
                     tenant: str = "camden") -> str:
    archive = client.app[ARCHIVE]
    item = await archive.put(tenant=tenant, channel=Channel.CALL, external_id=external_id,
                             started_at=START - days_ago * DAY, media_type="audio/wav",
                             chunks=iter_bytes(b"RIFF...."), actor=Actor("t", "ingest"))
    return str(item.id)


async def policies(client: Client, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    r = await client.get("/v1/policies", headers=headers)
    assert r.status == 200
    body = await r.json()
    return {p["channel"]: p for p in body["policies"]}


async def change_events(client: Client) -> list[AuditEvent]:
    async with client.app[DATABASE].reader() as session:
        return list((await session.exec(
            select(AuditEvent).where(AuditEvent.action == "policy.change"))).all())


async def test_preview_then_apply(client: Client) -> None:
    headers = await admin(client)
    old = await store_call(client, "old", 200)
    await store_call(client, "new", 5)
    shown = await policies(client, headers)
    assert shown["call"] | {"history": []} == {
        "tenant": "camden", "channel": "call", "days": 365, "version": 0, "source": "default",
        "set_by": None, "set_at": None, "reason": None, "policy": "default",
        "fixed_by_settings": False, "history": []}
    assert shown["chat"]["days"] == 730

    ask = {"channel": "call", "days": 100, "reason": "records schedule v4"}
    r = await client.put("/v1/policies", json=ask, headers=headers)
    assert r.status == 200
    body = await r.json()
    assert body["applied"] is False and body["confirm"]
    assert body["preview"] | {"now": None} == {
        "tenant": "camden", "channel": "call", "days": 100, "current_days": 365,
        "current_version": 0, "current_source": "default", "now": None, "recomputed": 2,
        "expire_now": 1, "expire_now_held": 0, "expire_now_unheld": 1,
        "earliest_retain_until": (START - 100 * DAY).isoformat()}
    assert (await policies(client, headers))["call"]["version"] == 0  # nothing changed
    assert await change_events(client) == []

    r = await client.put("/v1/policies", json={**ask, "confirm": body["confirm"]},
                         headers=headers)
    assert r.status == 200
    done = await r.json()
    assert done["applied"] is True and done["recomputed"] == 2
    assert done["policy"]["version"] == 1 and done["policy"]["days"] == 100
    assert done["policy"]["previous_days"] == 365
    call = (await policies(client, headers))["call"]
    assert (call["version"], call["days"], call["source"], call["reason"]) == (
        1, 100, "api", "records schedule v4")
    assert call["set_by"].startswith("token:") and len(call["history"]) == 1
    r = await client.get(f"/v1/items/{old}", headers=headers)
    retention = (await r.json())["retention"]
    assert retention == {"retain_until": (START - 100 * DAY).isoformat(),
                         "basis": {"policy": "camden/call", "version": 1, "days": 100}}
    [event] = await change_events(client)
    assert event.detail == {"channel": "call", "days": 100, "previous_days": 365,
                            "version": 1, "source": "api", "recomputed": 2}
    assert "records schedule" not in json.dumps(event.detail)

    # The same token again is stale: the version it previewed is no longer in force.
    r = await client.put("/v1/policies", json={**ask, "confirm": body["confirm"]},
                         headers=headers)
    assert r.status == 409
    assert "changed since the preview" in (await r.json())["detail"]


async def test_a_token_goes_stale_when_another_change_lands(client: Client) -> None:
    headers = await admin(client)
    first = await (await client.put("/v1/policies", json={"channel": "chat", "days": 30},
                                    headers=headers)).json()
    second = await (await client.put("/v1/policies", json={"channel": "chat", "days": 60},
                                     headers=headers)).json()
    r = await client.put("/v1/policies", json={"channel": "chat", "days": 60,
                                               "confirm": second["confirm"]}, headers=headers)
    assert r.status == 200
    r = await client.put("/v1/policies", json={"channel": "chat", "days": 30,
                                               "confirm": first["confirm"]}, headers=headers)
    assert r.status == 409 and r.content_type == "application/problem+json"
    assert "preview again" in (await r.json())["detail"]
    r = await client.put("/v1/policies", json={"channel": "chat", "days": 31,
                                               "confirm": "0123456789abcdef01234567"},
                         headers=headers)
    assert r.status == 409
    chat = (await policies(client, headers))["chat"]
    assert (chat["version"], chat["days"]) == (1, 60)


@pytest.mark.parametrize(("body", "fields"), [
    ({"channel": "call", "days": 30, "colour": "red"}, ["colour"]),
    ({"channel": "fax", "days": 30}, ["channel"]),
    ({"days": 30}, ["channel"]),
    ({"channel": "call"}, ["days"]),
    ({"channel": "call", "days": "30"}, ["days"]),
    ({"channel": "call", "days": 30.5}, ["days"]),
    ({"channel": "call", "days": True}, ["days"]),
    ({"channel": "call", "days": 0}, ["days"]),
    ({"channel": "call", "days": 36501}, ["days"]),
    ({"channel": "call", "days": 30, "reason": 5}, ["reason"]),
    ({"channel": "call", "days": 30, "reason": "x" * 2001}, ["reason"]),
    ({"channel": "call", "days": 30, "confirm": 123}, ["confirm"]),
    ({"channel": 1, "days": -1, "reason": [], "confirm": {}, "x": 1},
     ["x", "channel", "days", "reason", "confirm"]),
    ([], ["body"]),
])
async def test_bad_changes_name_each_field(client: Client, body: Any,
                                           fields: list[str]) -> None:
    headers = await admin(client)
    await store_call(client, "a", 200)
    r = await client.put("/v1/policies", json=body, headers=headers)
    assert r.status == 400
    problem = await r.json()
    assert [e["field"] for e in problem["errors"]] == fields
    assert (await policies(client, headers))["call"]["version"] == 0
    assert await change_events(client) == []


async def test_not_json_is_400(client: Client) -> None:
    r = await client.put("/v1/policies", data=b"{days:", headers=await admin(client))
    assert r.status == 400 and (await r.json())["errors"][0]["field"] == "body"


@pytest.mark.parametrize("role", [Role.QUALITY, Role.COMPLAINTS, Role.INGEST, Role.AUDITOR,
                                  Role.PRIVACY])
async def test_admins_only(client: Client, role: Role) -> None:
    headers = await admin(client, role=role)
    assert (await client.get("/v1/policies", headers=headers)).status == 403
    r = await client.put("/v1/policies", json={"channel": "call", "days": 30},
                         headers=headers)
    assert r.status == 403
    assert (await client.get("/v1/lifecycle/preview", headers=headers)).status == 403
    assert (await client.get("/v1/policies")).status == 401


async def test_another_tenants_policy_is_invisible(client: Client) -> None:
    camden, barnet = await admin(client), await admin(client, "barnet")
    plan = await (await client.put("/v1/policies", json={"channel": "call", "days": 10},
                                   headers=barnet)).json()
    r = await client.put("/v1/policies", json={"channel": "call", "days": 10,
                                               "confirm": plan["confirm"]}, headers=barnet)
    assert r.status == 200
    assert (await policies(client, barnet))["call"]["days"] == 10
    mine = await policies(client, camden)
    assert (mine["call"]["days"], mine["call"]["version"]) == (365, 0)
    assert {p["tenant"] for p in mine.values()} == {"camden"}
    # barnet's token applies only to barnet: it cannot confirm a change for camden.
    r = await client.put("/v1/policies", json={"channel": "call", "days": 10,
                                               "confirm": plan["confirm"]}, headers=camden)
    assert r.status == 409


async def test_settings_windows_are_synced_at_start_and_refused(
    db_url: str, tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    db = Database(db_url)
    try:
        secret = await make_token(db, "camden", Role.ADMIN, START)
    finally:
        await db.close()
    settings = Settings(data_dir=tmp_path / "var", database_url=db_url, segment_size=4096,
                        retention_days="chat=50")
    client = await aiohttp_client(create_app(settings, clock=ManualClock(START)))
    headers = bearer(secret)
    chat = (await policies(client, headers))["chat"]
    assert (chat["days"], chat["version"], chat["source"], chat["fixed_by_settings"]) == (
        50, 1, "settings", True)
    assert chat["set_by"] == "settings"
    r = await client.put("/v1/policies", json={"channel": "chat", "days": 30},
                         headers=headers)
    assert r.status == 409 and "retention_days" in (await r.json())["detail"]
    r = await client.put("/v1/policies", json={"channel": "call", "days": 30},
                         headers=headers)
    assert r.status == 200  # calls are not fixed by this settings file
    # A second start (another process) writes nothing more.
    again = await aiohttp_client(create_app(settings, clock=ManualClock(START)))
    assert (await policies(again, headers))["chat"]["version"] == 1


# -- the preview ---------------------------------------------------------------------------------

async def test_lifecycle_preview(client: Client, clock: ManualClock) -> None:
    headers = await admin(client)
    await admin(client, "barnet")
    db = client.app[DATABASE]
    overdue = await add_item(db, START - 400 * DAY, retain_until=START - 2 * DAY)
    held = await add_item(db, START - 400 * DAY, retain_until=START + 3 * DAY)
    await add_item(db, START - 400 * DAY, retain_until=START + 10 * DAY,
                   channel=Channel.CHAT)
    await add_item(db, START - 400 * DAY, retain_until=START - 9 * DAY, tenant="barnet")
    await add_hold(db, "CMP-1", [held])

    assert overdue.retain_until is not None
    r = await client.get("/v1/lifecycle/preview", headers=headers)
    assert r.status == 200
    body = await r.json()
    assert body == {"tenant": "camden", "until": START.isoformat(), "now": START.isoformat(),
                    "channels": [
                        {"channel": "call", "would_destroy": 1, "kept_by_holds": 0,
                         "overdue": 1, "oldest_overdue": overdue.retain_until.isoformat()},
                        {"channel": "chat", "would_destroy": 0, "kept_by_holds": 0,
                         "overdue": 0, "oldest_overdue": None}]}

    r = await client.get("/v1/lifecycle/preview",
                         params={"until": "2026-12-08T00:00:00+01:00", "weeks": "2"},
                         headers=headers)
    body = await r.json()
    assert body["until"] == "2026-12-07T23:00:00+00:00"
    assert [(c["would_destroy"], c["kept_by_holds"]) for c in body["channels"]] == [
        (1, 1), (1, 0)]
    assert body["forecast"] == [
        {"start": START.isoformat(), "end": (START + 7 * DAY).isoformat(),
         "would_destroy": 0, "kept_by_holds": 1},
        {"start": (START + 7 * DAY).isoformat(), "end": (START + 14 * DAY).isoformat(),
         "would_destroy": 1, "kept_by_holds": 0}]

    clock.advance(30 * DAY)  # time moves: everything not held is overdue
    body = await (await client.get("/v1/lifecycle/preview", params={"until": "2026-12-01"},
                                   headers=headers)).json()
    assert body["now"] == (START + 30 * DAY).isoformat()
    assert [(c["would_destroy"], c["overdue"]) for c in body["channels"]] == [(1, 1), (0, 1)]


@pytest.mark.parametrize(("query", "fields"), [
    ("until=tomorrow", ["until"]),
    ("until=2026-12-01T10:00:00", ["until"]),  # no offset
    ("until=", ["until"]),
    ("weeks=0", ["weeks"]),
    ("weeks=53", ["weeks"]),
    ("weeks=two", ["weeks"]),
    ("tenant=barnet", ["tenant"]),
    ("until=2026-12-01&until=2026-12-02", ["until"]),
    ("until=x&weeks=x&colour=red", ["colour", "until", "weeks"]),
])
async def test_bad_preview_requests(client: Client, query: str, fields: list[str]) -> None:
    r = await client.get(f"/v1/lifecycle/preview?{query}", headers=await admin(client))
    assert r.status == 400
    assert [e["field"] for e in (await r.json())["errors"]] == fields
