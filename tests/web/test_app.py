"""The service skeleton over HTTP: health, readiness, auth, roles, tenants, errors, OpenAPI."""

import shutil
import uuid
from datetime import timedelta

import pytest
from aiohttp import web
from sqlmodel import select

from archive.clock import ManualClock
from archive.models import AuditEvent, Channel, Role
from archive.service import Actor
from archive.settings import Settings
from archive.tokens import ensure_tenant, revoke
from storage.base import iter_bytes
from tests.conftest import Client
from tests.helpers import bearer, make_token
from web.keys import ARCHIVE, DATABASE
from web.openapi import document
from web.pages import PAGES
from web.routes import ENDPOINTS

PROBLEM = "application/problem+json"


async def _token(client: Client, tenant: str, role: Role, clock: ManualClock,
                 **kw: object) -> str:
    return await make_token(client.app[DATABASE], tenant, role, clock.now(), **kw)  # type: ignore[arg-type]


async def _item(client: Client, tenant: str, channel: Channel = Channel.CALL) -> str:
    archive = client.app[ARCHIVE]
    async with archive.db.session() as session:
        await ensure_tenant(session, tenant, archive.clock.now())
        await session.commit()
    item = await archive.put(tenant=tenant, channel=channel, external_id=f"x-{channel}",
                             started_at=archive.clock.now(), media_type="audio/wav",
                             chunks=iter_bytes(b"RIFF...."), actor=Actor("t", "ingest"),
                             fields={"caller_number": "+442079460000"})
    return str(item.id)


async def test_health_and_readiness(client: Client) -> None:
    r = await client.get("/healthz")
    assert r.status == 200 and (await r.json())["status"] == "ok"
    r = await client.get("/readyz")
    body = await r.json()
    assert r.status == 200, body
    assert body == {"status": "ready", "checks": {"index": "ok", "store": "ok", "keyring": "ok"}}


async def test_readiness_names_the_broken_dependency(client: Client, settings: Settings) -> None:
    shutil.rmtree(settings.data_dir / "store")
    r = await client.get("/readyz")
    body = await r.json()
    assert r.status == 503
    assert body["checks"]["store"].startswith("unavailable")
    assert body["checks"]["index"] == "ok"


async def test_missing_bad_revoked_and_expired_tokens_are_401(
    client: Client, clock: ManualClock
) -> None:
    r = await client.get("/v1/whoami")
    assert r.status == 401 and r.content_type == PROBLEM
    assert "Bearer" in r.headers["WWW-Authenticate"]
    r = await client.get("/v1/whoami", headers=bearer("arc_not-a-real-token"))
    assert r.status == 401
    r = await client.get("/v1/whoami", headers={"Authorization": "Basic abc"})
    assert r.status == 401
    expiring = await _token(client, "camden", Role.ADMIN, clock,
                            expires_at=clock.now() + timedelta(hours=1))
    assert (await client.get("/v1/whoami", headers=bearer(expiring))).status == 200
    clock.advance(timedelta(hours=2))
    r = await client.get("/v1/whoami", headers=bearer(expiring))
    assert r.status == 401 and "expired" in (await r.json())["detail"]
    secret = await _token(client, "camden", Role.ADMIN, clock)
    r = await client.get("/v1/whoami", headers=bearer(secret))
    who = await r.json()
    assert who["tenant"] == "camden" and who["role"] == "admin"
    async with client.app[DATABASE].session() as session:
        await revoke(session, uuid.UUID(who["token_id"]), clock.now())
        await session.commit()
    assert (await client.get("/v1/whoami", headers=bearer(secret))).status == 401


async def test_roles_are_enforced(client: Client, clock: ManualClock) -> None:
    item_id = await _item(client, "camden")
    for role, status in [(Role.INGEST, 403), (Role.AUDITOR, 403), (Role.COMPLAINTS, 200),
                         (Role.QUALITY, 200), (Role.ADMIN, 200)]:
        secret = await _token(client, "camden", role, clock)
        r = await client.get(f"/v1/items/{item_id}", headers=bearer(secret))
        assert r.status == status, (role, await r.text())
        if status == 403:
            body = await r.json()
            assert r.content_type == PROBLEM and role.value in body["detail"]


async def test_quality_monitors_cannot_read_chats(client: Client, clock: ManualClock) -> None:
    chat_id = await _item(client, "camden", Channel.CHAT)
    secret = await _token(client, "camden", Role.QUALITY, clock)
    assert (await client.get(f"/v1/items/{chat_id}", headers=bearer(secret))).status == 403


async def test_a_token_sees_only_its_own_tenant(client: Client, clock: ManualClock) -> None:
    camden_item = await _item(client, "camden")
    barnet_item = await _item(client, "barnet")
    camden = await _token(client, "camden", Role.ADMIN, clock)
    r = await client.get(f"/v1/items/{camden_item}", headers=bearer(camden))
    body = await r.json()
    assert r.status == 200 and body["caller_number"] == "+442079460000"
    assert body["tenant"] == "camden" and body["holds"] == []
    r = await client.get(f"/v1/items/{barnet_item}", headers=bearer(camden))
    assert r.status == 404
    assert "+44" not in await r.text()


async def test_reads_are_audited_with_purpose(client: Client, clock: ManualClock) -> None:
    item_id = await _item(client, "camden")
    secret = await _token(client, "camden", Role.COMPLAINTS, clock)
    r = await client.get(f"/v1/items/{item_id}",
                         headers={**bearer(secret), "X-Purpose": "complaint C-17"})
    assert r.status == 200
    async with client.app[DATABASE].session() as session:
        events = (await session.exec(select(AuditEvent).where(
            AuditEvent.action == "item.view"))).all()
    assert len(events) == 1
    assert str(events[0].item_id) == item_id
    assert events[0].role == "complaints"
    assert events[0].detail == {"purpose": "complaint C-17"}


async def test_errors_are_problem_json(client: Client, clock: ManualClock) -> None:
    r = await client.get("/no/such/route")
    assert r.status == 404 and r.content_type == PROBLEM
    body = await r.json()
    assert body["status"] == 404 and body["request_id"] == r.headers["X-Request-Id"]
    r = await client.post("/healthz")
    assert r.status == 405 and r.content_type == PROBLEM
    secret = await _token(client, "camden", Role.ADMIN, clock)
    r = await client.get("/v1/items/not-a-uuid", headers=bearer(secret))
    assert r.status == 404 and r.content_type == PROBLEM


async def test_openapi_documents_exactly_the_routes(client: Client) -> None:
    r = await client.get("/openapi.json")
    doc = await r.json()
    assert doc == document()
    pages = {name for _, _, _, name in PAGES}  # the staff pages: HTML, not the API
    served = {(route.method, route.resource.canonical)
              for route in client.app.router.routes()
              if route.method != "HEAD" and route.resource is not None
              and route.name not in pages and route.name != "metrics"  # Prometheus text
              and not isinstance(route.resource, web.StaticResource)}
    documented = {(method.upper(), path) for path, ops in doc["paths"].items()
                  for method in ops}
    assert served == documented
    for e in ENDPOINTS:
        op = doc["paths"][e.path][e.method.lower()]
        if e.roles is None:
            assert op["security"] == []
        else:
            assert set(op["x-roles"]) == {r.value for r in e.roles}
            assert "401" in op["responses"] and "403" in op["responses"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
async def test_public_routes_need_no_token(client: Client, path: str) -> None:
    assert (await client.get(path)).status == 200
