"""What a quality monitor may not do: search for a person, export, read chats or see who the
customer is; and that complaints staff and admins still can. Runs on SQLite and PostgreSQL."""

import uuid
from typing import Any

import pytest
from sqlmodel import select

from archive.models import AuditEvent, Channel, Item, Role
from archive.service import Actor
from archive.tokens import ensure_tenant
from storage.base import iter_bytes
from tests.conftest import START, Client
from tests.helpers import bearer, make_token
from web.keys import ARCHIVE, DATABASE

CUSTOMER = {"customer_name": "Ann Example", "customer_email": "ann@example.org",
            "customer_postcode": "SW1A 1AA"}
PERSON_FILTERS = {"caller_number": "07700 900123", "email": "ann@example.org",
                  "name": "Ann Example", "postcode": "sw1a1aa"}


async def token(client: Client, role: Role) -> dict[str, str]:
    return bearer(await make_token(client.app[DATABASE], "camden", role, START))


async def put(client: Client, channel: Channel = Channel.CALL, **fields: Any) -> Item:
    archive = client.app[ARCHIVE]
    async with archive.db.session() as session:
        await ensure_tenant(session, "camden", archive.clock.now())
        await session.commit()
    body = b"RIFF...." if channel == Channel.CALL else b"Agent: hello\nCustomer: hi\n"
    return await archive.put(
        tenant="camden", channel=channel, external_id=str(uuid.uuid4()),
        started_at=archive.clock.now(),
        media_type="audio/wav" if channel == Channel.CALL else "text/plain",
        chunks=iter_bytes(body), actor=Actor("t", "ingest"),
        fields={"agent_id": "A", "service": "housing", "caller_number": "+447700900123",
                **CUSTOMER, "customer_name_key": "ann example", **fields})


@pytest.mark.parametrize("name", sorted(PERSON_FILTERS))
async def test_a_monitor_may_not_search_for_a_person(client: Client, name: str) -> None:
    await put(client)
    r = await client.get("/v1/items", params={name: PERSON_FILTERS[name]},
                         headers=await token(client, Role.QUALITY))
    assert r.status == 403
    problem = await r.json()
    assert name in problem["detail"]
    assert [e["field"] for e in problem["errors"]] == [name]
    # Refused whatever the value (no answer hints at what exists), and several at once.
    r = await client.get("/v1/items", params={name: "", "agent_id": "A"},
                         headers=await token(client, Role.QUALITY))
    assert r.status == 403
    r = await client.get("/v1/items", params=PERSON_FILTERS,
                         headers=await token(client, Role.QUALITY))
    assert {e["field"] for e in (await r.json())["errors"]} == set(PERSON_FILTERS)


@pytest.mark.parametrize("role", [Role.COMPLAINTS, Role.ADMIN])
async def test_complaints_and_admins_still_search_for_a_person(client: Client,
                                                               role: Role) -> None:
    call = await put(client)
    headers = await token(client, role)
    for name, value in PERSON_FILTERS.items():
        r = await client.get("/v1/items", params={name: value}, headers=headers)
        assert r.status == 200, name
        assert [i["id"] for i in (await r.json())["items"]] == [str(call.id)], name


async def test_a_monitor_searches_calls_by_agent_and_service_without_customer_details(
        client: Client) -> None:
    call = await put(client)
    await put(client, Channel.CHAT)
    r = await client.get("/v1/items", params={"agent_id": "A", "service": "housing"},
                         headers=await token(client, Role.QUALITY))
    assert r.status == 200
    [found] = (await r.json())["items"]  # calls only: the chat is not shown
    assert found["id"] == str(call.id)
    assert found["customer"] == {"name": None, "email": None, "postcode": None}
    assert found["agent_id"] == "A"
    r = await client.get("/v1/items", params={"channel": "chat"},
                         headers=await token(client, Role.QUALITY))
    assert r.status == 403


async def test_a_monitor_reads_and_plays_a_call_but_not_who_the_customer_is(
        client: Client) -> None:
    call = await put(client)
    quality = await token(client, Role.QUALITY)
    r = await client.get(f"/v1/items/{call.id}", headers=quality)
    assert r.status == 200
    item = await r.json()
    assert item["customer"] == {"name": None, "email": None, "postcode": None}
    assert item["agent_id"] == "A" and item["service"] == "housing"
    r = await client.get(f"/v1/items/{call.id}/media", headers=quality)
    assert r.status == 200 and await r.read() == b"RIFF...."
    for role in (Role.COMPLAINTS, Role.ADMIN):
        r = await client.get(f"/v1/items/{call.id}", headers=await token(client, role))
        assert (await r.json())["customer"] == {"name": "Ann Example",
                                                "email": "ann@example.org",
                                                "postcode": "SW1A 1AA"}
    # The monitor's read is audited as any other.
    async with client.app[DATABASE].reader() as session:
        views = (await session.exec(select(AuditEvent).where(
            AuditEvent.action == "item.view", AuditEvent.role == "quality"))).all()
    assert [e.item_id for e in views] == [call.id]


async def test_a_monitor_may_not_read_chats(client: Client) -> None:
    chat = await put(client, Channel.CHAT)
    quality = await token(client, Role.QUALITY)
    assert (await client.get(f"/v1/items/{chat.id}", headers=quality)).status == 403
    assert (await client.get(f"/v1/items/{chat.id}/media", headers=quality)).status == 403
    complaints = await token(client, Role.COMPLAINTS)
    r = await client.get(f"/v1/items/{chat.id}", headers=complaints)
    assert r.status == 200
    assert (await r.json())["customer"]["email"] == "ann@example.org"


async def test_a_monitor_may_not_export(client: Client) -> None:
    call = await put(client)
    quality = await token(client, Role.QUALITY)
    body = {"purpose": "quality review", "item_ids": [str(call.id)]}
    assert (await client.post("/v1/exports", json=body, headers=quality)).status == 403
    r = await client.post("/v1/exports", json=body,
                          headers=await token(client, Role.COMPLAINTS))
    assert r.status == 201, await r.text()
    export = await r.json()
    assert (await client.get(f"/v1/exports/{export['id']}", headers=quality)).status == 403
    r = await client.get(f"/v1/exports/{export['id']}/bundle.zip", headers=quality)
    assert r.status == 403
