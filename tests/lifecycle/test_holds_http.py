"""Legal holds over HTTP: placing, reading, adding, releasing; bad input, roles, tenants, and
what search and item JSON show. Runs on SQLite and PostgreSQL."""

import json
import uuid
from typing import Any

import pytest
from sqlmodel import col, select

from archive.models import AuditEvent, Channel, Hold, Item, Role
from archive.service import Actor
from archive.tokens import ensure_tenant
from storage.base import iter_bytes
from tests.conftest import START, Client
from tests.helpers import bearer, make_token
from web.keys import ARCHIVE, DATABASE

PROBLEM = "application/problem+json"
NUMBER = "+442079460000"
REASON = "Complaint by Mr Example about call handling; keep for the ombudsman"


async def token(client: Client, role: Role = Role.COMPLAINTS,
                tenant: str = "camden") -> dict[str, str]:
    return bearer(await make_token(client.app[DATABASE], tenant, role, START))


async def put(client: Client, tenant: str = "camden", **fields: Any) -> Item:
    archive = client.app[ARCHIVE]
    async with archive.db.session() as session:
        await ensure_tenant(session, tenant, archive.clock.now())
        await session.commit()
    return await archive.put(tenant=tenant, channel=Channel.CALL, external_id=str(uuid.uuid4()),
                             started_at=archive.clock.now(), media_type="audio/wav",
                             chunks=iter_bytes(b"RIFF...."), actor=Actor("t", "ingest"),
                             fields=fields)


async def place(client: Client, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/holds", json={"case_ref": "CMP-7", "reason": REASON, **body},
                          headers=headers)
    answer: dict[str, Any] = await r.json()
    assert r.status == 201, answer
    assert r.headers["Location"] == f"/v1/holds/{answer['id']}"
    return answer


async def holds_in_index(client: Client) -> int:
    async with client.app[DATABASE].reader() as session:
        return len((await session.exec(select(Hold.id))).all())


async def test_a_hold_placed_shows_in_items_and_search_until_released(client: Client) -> None:
    headers = await token(client)
    held, other = await put(client), await put(client)
    gone = await put(client)
    await client.app[ARCHIVE].destroy("camden", gone.id, reason="erasure",
                                      actor=Actor("t", "privacy"))
    hold = await place(client, headers, item_ids=[str(held.id), str(gone.id)])
    assert hold["case_ref"] == "CMP-7" and hold["reason"] == REASON
    assert hold["status"] == "active" and hold["query"] is None
    assert hold["item_count"] == 1 and hold["already_destroyed"] == [str(gone.id)]
    assert hold["placed_by"].startswith("token:") and hold["placed_at"] == START.isoformat()
    assert hold["released_by"] is None and hold["released_at"] is None

    item = await (await client.get(f"/v1/items/{held.id}", headers=headers)).json()
    assert item["holds"] == ["CMP-7"]
    for params in ({"held": "true"}, {"case_ref": "CMP-7"}):
        found = await (await client.get("/v1/items", params=params, headers=headers)).json()
        assert [i["id"] for i in found["items"]] == [str(held.id)]
        assert found["items"][0]["holds"] == ["CMP-7"]
    unheld = await (await client.get("/v1/items", params={"held": "false"},
                                     headers=headers)).json()
    assert [i["id"] for i in unheld["items"]] == [str(other.id)]

    r = await client.post(f"/v1/holds/{hold['id']}/release",
                          json={"reason": "closed"}, headers=headers)
    released = await r.json()
    assert r.status == 200, released
    assert released["status"] == "released" and released["release_reason"] == "closed"
    assert released["released_by"] == hold["placed_by"] and released["item_count"] == 1
    item = await (await client.get(f"/v1/items/{held.id}", headers=headers)).json()
    assert item["holds"] == []
    found = await (await client.get("/v1/items", params={"case_ref": "CMP-7"},
                                    headers=headers)).json()
    assert found["items"] == []


async def test_a_query_hold_takes_items_that_arrive_later(client: Client) -> None:
    headers = await token(client, Role.ADMIN)
    now = await put(client, caller_number=NUMBER)
    await put(client, caller_number="+447700900123")
    hold = await place(client, headers, query={"caller_number": "020 7946 0000"})
    assert hold["item_count"] == 1 and hold["query"] == {"caller_number": "020 7946 0000"}
    later = await put(client, called_number=NUMBER)
    r = await client.get(f"/v1/holds/{hold['id']}", headers=headers)
    body = await r.json()
    assert r.status == 200, body
    assert body["item_count"] == 2 and body["next_cursor"] is None
    assert body["items"] == [
        {"id": str(i.id), "channel": "call", "started_at": i.started_at.isoformat(),
         "status": "active"} for i in sorted([now, later], key=lambda i: i.id)]


