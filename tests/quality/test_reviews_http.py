"""Evaluation forms and reviews over HTTP: versioned forms, reviews written, edited by their
author only, listed, their history; chats, other tenants, destroyed calls and roles refused;
reviews gone once the call is purged. Runs on SQLite and PostgreSQL."""

import uuid
from typing import Any

from sqlmodel import col, select

from archive.clock import ManualClock
from archive.models import AuditEvent, Channel, Item, Review, ReviewVersion, Role
from archive.service import Actor
from archive.tokens import ensure_tenant
from lifecycle.purge import purge_pass
from storage.base import iter_bytes
from tests.conftest import START, Client
from tests.helpers import bearer, make_token
from web.keys import ARCHIVE, DATABASE

T = "camden"
FORM = {"name": "Council tax calls", "criteria": [
    {"key": "greeting", "label": "Greets and identifies", "weight": 1, "max_score": 5},
    {"key": "resolution", "label": "Resolves the query", "weight": 3, "max_score": 10},
]}
SCORES = {"greeting": 4, "resolution": 7}  # 100 * (1 * 4/5 + 3 * 7/10) / 4 = 72.5
NOTES = "Caller Mrs Example was not offered the single person discount"


async def token(client: Client, role: Role, tenant: str = T) -> dict[str, str]:
    return bearer(await make_token(client.app[DATABASE], tenant, role, START))


async def put(client: Client, channel: Channel = Channel.CALL, tenant: str = T) -> Item:
    archive = client.app[ARCHIVE]
    async with archive.db.session() as session:
        await ensure_tenant(session, tenant, archive.clock.now())
        await session.commit()
    return await archive.put(tenant=tenant, channel=channel, external_id=str(uuid.uuid4()),
                             started_at=archive.clock.now(),
                             media_type="audio/wav" if channel == Channel.CALL
                             else "application/json",
                             chunks=iter_bytes(b"RIFF...." if channel == Channel.CALL
                                               else b"{}"),
                             actor=Actor("t", "ingest"), fields={"agent_id": "a1"})


async def json_of(r: Any, status: int) -> Any:
    body = await r.json()
    assert r.status == status, body
    return body


async def test_forms_are_saved_in_versions_and_read_by_monitors(client: Client) -> None:
    admin, quality = await token(client, Role.ADMIN), await token(client, Role.QUALITY)
    first = await json_of(await client.post("/v1/forms", json=FORM, headers=admin), 201)
    r = await client.post("/v1/forms", json={**FORM, "criteria": FORM["criteria"][:1]},
                          headers=admin)
    second = await json_of(r, 201)
    assert r.headers["Location"] == "/v1/forms/Council%20tax%20calls/versions/2"
    assert (first["version"], second["version"]) == (1, 2)
    assert first["criteria"] == FORM["criteria"] and second["created_by"].startswith("token:")
    await json_of(await client.post("/v1/forms", json={**FORM, "name": "Chats"},
                                    headers=admin), 201)

    listed = await json_of(await client.get("/v1/forms", headers=quality), 200)
    assert [(f["name"], f["version"]) for f in listed["forms"]] == [
        ("Chats", 1), ("Council tax calls", 2)]
    detail = await json_of(await client.get("/v1/forms/Council%20tax%20calls",
                                            headers=quality), 200)
    assert detail["version"] == 2 and len(detail["criteria"]) == 1
    assert [(v["version"], v["id"]) for v in detail["versions"]] == [
        (1, first["id"]), (2, second["id"])]
    old = await json_of(await client.get("/v1/forms/Council%20tax%20calls/versions/1",
                                         headers=quality), 200)
    assert old == first
    for path in ("/v1/forms/Nope", "/v1/forms/Council%20tax%20calls/versions/3",
                 "/v1/forms/Council%20tax%20calls/versions/x",
                 "/v1/forms/Council%20tax%20calls/versions/0"):
        assert (await client.get(path, headers=quality)).status == 404, path
    # another tenant's admin sees none of them
    other = await token(client, Role.ADMIN, "barnet")
    assert (await json_of(await client.get("/v1/forms", headers=other), 200)) == {"forms": []}
    assert (await client.get("/v1/forms/Chats", headers=other)).status == 404

    # a quality monitor may not write forms; other roles may not read them
    assert (await client.post("/v1/forms", json=FORM, headers=quality)).status == 403
    for role in (Role.COMPLAINTS, Role.INGEST, Role.PRIVACY, Role.AUDITOR):
        headers = await token(client, role)
        assert (await client.get("/v1/forms", headers=headers)).status == 403, role
        assert (await client.post("/v1/forms", json=FORM, headers=headers)).status == 403

    events = await audit(client)
    assert [a for a, _, _ in events].count("form.save") == 3


