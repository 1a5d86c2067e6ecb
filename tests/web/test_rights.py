"""Data-subject rights over HTTP: correction with history, erasure, anonymisation, subject
access; roles, tenants and bad input on every route."""

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from archive.clock import ManualClock
from archive.errors import IntegrityFailureError, NotFoundError
from archive.ids import uuid7
from archive.models import (
    AuditEvent,
    Channel,
    Destruction,
    Export,
    Hold,
    HoldItem,
    Item,
    ItemVersion,
    Role,
)
from archive.service import Actor
from archive.tokens import ensure_tenant
from ingest.transcripts import Message, Transcript
from storage.base import iter_bytes, read_all
from tests.conftest import START, Client
from tests.helpers import bearer, make_token
from web.keys import ARCHIVE, DATABASE

PROBLEM = "application/problem+json"
INGEST = Actor("token:ingest", "ingest")
NAME, EMAIL, PHONE, POSTCODE = "Ann Smith", "ann.smith@example.org", "+442079460123", "SW1A 1AA"
PERSONAL = [NAME, "Smith", EMAIL, PHONE, "7946", POSTCODE, "07700 900123"]
REASON = "Ann Smith asked us to"  # a reason may name the person: never stored for erasure


async def _headers(client: Client, clock: ManualClock, role: Role = Role.PRIVACY,
                   tenant: str = "camden") -> dict[str, str]:
    return bearer(await make_token(client.app[DATABASE], tenant, role, clock.now()))


async def _chat(client: Client, external_id: str = "chat-1", tenant: str = "camden",
                **fields: Any) -> str:
    archive = client.app[ARCHIVE]
    async with archive.db.session() as session:
        await ensure_tenant(session, tenant, archive.clock.now())
        await session.commit()
    transcript = Transcript(messages=(
        Message(START, "customer", NAME, f"I'm {NAME}, {EMAIL}, 07700 900123, SW1A 1AA"),
        Message(START, "agent", "Raj", "Thank you Ann, noted."),
    ))
    item = await archive.put(
        tenant=tenant, channel=Channel.CHAT, external_id=external_id, started_at=START,
        media_type="application/json", chunks=iter_bytes(transcript.to_json_bytes()),
        actor=INGEST, fields={"customer_name": NAME, "customer_name_key": NAME.casefold(),
                              "customer_email": EMAIL, "customer_postcode": POSTCODE,
                              **fields})
    return str(item.id)


async def _call(client: Client, external_id: str = "call-1", tenant: str = "camden",
                **fields: Any) -> str:
    archive = client.app[ARCHIVE]
    async with archive.db.session() as session:
        await ensure_tenant(session, tenant, archive.clock.now())
        await session.commit()
    item = await archive.put(
        tenant=tenant, channel=Channel.CALL, external_id=external_id, started_at=START,
        media_type="audio/wav", chunks=iter_bytes(b"RIFF" + b"\1" * 3000), actor=INGEST,
        fields={"caller_number": PHONE, "direction": "inbound", "agent_id": "raj",
                "service": "housing", "queue": "repairs", "duration": 30.0,
                "customer_postcode": POSTCODE, "tags": ["angry"], **fields})
    return str(item.id)


async def _hold(client: Client, item_id: str, case_ref: str = "C-2026-007") -> None:
    now = client.app[ARCHIVE].clock.now()
    hold = Hold(id=uuid7(), tenant="camden", case_ref=case_ref, reason="complaint",
                placed_by="token:x", placed_at=now)
    async with client.app[DATABASE].session() as session:
        session.add(hold)
        await session.flush()
        session.add(HoldItem(hold_id=hold.id, item_id=uuid.UUID(item_id), added_by="token:x",
                             added_at=now))
        await session.commit()


async def _row(client: Client, item_id: str) -> Item:
    async with client.app[DATABASE].reader() as session:
        item = await session.get(Item, uuid.UUID(item_id))
    assert item is not None
    return item


async def _object_keys(client: Client) -> list[str]:
    return sorted([i.key async for i in client.app[ARCHIVE].store.list("")])


async def _all(client: Client, model: type[Any]) -> list[Any]:
    async with client.app[DATABASE].reader() as session:
        return list((await session.exec(select(model))).all())


# -- routes, roles, tenants -----------------------------------------------------------------

