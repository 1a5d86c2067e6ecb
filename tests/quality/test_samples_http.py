"""Samples over HTTP: drawing, reading, listing, bad input, tenants and roles. Runs on SQLite
and PostgreSQL."""

from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from archive.models import AuditEvent, Role, Sample
from tests.archive.test_search import add_item, add_tenant
from tests.conftest import START, Client
from tests.helpers import bearer, make_token
from web.keys import DATABASE

PROBLEM = "application/problem+json"
FROM = (START - timedelta(days=7)).isoformat()
TO = START.isoformat()


async def token(client: Client, role: Role = Role.QUALITY,
                tenant: str = "camden") -> dict[str, str]:
    return bearer(await make_token(client.app[DATABASE], tenant, role, START))


async def seed_calls(client: Client, tenant: str = "camden") -> None:
    db = client.app[DATABASE]
    await add_tenant(db, tenant)
    n = 0
    for agent, count in {"A": 2, "B": 5, "C": 8}.items():
        for _ in range(count):
            await add_item(db, START - timedelta(days=6, hours=-n), tenant=tenant,
                           agent_id=agent, duration=90.0, service="housing",
                           caller_number="+447700900123", customer_name="Ann Example")
            n += 1


async def post(client: Client, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/samples", json={"from": FROM, "to": TO, **body},
                          headers=headers)
    answer: dict[str, Any] = await r.json()
    assert r.status == 201, answer
    assert r.headers["Location"] == f"/v1/samples/{answer['id']}"
    return answer


async def test_a_monitor_draws_reads_and_lists_samples(client: Client) -> None:
    await seed_calls(client)
    headers = await token(client)
    drawn = await post(client, headers, size=9, seed="q4-audit")
    assert drawn["seed"] == "q4-audit" and drawn["inputs"]["seed"] == "q4-audit"
    assert drawn["per_agent"] == {"A": 2, "B": 4, "C": 3} or \
        drawn["per_agent"] == {"A": 2, "B": 3, "C": 4}
    assert drawn["count"] == 9 and len(drawn["items"]) == 9
    call = drawn["items"][0]
    assert set(call) == {"id", "agent_id", "started_at", "duration", "service", "status"}
    assert call["agent_id"] == "A" and call["duration"] == 90.0 and call["service"] == "housing"
    assert "caller_number" not in call  # no contact details in a sample
    # Read back: the same calls in the same order.
    r = await client.get(f"/v1/samples/{drawn['id']}", headers=headers)
    assert r.status == 200
    assert await r.json() == drawn
    # Re-drawn by an admin (an auditor's check) from the stored inputs: the same calls.
    again = await post(client, await token(client, Role.ADMIN),
                       **{k: v for k, v in drawn["inputs"].items() if k not in ("from", "to")})
    assert [c["id"] for c in again["items"]] == [c["id"] for c in drawn["items"]]
    generated = await post(client, headers, per_agent=1)
    assert len(generated["seed"]) == 32 and generated["per_agent"] == {"A": 1, "B": 1, "C": 1}
    # Listed newest first, a page at a time.
    r = await client.get("/v1/samples", params={"limit": "2"}, headers=headers)
    page = await r.json()
    assert r.status == 200
    assert [s["id"] for s in page["samples"]] == [generated["id"], again["id"]]
    assert set(page["samples"][0]) == {"id", "seed", "inputs", "count", "created_by",
                                       "created_at"}
    r = await client.get("/v1/samples", params={"limit": "2", "cursor": page["next_cursor"]},
                         headers=headers)
    last = await r.json()
    assert [s["id"] for s in last["samples"]] == [drawn["id"]]
    assert last["next_cursor"] is None
    async with client.app[DATABASE].reader() as session:
        actions = [e.action for e in (await session.exec(select(AuditEvent))).all()]
    assert actions.count("sample.draw") == 3
    assert {"sample.view", "sample.list"} <= set(actions)


async def test_bad_input_is_refused_naming_every_field(client: Client) -> None:
    await seed_calls(client)
    headers = await token(client)
    r = await client.post("/v1/samples", json={"from": "last week", "to": TO, "size": 0,
                                               "per_agent": 5, "seed": "", "extra": 1},
                          headers=headers)
    assert r.status == 400 and r.content_type == PROBLEM
    assert {e["field"] for e in (await r.json())["errors"]} == {
        "from", "size", "per_agent", "seed", "extra"}
    r = await client.post("/v1/samples", data=b"[1, 2]", headers=headers)
    assert r.status == 400
    r = await client.post("/v1/samples", data=b"{not json", headers=headers)
    assert r.status == 400
    for params in ({"limit": "0"}, {"limit": "x"}, {"cursor": "nonsense"}, {"colour": "red"}):
        r = await client.get("/v1/samples", params=params, headers=headers)
        assert r.status == 400, params
        assert {e["field"] for e in (await r.json())["errors"]} == set(params)
    async with client.app[DATABASE].reader() as session:
        assert (await session.exec(select(Sample))).all() == []


async def test_another_tenants_sample_is_not_found(client: Client) -> None:
    await seed_calls(client)
    await seed_calls(client, "barnet")
    drawn = await post(client, await token(client), size=3)
    barnet = await token(client, tenant="barnet")
    r = await client.get(f"/v1/samples/{drawn['id']}", headers=barnet)
    assert r.status == 404
    r = await client.get("/v1/samples", headers=barnet)
    assert (await r.json())["samples"] == []
    for missing in ("not-a-uuid", "0190f5a0-0000-7000-8000-000000000000"):
        r = await client.get(f"/v1/samples/{missing}", headers=await token(client))
        assert r.status == 404
    # A sample draws only its own tenant's calls.
    ours = await post(client, barnet, size=100)
    assert not {c["id"] for c in ours["items"]} & {c["id"] for c in drawn["items"]}


async def test_auditors_read_samples_but_do_not_draw(client: Client) -> None:
    await seed_calls(client)
    drawn = await post(client, await token(client), size=3)
    headers = await token(client, Role.AUDITOR)
    r = await client.post("/v1/samples", json={"from": FROM, "to": TO, "size": 3},
                          headers=headers)
    assert r.status == 403
    listed = await client.get("/v1/samples", headers=headers)
    assert listed.status == 200
    assert [s["id"] for s in (await listed.json())["samples"]] == [drawn["id"]]
    one = await client.get(f"/v1/samples/{drawn['id']}", headers=headers)
    assert one.status == 200
    body = await one.json()
    assert body["seed"] == drawn["seed"]
    assert [c["id"] for c in body["items"]] == [c["id"] for c in drawn["items"]]


@pytest.mark.parametrize("role", [Role.COMPLAINTS, Role.INGEST, Role.PRIVACY])
async def test_other_roles_may_not_sample(client: Client, role: Role) -> None:
    await seed_calls(client)
    drawn = await post(client, await token(client), size=3)
    headers = await token(client, role)
    r = await client.post("/v1/samples", json={"from": FROM, "to": TO, "size": 3},
                          headers=headers)
    assert r.status == 403
    assert (await client.get("/v1/samples", headers=headers)).status == 403
    assert (await client.get(f"/v1/samples/{drawn['id']}", headers=headers)).status == 403
    assert (await client.post("/v1/samples", json={})).status == 401


async def test_the_routes_are_documented(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    assert {"post", "get"} <= set(doc["paths"]["/v1/samples"])
    assert "get" in doc["paths"]["/v1/samples/{sample_id}"]
    assert {"SampleRequest", "SampleDrawn", "SampleList"} <= set(doc["components"]["schemas"])