async def test_a_bad_form_names_each_field(client: Client) -> None:
    admin = await token(client, Role.ADMIN)
    r = await client.post("/v1/forms", headers=admin, json={"name": "x", "criteria": [
        FORM["criteria"][0], FORM["criteria"][0],
        {"key": "c", "label": "C", "weight": -1, "max_score": 5}]})
    problem = await json_of(r, 400)
    assert r.content_type == "application/problem+json"
    assert {e["field"] for e in problem["errors"]} == {"criteria[1].key", "criteria[2].weight"}
    assert (await client.post("/v1/forms", data=b"{", headers=admin)).status == 400
    assert (await json_of(await client.get("/v1/forms", headers=admin), 200))["forms"] == []


async def audit(client: Client, tenant: str = T) -> list[tuple[str, Any, Any]]:
    async with client.app[DATABASE].reader() as session:
        rows = (await session.exec(select(AuditEvent).where(AuditEvent.tenant == tenant)
                                   .order_by(col(AuditEvent.seq)))).all()
    return [(e.action, e.item_id, e.detail) for e in rows]


async def test_reviews_written_edited_by_author_listed_and_historied(client: Client) -> None:
    admin = await token(client, Role.ADMIN)
    alice, bob = await token(client, Role.QUALITY), await token(client, Role.QUALITY)
    await json_of(await client.post("/v1/forms", json=FORM, headers=admin), 201)
    call = await put(client)
    base = f"/v1/items/{call.id}/reviews"

    r = await client.post(base, json={"form": FORM["name"], "scores": SCORES, "notes": NOTES,
                                      "training_need": True}, headers=alice)
    mine = await json_of(r, 201)
    assert r.headers["Location"] == f"{base}/mine"
    assert (mine["score"], mine["version"], mine["notes"], mine["training_need"]) == (
        72.5, 1, NOTES, True)
    assert mine["form"]["name"] == FORM["name"] and mine["form"]["version"] == 1

    # a second POST by Alice: 409 pointing to PUT, nothing changed
    again = await json_of(await client.post(base, json={"form": FORM["name"],
                                                        "scores": SCORES}, headers=alice), 409)
    assert f"PUT {base}/mine" in again["detail"]

    # Bob has no review to edit (Alice's is not his), then writes his own by form id
    assert (await client.put(f"{base}/mine", json={"training_need": False},
                             headers=bob)).status == 404
    assert (await client.get(f"{base}/mine/history", headers=bob)).status == 404
    theirs = await json_of(await client.post(base, json={
        "form_id": mine["form"]["id"], "scores": {"greeting": 5, "resolution": 10}},
        headers=bob), 201)
    assert theirs["score"] == 100 and theirs["notes"] is None

    # Alice edits hers: the version before is kept
    edited = await json_of(await client.put(f"{base}/mine", json={
        "scores": {"greeting": 5, "resolution": 9}, "training_need": False}, headers=alice), 200)
    # 100 * (1 * 5/5 + 3 * 9/10) / 4 = 92.5
    assert (edited["score"], edited["version"], edited["notes"]) == (92.5, 2, NOTES)
    bad = await json_of(await client.put(f"{base}/mine", json={
        "scores": {"greeting": 6}}, headers=alice), 400)
    assert {e["field"] for e in bad["errors"]} == {"scores.greeting", "scores.resolution"}

    listed = await json_of(await client.get(base, headers=admin), 200)
    assert [(x["reviewer"], x["score"], x["version"]) for x in listed["reviews"]] == [
        (mine["reviewer"], 92.5, 2), (theirs["reviewer"], 100.0, 1)]
    history = await json_of(await client.get(f"{base}/mine/history", headers=alice), 200)
    assert [(v["version"], v["score"], v["training_need"]) for v in history["versions"]] == [
        (1, 72.5, True), (2, 92.5, False)]

    events = await audit(client)
    actions = [(a, i) for a, i, _ in events if a.startswith("review.")]
    assert actions == [("review.create", call.id), ("review.create", call.id),
                       ("review.edit", call.id), ("review.list", call.id),
                       ("review.history", call.id)]
    assert "single person" not in repr(events)
    assert await count(client, Review) == 2 and await count(client, ReviewVersion) == 1


