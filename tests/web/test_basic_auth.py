"""A token as the password of HTTP Basic authentication: for telephony systems that can only put
credentials in a URL (FreeSWITCH's ``record_session http_cache://http://ingest:TOKEN@host/...``,
which libcurl sends as ``Authorization: Basic``)."""

import base64
import uuid

import pytest

from archive.clock import ManualClock
from archive.models import Role
from archive.tokens import revoke
from tests.conftest import Client
from tests.helpers import bearer, make_token
from tests.ingest import media
from web.keys import DATABASE

PROBLEM = "application/problem+json"
QUERY = {"started_at": "2026-11-23T09:00:00Z", "caller_number": "+447700900123",
         "direction": "inbound"}


async def _token(client: Client, clock: ManualClock, role: Role = Role.INGEST) -> str:
    return await make_token(client.app[DATABASE], "camden", role, clock.now())


def raw_basic(value: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(value).decode()}


def basic(user: str, password: str) -> dict[str, str]:
    """What libcurl sends for ``http://user:password@host/...``."""
    return raw_basic(f"{user}:{password}".encode())


async def _items(client: Client, clock: ManualClock) -> list[dict[str, object]]:
    admin = await _token(client, clock, Role.ADMIN)
    r = await client.get("/v1/items", headers=bearer(admin))
    assert r.status == 200
    items: list[dict[str, object]] = (await r.json())["items"]
    return items


async def test_a_token_as_basic_password_pushes_a_recording(
    client: Client, clock: ManualClock,
) -> None:
    secret = await _token(client, clock)
    # The external id of a FreeSWITCH upload ends in the file's extension: dots are fine.
    external_id = f"{uuid.uuid4()}.wav"
    audio = media.wav(1.0)
    r = await client.put(f"/v1/recordings/{external_id}", data=audio, params=QUERY,
                         headers={**basic("ingest", secret), "Content-Type": "audio/x-wav"})
    body = await r.json()
    assert r.status == 201, body
    assert body["external_id"] == external_id
    assert body["caller_number"] == "+447700900123"
    # The same upload again (a retry by the PBX) is the same item; any user name will do.
    r = await client.put(f"/v1/recordings/{external_id}", data=audio, params=QUERY,
                         headers=basic("", secret))
    assert r.status == 200 and (await r.json())["id"] == body["id"]
    who = await client.get("/v1/whoami", headers=basic("pbx1", secret))
    assert who.status == 200
    assert (await who.json())["role"] == "ingest"


@pytest.mark.parametrize(("header", "hint"), [
    (raw_basic(b"ingest:arc_not-a-real-token"), "unknown, expired or revoked"),
    ({"Authorization": "Basic !!!not-base64!!!"}, "Basic"),
    ({"Authorization": "Basic " + base64.b64encode(b"arc_no-colon-here").decode()[:-1]},
     "Basic"),  # a cut base64 value
    (raw_basic(b"arc_no-colon-here"), "Basic"),
    (raw_basic(b"ingest:"), "Basic"),
    (raw_basic(b"\xff\xfe:\xff"), "Basic"),  # not UTF-8
    ({"Authorization": "Basic"}, "Basic"),
    ({"Authorization": "Digest username=ingest"}, "Bearer"),
])
async def test_bad_basic_credentials_are_401_and_store_nothing(
    client: Client, clock: ManualClock, header: dict[str, str], hint: str,
) -> None:
    r = await client.put("/v1/recordings/bad-basic", data=media.wav(0.5), params=QUERY,
                         headers=header)
    body = await r.json()
    assert r.status == 401 and r.content_type == PROBLEM, body
    assert hint in body["detail"]
    assert await _items(client, clock) == []


async def test_the_wrong_password_with_a_real_token_as_user_is_401(
    client: Client, clock: ManualClock,
) -> None:
    """The password is the token: a token given as the user name authenticates nothing."""
    secret = await _token(client, clock)
    r = await client.get("/v1/whoami", headers=basic(secret, "secret"))
    assert r.status == 401
    r = await client.get("/v1/whoami", headers=basic("ingest", secret + "x"))
    assert r.status == 401


async def test_a_revoked_token_is_refused_through_basic_too(
    client: Client, clock: ManualClock,
) -> None:
    secret = await _token(client, clock)
    r = await client.get("/v1/whoami", headers=basic("ingest", secret))
    assert r.status == 200
    token_id = uuid.UUID((await r.json())["token_id"])
    async with client.app[DATABASE].session() as session:
        await revoke(session, token_id, clock.now())
        await session.commit()
    r = await client.put("/v1/recordings/after-revoke.wav", data=media.wav(0.5), params=QUERY,
                         headers=basic("ingest", secret))
    body = await r.json()
    assert r.status == 401 and "revoked" in body["detail"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_basic_takes_ingest_tokens_only(client: Client, clock: ManualClock) -> None:
    # A browser replays URL credentials on its own, so a staff token over Basic could ride on a
    # cross-site request: refused, even for a route the role may use with a bearer token.
    for role in (Role.COMPLAINTS, Role.ADMIN):
        staff = await _token(client, clock, role)
        r = await client.get("/v1/items", headers=basic("x", staff))
        body = await r.json()
        assert r.status == 401 and r.content_type == PROBLEM, body
        assert "ingest tokens only" in body["detail"]
        assert (await client.get("/v1/items", headers=bearer(staff))).status == 200
    complaints = await _token(client, clock, Role.COMPLAINTS)
    r = await client.put("/v1/recordings/by-complaints.wav", data=media.wav(0.5),
                         params=QUERY, headers=basic("ingest", complaints))
    assert r.status == 401
    assert await _items(client, clock) == []


async def test_roles_are_enforced_through_basic(client: Client, clock: ManualClock) -> None:
    ingest = await _token(client, clock)
    r = await client.get("/v1/items", headers=basic("ingest", ingest))
    assert r.status == 403
    assert await _items(client, clock) == []
