"""Evidence bundles over HTTP: make one, read it, download it, check it with the public key."""

import base64
import dataclasses
import json
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient
from sqlmodel import select

from archive import signing
from archive.clock import ManualClock
from archive.exports import create_export, verify_bundle
from archive.models import AuditEvent, Item, Role
from archive.service import Actor
from archive.settings import Settings
from tests.conftest import Client
from tests.helpers import bearer, make_token
from tests.ingest import media
from web.app import create_app
from web.keys import ARCHIVE, DATABASE

PROBLEM = "application/problem+json"
CALL = {"external_id": "call-1", "started_at": "2026-11-23T09:00:00Z",
        "caller_number": "020 7946 0000"}
CHAT = {"external_id": "chat-1", "started_at": "2026-11-23T10:00:00Z",
        "customer": {"email": "ann@example.org"},
        "messages": [{"at": "2026-11-23T10:00:05Z", "from": "customer", "text": "Hello"}]}


async def _headers(client: Client, clock: ManualClock, role: Role,
                   tenant: str = "camden") -> dict[str, str]:
    return bearer(await make_token(client.app[DATABASE], tenant, role, clock.now()))


async def _ingest(client: Client, clock: ManualClock, tenant: str = "camden") -> list[str]:
    """A WAV call and a chat pushed through the ingest API; their ids."""
    headers = await _headers(client, clock, Role.INGEST, tenant)
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps(CALL), content_type="application/json")
    form.add_field("audio", media.wav(1.0), filename="call.wav",
                   content_type="application/octet-stream")
    r = await client.post("/v1/recordings", data=form, headers=headers)
    assert r.status == 201, await r.text()
    call = (await r.json())["id"]
    r = await client.post("/v1/transcripts", json=CHAT, headers=headers)
    assert r.status == 201, await r.text()
    return [call, (await r.json())["id"]]


async def _events(client: Client, action: str) -> list[AuditEvent]:
    async with client.app[DATABASE].reader() as session:
        return list((await session.exec(select(AuditEvent).where(
            AuditEvent.action == action).order_by(AuditEvent.seq))).all())  # type: ignore[arg-type]


async def test_an_export_is_made_downloaded_and_verified(
    client: Client, clock: ManualClock, tmp_path: Path
) -> None:
    ids = await _ingest(client, clock)
    clerk = await _headers(client, clock, Role.COMPLAINTS)
    r = await client.post("/v1/exports", headers=clerk,
                          json={"item_ids": ids, "purpose": "Ombudsman case 22-001"})
    body = await r.json()
    assert r.status == 201, body
    export_id = body["id"]
    assert body == {"id": export_id, "kind": "evidence", "item_count": 2,
                    "download": f"/v1/exports/{export_id}/bundle.zip",
                    "created_at": clock.now().isoformat()}
    assert r.headers["Location"] == f"/v1/exports/{export_id}"
    r = await client.get(f"/v1/exports/{export_id}", headers=clerk)
    record = await r.json()
    assert r.status == 200
    assert record["purpose"] == "Ombudsman case 22-001" and record["item_ids"] == ids
    assert record["role"] == "complaints" and record["download"] == body["download"]

    r = await client.get(body["download"], headers={**clerk, "X-Purpose": "send to PHSO"})
    assert r.status == 200
    assert r.content_type == "application/zip"
    assert r.headers["Content-Disposition"] == f'attachment; filename="export-{export_id}.zip"'
    assert r.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in r.headers
    path = tmp_path / "bundle.zip"
    path.write_bytes(await r.read())

    r = await client.get("/v1/signing-key")  # public: recipients need no token
    key = await r.json()
    assert r.status == 200 and key["algorithm"] == "Ed25519"
    public_key = base64.b64decode(key["public_key"])
    assert key["key_id"] == signing.key_id(public_key)
    assert verify_bundle(path, public_key) == []
    with zipfile.ZipFile(path) as zf:
        assert zf.read("items/1-call-1/recording.wav") == media.wav(1.0)
        assert zf.read("items/2-chat-1/transcript.txt").startswith(b"[2026-11-23 10:00:05 UTC]")
        trail = json.loads(zf.read("items/1-call-1/audit.json"))
        assert [e["action"] for e in trail] == ["item.ingest", "item.export"]

    created = await _events(client, "export.create")
    assert [e.detail for e in created] == [{"export_id": export_id, "kind": "evidence",
                                            "items": 2}]
    downloads = await _events(client, "export.download")
    assert [e.detail for e in downloads] == [{"export_id": export_id, "kind": "evidence",
                                              "items": 2, "purpose": "send to PHSO"}]
    assert downloads[0].role == "complaints"
    per_item = await _events(client, "item.export")
    assert sorted(str(e.item_id) for e in per_item) == sorted(ids)
    text = json.dumps([e.detail for e in created + downloads + per_item])
    assert "+44" not in text and "ann@" not in text  # no personal data in the audit log


