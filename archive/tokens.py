"""API tokens: a random secret shown once, kept only as its SHA-256.

The secret has 256 bits of entropy, so a plain SHA-256 is enough to store it (no password
stretching needed), and looking a token up by the hash of what was presented never compares the
secret itself; the final comparison is constant-time all the same.
"""

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from archive.errors import BadRequestError, FieldError, NotFoundError
from archive.ids import uuid7
from archive.models import Role, Tenant, Token
from storage.errors import KeyringError
from storage.keyring import check_tenant

PREFIX = "arc_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a token's (or a signed-in user's) id, tenant and role. Carries no
    secret."""

    token_id: uuid.UUID  # the token's id, or the user's when ``kind`` is "user"
    tenant: str
    role: Role
    kind: str = "token"

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.token_id}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise BadRequestError(errors=[FieldError("role", f"must be one of {allowed}")]) from None


async def create_token(
    session: AsyncSession,
    *,
    tenant: str,
    role: Role,
    now: datetime,
    name: str = "",
    expires_at: datetime | None = None,
) -> tuple[Token, str]:
    """Create a token for an existing tenant; return it with its secret (the only copy)."""
    if await session.get(Tenant, tenant) is None:
        raise NotFoundError(f"no tenant {tenant!r}")
    secret = PREFIX + secrets.token_urlsafe(32)
    token = Token(id=uuid7(), tenant=tenant, role=role.value, name=name,
                  secret_hash=hash_secret(secret), created_at=now, expires_at=expires_at)
    session.add(token)
    await session.flush()
    return token, secret


async def authenticate(session: AsyncSession, secret: str, now: datetime) -> Principal | None:
    """The principal for a presented secret, or ``None`` if unknown, revoked or expired."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    digest = hash_secret(secret)
    token = (await session.exec(select(Token).where(Token.secret_hash == digest))).first()
    if token is None or not hmac.compare_digest(token.secret_hash, digest):
        return None
    if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        return None
    return Principal(token.id, token.tenant, Role(token.role))


async def revoke(session: AsyncSession, token_id: uuid.UUID, now: datetime) -> Token:
    token = await session.get(Token, token_id)
    if token is None:
        raise NotFoundError(f"no token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = now
        session.add(token)
    return token


async def list_tokens(session: AsyncSession, tenant: str | None = None) -> list[Token]:
    stmt = select(Token).order_by(col(Token.created_at))
    if tenant is not None:
        stmt = stmt.where(Token.tenant == tenant)
    return list((await session.exec(stmt)).all())


async def ensure_tenant(session: AsyncSession, tenant: str, now: datetime, name: str = "") -> bool:
    """Create the tenant if it does not exist; return whether it was created."""
    try:
        check_tenant(tenant)
    except KeyringError:
        raise BadRequestError(errors=[FieldError(
            "tenant", "must be 1-63 lower-case letters, digits or '-', starting with a letter "
            "or digit")]) from None
    if await session.get(Tenant, tenant) is not None:
        return False
    session.add(Tenant(id=tenant, name=name or tenant, created_at=now))
    await session.flush()
    return True