@pytest.mark.parametrize(("body", "fields"), [
    ({"case_ref": "C", "reason": "r"}, ["item_ids"]),
    ({"case_ref": "C", "reason": "r", "item_ids": ["ID"], "query": {"agent_id": "a"}},
     ["query"]),
    ({"case_ref": "C", "reason": "r", "item_ids": ["ID", "nope", 7]},
     ["item_ids[1]", "item_ids[2]"]),
    ({"case_ref": "C", "reason": "r", "item_ids": "ID"}, ["item_ids"]),
    ({"case_ref": "C", "reason": "r", "item_ids": []}, ["item_ids"]),
    ({"case_ref": 5, "reason": "", "item_ids": ["ID"], "colour": "red"},
     ["case_ref", "colour", "reason"]),
    ({"reason": "r", "query": {"status": "erased", "held": "true", "agent_id": "a"}},
     ["case_ref", "query.held", "query.status"]),
    ({"case_ref": "C", "reason": "r", "query": ["agent_id"]}, ["query"]),
    ({"case_ref": "C", "reason": "r", "query": {"caller_number": "call me", "limit": 1}},
     ["query.caller_number", "query.limit"]),
    ({"case_ref": "C", "reason": "r", "query": {}}, ["query"]),
    ({"case_ref": "C", "reason": "r", "item_ids": ["ID", "UNKNOWN"]}, ["item_ids[1]"]),
])
async def test_bad_holds_are_400_naming_every_field_and_create_nothing(
    client: Client, body: dict[str, Any], fields: list[str]
) -> None:
    headers = await token(client)
    item = await put(client)
    text = json.dumps(body).replace('"ID"', f'"{item.id}"').replace(
        '"UNKNOWN"', f'"{uuid.uuid4()}"')
    r = await client.post("/v1/holds", data=text, headers=headers)
    answer = await r.json()
    assert r.status == 400 and r.content_type == PROBLEM, answer
    assert sorted(e["field"] for e in answer["errors"]) == fields
    assert await holds_in_index(client) == 0


@pytest.mark.parametrize("data", ["not json", "[1, 2]", ""])
async def test_a_body_that_is_not_a_json_object_is_400(client: Client, data: str) -> None:
    r = await client.post("/v1/holds", data=data, headers=await token(client))
    assert r.status == 400
    assert [e["field"] for e in (await r.json())["errors"]] == ["body"]


async def test_adding_items_and_releasing(client: Client) -> None:
    headers = await token(client)
    first, second, third = await put(client), await put(client), await put(client)
    hold = await place(client, headers, item_ids=[str(first.id)])
    url = f"/v1/holds/{hold['id']}"
    r = await client.post(f"{url}/items", json={"item_ids": [str(first.id), str(second.id)]},
                          headers=headers)
    body = await r.json()
    assert r.status == 200, body
    assert body == {"added": [str(second.id)], "already_held": [str(first.id)],
                    "already_destroyed": [], "item_count": 2}
    for bad, fields in [({}, ["item_ids"]), ({"item_ids": ["x"], "also": 1},
                                             ["also", "item_ids[0]"]),
                        ({"item_ids": [str(uuid.uuid4())]}, ["item_ids[0]"])]:
        r = await client.post(f"{url}/items", json=bad, headers=headers)
        assert r.status == 400
        assert sorted(e["field"] for e in (await r.json())["errors"]) == fields
    r = await client.post(f"{url}/release", json={}, headers=headers)
    assert r.status == 400 and [e["field"] for e in (await r.json())["errors"]] == ["reason"]
    r = await client.post(f"{url}/release", json={"reason": "done", "x": 1}, headers=headers)
    assert r.status == 400 and [e["field"] for e in (await r.json())["errors"]] == ["x"]
    assert (await client.post(f"{url}/release", json={"reason": "done"},
                              headers=headers)).status == 200
    r = await client.post(f"{url}/release", json={"reason": "again"}, headers=headers)
    assert r.status == 409 and r.content_type == PROBLEM
    r = await client.post(f"{url}/items", json={"item_ids": [str(third.id)]}, headers=headers)
    assert r.status == 409


