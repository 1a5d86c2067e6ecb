"""Small helpers for tests that go through the HTTP API."""

from datetime import datetime

from archive.db import Database
from archive.models import Role
from archive.tokens import create_token, ensure_tenant


async def make_token(db: Database, tenant: str, role: Role, now: datetime,
                     expires_at: datetime | None = None) -> str:
    async with db.session() as session:
        await ensure_tenant(session, tenant, now)
        _, secret = await create_token(session, tenant=tenant, role=role, now=now,
                                       expires_at=expires_at)
        await session.commit()
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