async def count(client: Client, model: Any) -> int:
    async with client.app[DATABASE].reader() as session:
        return len((await session.exec(select(model))).all())


async def test_chats_other_tenants_and_roles_are_refused(client: Client) -> None:
    admin, quality = await token(client, Role.ADMIN), await token(client, Role.QUALITY)
    await json_of(await client.post("/v1/forms", json=FORM, headers=admin), 201)
    chat, call = await put(client, Channel.CHAT), await put(client)
    theirs = await put(client, tenant="barnet")
    body = {"form": FORM["name"], "scores": SCORES}
    for headers in (quality, admin):  # reviews are of calls only
        for method, path in (("POST", ""), ("PUT", "/mine"), ("GET", ""),
                             ("GET", "/mine/history")):
            r = await client.request(method, f"/v1/items/{chat.id}/reviews{path}",
                                     json=body, headers=headers)
            assert r.status == 403, (method, path)
    for item_id in (theirs.id, uuid.uuid4(), "not-an-id"):
        for method, path in (("POST", ""), ("PUT", "/mine"), ("GET", "")):
            r = await client.request(method, f"/v1/items/{item_id}/reviews{path}",
                                     json=body, headers=quality)
            assert r.status == 404, (item_id, method, path)
    # the other tenant's quality monitor cannot use camden's form either
    barnet = await token(client, Role.QUALITY, "barnet")
    r = await client.post(f"/v1/items/{theirs.id}/reviews", json=body, headers=barnet)
    assert {e["field"] for e in (await json_of(r, 400))["errors"]} == {"form"}
    for role in (Role.COMPLAINTS, Role.INGEST, Role.PRIVACY, Role.AUDITOR):
        headers = await token(client, role)
        for method, path in (("POST", ""), ("PUT", "/mine"), ("GET", ""),
                             ("GET", "/mine/history")):
            r = await client.request(method, f"/v1/items/{call.id}/reviews{path}",
                                     json=body, headers=headers)
            assert r.status == 403, (role, method, path)
        assert (await client.get("/v1/quality/summary", params={
            "from": "2026-11-01", "to": "2026-12-01"}, headers=headers)).status == 403
    assert (await client.post(f"/v1/items/{call.id}/reviews", json=body)).status == 401
    assert await count(client, Review) == 0


async def test_reviews_go_with_the_call_when_purged(client: Client, clock: ManualClock) -> None:
    admin, quality = await token(client, Role.ADMIN), await token(client, Role.QUALITY)
    await json_of(await client.post("/v1/forms", json=FORM, headers=admin), 201)
    call = await put(client)
    base = f"/v1/items/{call.id}/reviews"
    body = {"form": FORM["name"], "scores": SCORES, "notes": NOTES}
    await json_of(await client.post(base, json=body, headers=quality), 201)
    await json_of(await client.post(base, json=body, headers=admin), 201)
    await json_of(await client.put(f"{base}/mine", json={"notes": "shorter"},
                                   headers=quality), 200)
    assert call.retain_until is not None
    clock.set(call.retain_until)
    report = await purge_pass(client.app[ARCHIVE], batch_size=10)
    assert report.destroyed == 1
    assert await count(client, Review) == 0 and await count(client, ReviewVersion) == 0
    listed = await json_of(await client.get(base, headers=quality), 200)
    assert listed["reviews"] == []
    gone = await json_of(await client.post(base, json=body, headers=quality), 409)
    assert "purged" in gone["detail"]
    assert (await client.put(f"{base}/mine", json={"notes": "x"},
                             headers=quality)).status == 409
