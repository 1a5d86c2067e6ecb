"""Users with passwords and browser sessions: what ends a session, what a password must be,
and that a cookie cannot make changes through the API without the session's CSRF token."""

from datetime import timedelta

import pytest

from archive.clock import ManualClock
from archive.db import Database
from archive.errors import BadRequestError, ConflictError, NotFoundError
from archive.models import Role, User
from archive.tokens import Principal, create_token, ensure_tenant, revoke
from archive.users import (
    SESSION_HOURS,
    check_password,
    create_user,
    end_session,
    find_session,
    hash_password,
    password_principal,
    start_session,
)
from tests.conftest import START, Client
from web.keys import DATABASE

PASSWORD = "correct horse battery"


def test_a_password_hash_is_salted_and_checks_only_the_password() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and PASSWORD not in first
    assert check_password(PASSWORD, first) and check_password(PASSWORD, second)
    assert not check_password(PASSWORD + "!", first)
    assert not check_password(PASSWORD, "not a hash")


async def test_users_sign_in_until_disabled(db: Database) -> None:
    async with db.session() as session:
        await ensure_tenant(session, "camden", START)
        user = await create_user(session, tenant="camden", username="Jo.Bloggs",
                                 role=Role.COMPLAINTS, password=PASSWORD, now=START)
        await session.commit()
    assert user.username == "jo.bloggs"
    async with db.session() as session:
        who = await password_principal(session, "JO.BLOGGS", PASSWORD)
        assert who is not None and who.actor == f"user:{user.id}"
        assert who.role == Role.COMPLAINTS and who.tenant == "camden"
        assert await password_principal(session, "jo.bloggs", "wrong password!") is None
        assert await password_principal(session, "nobody", PASSWORD) is None
        secret, _ = await start_session(session, who, START)
        await session.commit()
    async with db.session() as session:
        assert await find_session(session, secret, START) is not None
        row = await session.get(User, user.id)
        assert row is not None
        row.disabled_at = START
        session.add(row)
        await session.commit()
    async with db.session() as session:
        assert await find_session(session, secret, START) is None
        assert await password_principal(session, "jo.bloggs", PASSWORD) is None


async def test_bad_users_are_refused_naming_the_field(db: Database) -> None:
    async with db.session() as session:
        await ensure_tenant(session, "camden", START)
        with pytest.raises(BadRequestError) as bad:
            await create_user(session, tenant="camden", username="a b", role=Role.ADMIN,
                              password="short", now=START)
        assert {e.field for e in bad.value.errors} == {"username", "password"}
        with pytest.raises(NotFoundError):
            await create_user(session, tenant="nowhere", username="jo", role=Role.ADMIN,
                              password=PASSWORD, now=START)
        await create_user(session, tenant="camden", username="jo", role=Role.ADMIN,
                          password=PASSWORD, now=START)
        with pytest.raises(ConflictError):
            await create_user(session, tenant="camden", username="JO", role=Role.ADMIN,
                              password=PASSWORD, now=START)


async def test_a_session_ends_at_expiry_sign_out_or_token_revocation(db: Database) -> None:
    async with db.session() as session:
        await ensure_tenant(session, "camden", START)
        token, _ = await create_token(session, tenant="camden", role=Role.QUALITY, now=START)
        who = Principal(token.id, "camden", Role.QUALITY)
        expiring, _ = await start_session(session, who, START)
        signed_out, _ = await start_session(session, who, START)
        revoked, _ = await start_session(session, who, START)
        await session.commit()
    later = START + timedelta(hours=SESSION_HOURS)
    async with db.session() as session:
        assert await find_session(session, expiring, later - timedelta(seconds=1)) is not None
        assert await find_session(session, expiring, later) is None
        await end_session(session, signed_out)
        await session.commit()
    async with db.session() as session:
        assert await find_session(session, signed_out, START) is None
        assert await find_session(session, revoked, START) is not None
        await revoke(session, token.id, START)
        await session.commit()
    async with db.session() as session:
        assert await find_session(session, revoked, START) is None
        assert await find_session(session, "x" * 500, START) is None


async def test_a_cookie_reads_the_api_but_changes_nothing_without_the_csrf_token(
    client: Client, clock: ManualClock
) -> None:
    db = client.app[DATABASE]
    async with db.session() as session:
        await ensure_tenant(session, "camden", START)
        token, _ = await create_token(session, tenant="camden", role=Role.COMPLAINTS, now=START)
        secret, web_session = await start_session(
            session, Principal(token.id, "camden", Role.COMPLAINTS), START)
        await session.commit()
    cookies = {"Cookie": f"archive_session={secret}"}
    r = await client.get("/v1/whoami", headers=cookies)
    assert r.status == 200 and (await r.json())["role"] == "complaints"
    hold = {"case_ref": "C-1", "reason": "complaint", "query": {"agent_id": "a1"}}
    r = await client.post("/v1/holds", json=hold, headers=cookies)
    assert r.status == 403
    r = await client.post("/v1/holds", json=hold,
                          headers={**cookies, "X-CSRF-Token": web_session.csrf})
    assert r.status == 201
    r = await client.get("/v1/whoami", headers={"Cookie": "archive_session=nonsense"})
    assert r.status == 401