WRITES = [("PATCH", "/v1/items/{id}", {"reason": "r", "fields": {"service": "x"}}),
          ("DELETE", "/v1/items/{id}", {"reason": "r"}),
          ("POST", "/v1/items/{id}/anonymise", {"reason": "r"}),
          ("POST", "/v1/erasure", {"reason": "r", "email": EMAIL}),
          ("POST", "/v1/subject-access", {"email": EMAIL})]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_write_routes_refuse_other_roles_and_no_token(
    client: Client, clock: ManualClock, method: str, path: str, body: dict[str, Any]
) -> None:
    item_id = await _chat(client)
    url = path.format(id=item_id)
    assert (await client.request(method, url, json=body)).status == 401
    for role in (Role.COMPLAINTS, Role.QUALITY, Role.INGEST, Role.AUDITOR):
        r = await client.request(method, url, json=body, headers=await _headers(
            client, clock, role))
        assert r.status == 403, role
    row = await _row(client, item_id)
    assert row.status == "active" and row.customer_email == EMAIL and row.service is None


async def test_history_is_for_privacy_admin_and_complaints(
    client: Client, clock: ManualClock
) -> None:
    item_id = await _chat(client)
    url = f"/v1/items/{item_id}/history"
    assert (await client.get(url)).status == 401
    for role in (Role.QUALITY, Role.INGEST, Role.AUDITOR):
        assert (await client.get(url, headers=await _headers(client, clock, role))).status == 403
    for role in (Role.PRIVACY, Role.ADMIN, Role.COMPLAINTS):
        r = await client.get(url, headers=await _headers(client, clock, role))
        assert r.status == 200
        assert await r.json() == {"versions": [{"version": 1, "current": True, "fields": {
            "caller_number": None, "called_number": None, "customer_name": NAME,
            "customer_email": EMAIL, "customer_postcode": POSTCODE, "agent_id": None,
            "agent_extension": None, "service": None, "queue": None, "direction": None,
            "tags": None, "special_category": False}}]}


@pytest.mark.parametrize(("method", "path", "body"), [
    *WRITES[:3], ("GET", "/v1/items/{id}/history", None)])
async def test_another_tenants_item_is_not_found(
    client: Client, clock: ManualClock, method: str, path: str, body: dict[str, Any] | None
) -> None:
    item_id = await _chat(client, tenant="barnet")
    headers = await _headers(client, clock, Role.ADMIN)  # camden's admin
    r = await client.request(method, path.format(id=item_id), json=body, headers=headers)
    assert r.status == 404 and r.content_type == PROBLEM
    r = await client.request(method, path.format(id="not-a-uuid"), json=body, headers=headers)
    assert r.status == 404
    row = await _row(client, item_id)
    assert row.status == "active" and row.customer_email == EMAIL


async def test_other_tenants_items_are_never_erased_or_found(
    client: Client, clock: ManualClock
) -> None:
    theirs = await _chat(client, tenant="barnet")
    headers = await _headers(client, clock)
    r = await client.post("/v1/erasure", json={"email": EMAIL, "reason": "r"}, headers=headers)
    assert await r.json() == {"erased": [], "held": []}
    r = await client.post("/v1/subject-access", json={"email": EMAIL}, headers=headers)
    assert r.status == 200 and await r.json() == {"items": [], "export": None}
    assert (await _row(client, theirs)).customer_email == EMAIL


# -- rectification --------------------------------------------------------------------------

