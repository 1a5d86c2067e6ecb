"""API tokens: shown once, stored as a hash, scoped to a tenant and role."""

from datetime import timedelta

import pytest
from sqlmodel import select

from archive.clock import ManualClock
from archive.db import Database
from archive.errors import BadRequestError, NotFoundError
from archive.models import Role, Token
from archive.tokens import authenticate, create_token, ensure_tenant, parse_role, revoke


async def test_secret_is_stored_only_as_a_hash(db: Database, clock: ManualClock) -> None:
    async with db.session() as session:
        await ensure_tenant(session, "camden", clock.now())
        token, secret = await create_token(session, tenant="camden", role=Role.COMPLAINTS,
                                           now=clock.now())
        await session.commit()
    async with db.session() as session:
        rows = (await session.exec(select(Token))).all()
        assert secret not in repr([r.model_dump() for r in rows])
        who = await authenticate(session, secret, clock.now())
    assert who is not None
    assert (who.tenant, who.role, who.token_id) == ("camden", Role.COMPLAINTS, token.id)


async def test_unknown_revoked_and_expired_tokens_fail(db: Database, clock: ManualClock) -> None:
    async with db.session() as session:
        await ensure_tenant(session, "camden", clock.now())
        token, secret = await create_token(session, tenant="camden", role=Role.ADMIN,
                                           now=clock.now(),
                                           expires_at=clock.now() + timedelta(days=1))
        await session.commit()
        assert await authenticate(session, secret + "x", clock.now()) is None
        assert await authenticate(session, "", clock.now()) is None
        assert await authenticate(session, secret, clock.now()) is not None
        assert await authenticate(session, secret, clock.now() + timedelta(days=2)) is None
        await revoke(session, token.id, clock.now())
        await session.commit()
        assert await authenticate(session, secret, clock.now()) is None


async def test_tokens_need_a_tenant_and_a_valid_role(db: Database, clock: ManualClock) -> None:
    async with db.session() as session:
        with pytest.raises(NotFoundError):
            await create_token(session, tenant="nowhere", role=Role.ADMIN, now=clock.now())
        with pytest.raises(BadRequestError):
            await ensure_tenant(session, "Not A Tenant!", clock.now())
    with pytest.raises(BadRequestError) as info:
        parse_role("superuser")
    assert info.value.errors[0].field == "role"