async def test_bad_export_requests_name_every_field(client: Client, clock: ManualClock) -> None:
    ids = await _ingest(client, clock)
    theirs = await _ingest(client, clock, tenant="barnet")
    clerk = await _headers(client, clock, Role.ADMIN)

    async def fields(body: Any) -> dict[str, str]:
        r = await client.post("/v1/exports", headers=clerk, json=body)
        problem = await r.json()
        assert r.status == 400 and r.content_type == PROBLEM, problem
        return {e["field"]: e["message"] for e in problem["errors"]}

    assert set(await fields({"purpose": "x"})) == {"item_ids", "case_ref", "query"}
    assert set(await fields({"purpose": "x", "item_ids": ids, "case_ref": "C-1"})) == {
        "item_ids", "case_ref"}
    assert set(await fields({"item_ids": ids})) == {"purpose"}
    assert set(await fields({"item_ids": ["nope", 7], "purpose": 3, "colour": "red"})) == {
        "item_ids[0]", "item_ids[1]", "purpose", "colour"}
    assert set(await fields({"item_ids": "all", "case_ref": 5})) == {
        "item_ids", "case_ref", "purpose"}
    assert set(await fields({"query": [], "purpose": "x"})) == {"query"}
    assert set(await fields([1, 2])) == {"body"}
    ghost = str(uuid.uuid4())
    missing = await fields({"item_ids": [ids[0], theirs[0], ghost], "purpose": "x"})
    assert missing == {"item_ids[1]": f"no item {theirs[0]} in this tenant",
                       "item_ids[2]": f"no item {ghost} in this tenant"}
    assert "case_ref" in await fields({"case_ref": "C-404", "purpose": "x"})
    r = await client.post("/v1/exports", headers=clerk, data=b"{not json")
    assert r.status == 400 and (await r.json())["errors"][0]["field"] == "body"
    assert await _events(client, "export.create") == []


async def test_roles_and_tenants_are_enforced_on_every_route(
    client: Client, clock: ManualClock
) -> None:
    ids = await _ingest(client, clock)
    archive = client.app[ARCHIVE]
    evidence = await create_export(archive, tenant="camden", actor=Actor("c", "complaints"),
                                   kind="evidence", purpose="complaint",
                                   item_ids=[uuid.UUID(i) for i in ids])
    sar = await create_export(archive, tenant="camden", actor=Actor("dpo", "privacy"),
                              kind="subject-access", purpose="SAR 14",
                              item_ids=[uuid.UUID(ids[1])])
    routes: dict[str, Callable[[dict[str, str]], Any]] = {
        "post": lambda h: client.post("/v1/exports", headers=h,
                                      json={"item_ids": ids, "purpose": "p"}),
        "record": lambda h: client.get(f"/v1/exports/{evidence.id}", headers=h),
        "bundle": lambda h: client.get(f"/v1/exports/{evidence.id}/bundle.zip", headers=h),
        "sar_record": lambda h: client.get(f"/v1/exports/{sar.id}", headers=h),
        "sar_bundle": lambda h: client.get(f"/v1/exports/{sar.id}/bundle.zip", headers=h),
    }
    expected = {
        Role.INGEST: dict.fromkeys(routes, 403),
        Role.QUALITY: dict.fromkeys(routes, 403),
        Role.AUDITOR: dict.fromkeys(routes, 403),
        Role.PRIVACY: {"post": 403, "record": 403, "bundle": 403, "sar_record": 200,
                       "sar_bundle": 200},
        Role.COMPLAINTS: {"post": 201, "record": 200, "bundle": 200, "sar_record": 200,
                          "sar_bundle": 200},
        Role.ADMIN: {"post": 201, "record": 200, "bundle": 200, "sar_record": 200,
                     "sar_bundle": 200},
    }
    for role, answers in expected.items():
        headers = await _headers(client, clock, role)
        for name, call in routes.items():
            r = await call(headers)
            assert r.status == answers[name], (role, name, await r.text())
            if r.status == 403:
                assert r.content_type == PROBLEM
    for call in routes.values():
        assert (await call({})).status == 401
    barnet = await _headers(client, clock, Role.ADMIN, tenant="barnet")
    for name in ("record", "bundle", "sar_record", "sar_bundle"):
        r = await routes[name](barnet)
        assert r.status == 404 and r.content_type == PROBLEM, name
    admin = await _headers(client, clock, Role.ADMIN)
    for path in ("/v1/exports/not-a-uuid", f"/v1/exports/{uuid.uuid4()}/bundle.zip"):
        assert (await client.get(path, headers=admin)).status == 404


async def test_the_signing_key_is_private_and_survives_a_restart(
    client: Client, clock: ManualClock, settings: Settings, aiohttp_client: AiohttpClient
) -> None:
    first = await (await client.get("/v1/signing-key")).json()
    key_file = settings.data_dir / "signing-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    restarted = await aiohttp_client(create_app(settings, clock=clock))
    again = await (await restarted.get("/v1/signing-key")).json()
    assert again == first
    elsewhere = settings.data_dir.parent / "keys" / "bundle-signer.pem"
    moved = await aiohttp_client(create_app(
        dataclasses.replace(settings, signing_key_file=elsewhere), clock=clock))
    other = await (await moved.get("/v1/signing-key")).json()
    assert other["key_id"] != first["key_id"] and elsewhere.stat().st_mode & 0o777 == 0o600


async def test_a_bundle_that_fails_half_way_is_a_broken_download(
    client: Client, clock: ManualClock
) -> None:
    ids = await _ingest(client, clock)
    async with client.app[DATABASE].session() as session:
        row = await session.get(Item, uuid.UUID(ids[0]))
        assert row is not None
        row.sha256 = "0" * 64  # the stored audio no longer matches its ingest hash
        session.add(row)
        await session.commit()
    clerk = await _headers(client, clock, Role.COMPLAINTS)
    r = await client.post("/v1/exports", headers=clerk, json={"item_ids": ids, "purpose": "x"})
    r = await client.get((await r.json())["download"], headers=clerk)
    assert r.status == 200  # the headers went out before the failure
    with pytest.raises(aiohttp.ClientPayloadError):
        await r.read()