async def test_rectification_round_trip_with_history(client: Client, clock: ManualClock) -> None:
    item_id = await _chat(client)
    headers = await _headers(client, clock)
    clock.advance(timedelta(minutes=1))
    r = await client.patch(f"/v1/items/{item_id}", headers=headers, json={
        "reason": "misspelt at the contact centre",
        "fields": {"customer_name": "Anne Smith", "caller_number": "07700 900 123"}})
    body = await r.json()
    assert r.status == 200, body
    assert body["customer"]["name"] == "Anne Smith" and body["caller_number"] == "+447700900123"
    clock.advance(timedelta(minutes=1))
    r = await client.patch(f"/v1/items/{item_id}", headers=headers, json={
        "reason": "moved house", "fields": {"customer_postcode": "m1 1ae", "tags": ["moved"],
                                            "special_category": True}})
    assert r.status == 200
    row = await _row(client, item_id)
    assert row.customer_name_key == "anne smith" and row.customer_postcode == "M1 1AE"
    assert row.updated_at == clock.now()
    r = await client.get(f"/v1/items/{item_id}/history", headers=headers)
    versions = (await r.json())["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[0]["fields"]["customer_name"] == NAME
    assert versions[0]["fields"]["caller_number"] is None
    assert versions[0]["reason"] == "misspelt at the contact centre"
    assert versions[0]["replaced_by"].startswith("token:")
    assert versions[1]["fields"]["customer_name"] == "Anne Smith"
    assert versions[1]["fields"]["customer_postcode"] == POSTCODE
    assert versions[1]["reason"] == "moved house"
    assert versions[2]["current"] is True and versions[2]["fields"]["tags"] == ["moved"]
    events = [e for e in await _all(client, AuditEvent) if e.action == "item.rectify"]
    assert [e.detail for e in events] == [
        {"fields": ["caller_number", "customer_name"], "version": 2},
        {"fields": ["customer_postcode", "special_category", "tags"], "version": 3}]


async def test_rectification_names_every_bad_field(client: Client, clock: ManualClock) -> None:
    item_id = await _chat(client)
    headers = await _headers(client, clock)
    r = await client.patch(f"/v1/items/{item_id}", headers=headers, json={
        "fields": {"caller_number": "phone me", "customer_email": "nobody", "colour": "red",
                   "direction": "up", "special_category": "maybe", "customer_postcode": 12}})
    assert r.status == 400 and r.content_type == PROBLEM
    fields = sorted(e["field"] for e in (await r.json())["errors"])
    assert fields == ["fields.caller_number", "fields.colour", "fields.customer_email",
                      "fields.customer_postcode", "fields.direction",
                      "fields.special_category", "reason"]
    for bad in ({"reason": "r"}, {"reason": "r", "fields": {}},
                {"reason": "x" * 2001, "fields": {"service": "x"}},
                {"reason": "r", "fields": {"customer_name": NAME}}):  # changes nothing
        r = await client.patch(f"/v1/items/{item_id}", headers=headers, json=bad)
        assert r.status == 400, bad
    r = await client.patch(f"/v1/items/{item_id}", headers=headers, data=b"not json")
    assert r.status == 400 and (await r.json())["errors"][0]["field"] == "body"
    assert await _all(client, ItemVersion) == []
    assert (await _row(client, item_id)).customer_email == EMAIL


# -- erasure --------------------------------------------------------------------------------

async def test_erasure_leaves_nothing_that_decrypts(client: Client, clock: ManualClock) -> None:
    item_id = await _chat(client)
    headers = await _headers(client, clock)
    await client.patch(f"/v1/items/{item_id}", headers=headers, json={
        "reason": "r", "fields": {"customer_email": "ann@example.net"}})
    before = await _row(client, item_id)
    r = await client.delete(f"/v1/items/{item_id}", headers=headers,
                            json={"reason": REASON, "request_ref": "DSR-2026/17"})
    body = await r.json()
    assert r.status == 200, body
    assert set(body) == {"id", "item_id", "channel", "reason", "destroyed_at",
                         "stored_sha256", "actor"}
    assert body["item_id"] == item_id and body["reason"] == "erasure"
    assert body["stored_sha256"] == before.sha256
    assert await _object_keys(client) == []
    row = await _row(client, item_id)
    assert row.status == "erased" and row.wrapped_key is None and row.kek_id is None
    for name in ("caller_number", "called_number", "customer_name", "customer_name_key",
                 "customer_email", "customer_postcode", "tags", "extra"):
        assert getattr(row, name) is None, name
    archive = client.app[ARCHIVE]
    with pytest.raises(NotFoundError):
        await read_all(archive.read(row))
    with pytest.raises(IntegrityFailureError):  # a copy of the old row finds no object
        await read_all(archive.read(before))
    assert await _all(client, ItemVersion) == []
    records = await _all(client, Destruction)
    events = await _all(client, AuditEvent)
    stored = json.dumps([r.model_dump(mode="json") for r in records]
                        + [e.detail for e in events])
    for value in [*PERSONAL, "ann@example.net", "Ann"]:
        assert value not in stored, value
    erase_event = next(e for e in events if e.action == "item.erase")
    assert erase_event.detail == {"reason": "erasure", "destruction_id": body["id"],
                                  "request_ref": "DSR-2026/17"}
    r = await client.delete(f"/v1/items/{item_id}", headers=headers, json={"reason": "again"})
    assert r.status == 409
    r = await client.get(f"/v1/items/{item_id}/history", headers=headers)
    assert [v["version"] for v in (await r.json())["versions"]] == [1]


async def test_erasure_reason_in_the_query_and_bad_requests(
    client: Client, clock: ManualClock
) -> None:
    item_id = await _call(client)
    headers = await _headers(client, clock, Role.ADMIN)
    for body, query, bad in [(None, {}, ["reason"]), ({"reason": ""}, {}, ["reason"]),
                             ({"reason": "r", "why": 1}, {}, ["why"]),
                             (None, {"reason": "r", "request_ref": "no spaces!"},
                              ["request_ref"])]:
        r = await client.delete(f"/v1/items/{item_id}", headers=headers, json=body,
                                params=query)
        assert r.status == 400
        assert [e["field"] for e in (await r.json())["errors"]] == bad
    assert len(await _object_keys(client)) == 1
    r = await client.delete(f"/v1/items/{item_id}", headers=headers, params={"reason": "r"})
    assert r.status == 200 and (await r.json())["channel"] == "call"
    assert await _object_keys(client) == []


async def test_erasure_of_a_held_item_changes_nothing(client: Client, clock: ManualClock) -> None:
    item_id = await _chat(client)
    await _hold(client, item_id)
    before = await _row(client, item_id)
    headers = await _headers(client, clock)
    for r in (await client.delete(f"/v1/items/{item_id}", headers=headers,
                                  json={"reason": "r"}),
              await client.post(f"/v1/items/{item_id}/anonymise", headers=headers,
                                json={"reason": "r"})):
        assert r.status == 409 and r.content_type == PROBLEM
        assert "C-2026-007" in (await r.json())["detail"]
    after = await _row(client, item_id)
    assert after.model_dump() == before.model_dump()
    assert await _object_keys(client) == [before.object_key]
    assert await _all(client, Destruction) == []
    archive = client.app[ARCHIVE]
    assert NAME in (await read_all(archive.read(after))).decode()


async def test_bulk_erasure_splits_erased_and_held(client: Client, clock: ManualClock) -> None:
    call_a = await _call(client, "a")
    call_b = await _call(client, "b", caller_number="+441632960999", called_number=PHONE)
    held = await _call(client, "c")
    untouched = await _call(client, "d", caller_number="+441632960998")
    chat = await _chat(client)
    await _hold(client, held, "C-1")
    await _hold(client, held, "C-2")
    headers = await _headers(client, clock)
    r = await client.post("/v1/erasure", headers=headers,
                          json={"caller_number": "020 7946 0123", "reason": REASON})
    body = await r.json()
    assert r.status == 200, body
    assert sorted(d["item_id"] for d in body["erased"]) == sorted([call_a, call_b])
    assert body["held"] == [{"item_id": held, "case_refs": ["C-1", "C-2"]}]
    assert (await _row(client, untouched)).status == "active"
    assert (await _row(client, held)).caller_number == PHONE
    r = await client.post("/v1/erasure", headers=headers,
                          json={"email": "ANN.SMITH@example.org", "reason": "r"})
    assert [d["item_id"] for d in (await r.json())["erased"]] == [chat]
    summary = [e.detail for e in await _all(client, AuditEvent)
               if e.action == "erasure.request"]
    assert summary == [{"identifier": "caller_number", "erased": 2, "held": 1},
                       {"identifier": "email", "erased": 1, "held": 0}]
    for bad, fields in [({"reason": "r"}, ["caller_number", "email"]),
                        ({"reason": "r", "caller_number": PHONE, "email": EMAIL},
                         ["caller_number", "email"]),
                        ({"caller_number": "not a number"}, ["reason", "caller_number"]),
                        ({"reason": "r", "email": "nobody"}, ["email"])]:
        r = await client.post("/v1/erasure", headers=headers, json=bad)
        assert r.status == 400
        assert [e["field"] for e in (await r.json())["errors"]] == fields


# -- anonymisation --------------------------------------------------------------------------

async def test_anonymising_a_chat_keeps_a_readable_transcript(
    client: Client, clock: ManualClock
) -> None:
    item_id = await _chat(client)
    old_key = (await _row(client, item_id)).object_key
    headers = await _headers(client, clock)
    r = await client.post(f"/v1/items/{item_id}/anonymise", headers=headers,
                          json={"reason": REASON})
    body = await r.json()
    assert r.status == 200, body
    assert body["destruction"] is None
    item = body["item"]
    assert item["status"] == "anonymised"
    assert item["customer"] == {"name": None, "email": None, "postcode": "SW1A"}
    row = await _row(client, item_id)
    assert row.object_key != old_key and await _object_keys(client) == [row.object_key]
    text = (await read_all(client.app[ARCHIVE].read(row))).decode()
    for value in [*PERSONAL, "Ann", "Raj"]:
        assert value not in text, value
    assert "[NAME]" in text and "[EMAIL]" in text and "[PHONE]" in text
    stored = json.dumps([e.detail for e in await _all(client, AuditEvent)])
    assert all(v not in stored for v in PERSONAL) and "Ann" not in stored
    r = await client.post(f"/v1/items/{item_id}/anonymise", headers=headers,
                          json={"reason": "again"})
    assert r.status == 409
    r = await client.post(f"/v1/items/{item_id}/anonymise", headers=headers, json={})
    assert r.status == 400 and (await r.json())["errors"][0]["field"] == "reason"


async def test_anonymising_a_call_destroys_the_audio_and_keeps_statistics(
    client: Client, clock: ManualClock
) -> None:
    item_id = await _call(client, called_number="+441632960001")
    before = await _row(client, item_id)
    headers = await _headers(client, clock, Role.ADMIN)
    r = await client.post(f"/v1/items/{item_id}/anonymise", headers=headers,
                          json={"reason": REASON})
    body = await r.json()
    assert r.status == 200, body
    assert body["destruction"]["reason"] == "anonymisation"
    assert body["destruction"]["stored_sha256"] == before.sha256
    item = body["item"]
    assert item["status"] == "anonymised"
    assert (item["caller_number"], item["called_number"], item["tags"]) == (None, None, [])
    assert item["customer"]["postcode"] == "SW1A"
    assert (item["direction"], item["agent_id"], item["service"], item["queue"],
            item["duration"], item["started_at"]) == (
        "inbound", "raj", "housing", "repairs", 30.0, START.isoformat())
    assert item["media"]["size"] == before.plain_size
    assert await _object_keys(client) == []
    row = await _row(client, item_id)
    assert row.wrapped_key is None
    with pytest.raises(NotFoundError):
        await read_all(client.app[ARCHIVE].read(row))
    r = await client.delete(f"/v1/items/{item_id}", headers=headers, json={"reason": "r"})
    assert r.status == 409


# -- subject access -------------------------------------------------------------------------

async def test_subject_access_finds_items_across_channels(
    client: Client, clock: ManualClock
) -> None:
    chat = await _chat(client)
    call = await _call(client)
    other = await _call(client, "other", caller_number="+441632960998", customer_postcode=None)
    headers = await _headers(client, clock)
    for body, expected in [({"caller_number": "+44 20 7946 0123"}, [call]),
                           ({"email": " Ann.Smith@Example.org"}, [chat]),
                           ({"name": "ann smith"}, [chat]),
                           ({"postcode": "sw1a1aa"}, [chat, call]),
                           ({"email": EMAIL, "caller_number": "07700900000"}, [chat])]:
        r = await client.post("/v1/subject-access", headers=headers,
                              json={**body, "purpose": "SAR 2026-17"})
        answer = await r.json()
        assert r.status == 201, answer
        assert sorted(i["id"] for i in answer["items"]) == sorted(expected), body
        export_id = answer["export"]["id"]
        assert answer["export"] == {"id": export_id, "item_count": len(expected),
                                    "download": f"/v1/exports/{export_id}/bundle.zip"}
    exports = await _all(client, Export)
    assert {e.kind for e in exports} == {"subject-access"}
    assert other not in json.dumps([e.item_ids for e in exports])
    r = await client.post("/v1/subject-access", headers=headers, json={"name": "Nobody Here"})
    assert r.status == 200 and await r.json() == {"items": [], "export": None}
    assert len(await _all(client, Export)) == 5
    events = [e.detail for e in await _all(client, AuditEvent) if e.action == "subject.access"]
    assert events[-1] == {"purpose": "", "identifiers": ["name"], "items": 0,
                          "export_id": None}
    assert "ann" not in json.dumps(events).lower()


async def test_subject_access_names_bad_fields(client: Client, clock: ManualClock) -> None:
    headers = await _headers(client, clock)
    for body, fields in [({}, ["caller_number"]),
                         ({"purpose": "x"}, ["caller_number"]),
                         ({"caller_number": "abc", "email": "no", "postcode": "ZZZ",
                           "name": 5, "ssn": "1"},
                          ["ssn", "caller_number", "email", "name", "postcode"])]:
        r = await client.post("/v1/subject-access", headers=headers, json=body)
        assert r.status == 400 and r.content_type == PROBLEM
        assert [e["field"] for e in (await r.json())["errors"]] == fields
    assert await _all(client, Export) == []