async def test_holds_are_listed_filtered_and_paged(client: Client) -> None:
    headers = await token(client)
    item = await put(client)
    made = [await place(client, headers, case_ref=case, item_ids=[str(item.id)])
            for case in ("CMP-1", "CMP-2", "CMP-1")]
    await client.post(f"/v1/holds/{made[0]['id']}/release", json={"reason": "done"},
                      headers=headers)
    r = await client.get("/v1/holds", headers=headers)
    body = await r.json()
    assert r.status == 200, body
    # Placed in the same instant: newest first falls back on the (time-ordered) id.
    assert [h["id"] for h in body["holds"]] == [h["id"] for h in reversed(made)]
    assert all(h["item_count"] == 1 for h in body["holds"]) and body["next_cursor"] is None
    r = await client.get("/v1/holds", params={"status": "active", "case_ref": "CMP-1"},
                         headers=headers)
    assert [h["id"] for h in (await r.json())["holds"]] == [made[2]["id"]]
    r = await client.get("/v1/holds", params={"limit": "2"}, headers=headers)
    page = await r.json()
    assert len(page["holds"]) == 2
    r = await client.get("/v1/holds", params={"limit": "2", "cursor": page["next_cursor"]},
                         headers=headers)
    assert [h["id"] for h in (await r.json())["holds"]] == [made[0]["id"]]
    r = await client.get("/v1/holds", params={"status": "closed", "limit": "0", "x": "1"},
                         headers=headers)
    assert r.status == 400
    assert sorted(e["field"] for e in (await r.json())["errors"]) == ["limit", "status", "x"]
    r = await client.get(f"/v1/holds/{made[0]['id']}", params={"limit": "501"},
                         headers=headers)
    assert r.status == 400


async def test_roles_and_tenants(client: Client) -> None:
    item = await put(client)
    hold = await place(client, await token(client), item_ids=[str(item.id)])
    routes = [("GET", "/v1/holds", None), ("GET", f"/v1/holds/{hold['id']}", None),
              ("POST", "/v1/holds", {"case_ref": "C", "reason": "r",
                                     "item_ids": [str(item.id)]}),
              ("POST", f"/v1/holds/{hold['id']}/items", {"item_ids": [str(item.id)]}),
              ("POST", f"/v1/holds/{hold['id']}/release", {"reason": "r"})]
    for role in (Role.QUALITY, Role.INGEST, Role.AUDITOR, Role.PRIVACY):
        headers = await token(client, role)
        for method, path, body in routes:
            r = await client.request(method, path, json=body, headers=headers)
            assert r.status == 403, (role, path)
    barnet = await token(client, Role.ADMIN, "barnet")
    listed = await (await client.get("/v1/holds", headers=barnet)).json()
    assert listed["holds"] == []
    for method, path, body in routes[1:]:
        if path == "/v1/holds":
            continue
        r = await client.request(method, path, json=body, headers=barnet)
        assert r.status == 404, path
        assert "CMP-7" not in await r.text()
    r = await client.post("/v1/holds", json=routes[2][2], headers=barnet)
    assert r.status == 400  # camden's item is no item of barnet's
    assert (await client.get("/v1/holds/not-a-uuid", headers=barnet)).status == 404
    item_json = await (await client.get(f"/v1/items/{item.id}",
                                        headers=await token(client))).json()
    assert item_json["holds"] == ["CMP-7"]  # none of that released or changed it


async def test_hold_requests_are_audited_without_reasons(client: Client) -> None:
    headers = await token(client)
    item = await put(client, caller_number=NUMBER)
    hold = await place(client, headers, query={"caller_number": NUMBER})
    await client.get("/v1/holds", headers=headers)
    await client.get(f"/v1/holds/{hold['id']}", headers={**headers, "X-Purpose": "review"})
    await client.post(f"/v1/holds/{hold['id']}/items", json={"item_ids": [str(item.id)]},
                      headers=headers)
    await client.post(f"/v1/holds/{hold['id']}/release",
                      json={"reason": "Mr Example withdrew"}, headers=headers)
    async with client.app[DATABASE].reader() as session:
        events = (await session.exec(
            select(AuditEvent).where(col(AuditEvent.action).startswith("hold."))
            .order_by(col(AuditEvent.seq)))).all()
    assert [e.action for e in events] == ["hold.place", "hold.list", "hold.view", "hold.add",
                                          "hold.release"]
    assert events[2].detail == {"purpose": "review", "hold_id": hold["id"], "items": 1}
    text = json.dumps([e.detail for e in events])
    for secret in ("Example", "ombudsman", NUMBER, "2079460000", "7946 0000"):
        assert secret not in text
