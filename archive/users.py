"""People and browsers: users with passwords (``archive users create``) and the sessions of
the staff pages.

A password is kept as a salted scrypt hash (``hashlib.scrypt``, in the standard library: no
further dependency). A session is a random cookie secret kept only as its SHA-256, like a token;
each session has its own CSRF token for the forms. A session signed in with an API token ends
when the token is revoked or expires; one signed in by a user ends when the user is disabled.
"""

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from archive.errors import BadRequestError, ConflictError, FieldError, NotFoundError
from archive.ids import uuid7
from archive.models import Role, Tenant, Token, User, WebSession
from archive.tokens import Principal, hash_secret

SESSION_HOURS = 8  # a working day; signing in again after that is expected
# scrypt cost: 2^15 x 8 x 1 takes ~50 ms and 32 MiB here: slow to guess, quick to sign in.
_N, _R, _P = 2**15, 8, 1
_MAX_MEMORY = 64 * 1024 * 1024
MIN_PASSWORD = 12
_USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-@")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAX_MEMORY)
    encoded = [base64.b64encode(v).decode() for v in (salt, digest)]
    return "$".join(["scrypt", str(_N), str(_R), str(_P), *encoded])


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), maxmem=_MAX_MEMORY, dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


async def create_user(session: AsyncSession, *, tenant: str, username: str, role: Role,
                      password: str, now: datetime) -> User:
    """Create a user of an existing tenant; refuses a weak password or a taken username."""
    errors = []
    name = username.strip().lower()
    if not 1 <= len(name) <= 100 or not set(name) <= _USERNAME_CHARS:
        errors.append(FieldError("username", "must be 1-100 of a-z, 0-9, '.', '_', '-', '@'"))
    if len(password) < MIN_PASSWORD:
        errors.append(FieldError("password", f"must be at least {MIN_PASSWORD} characters"))
    if errors:
        raise BadRequestError("the user has errors", errors=errors)
    if await session.get(Tenant, tenant) is None:
        raise NotFoundError(f"no tenant {tenant!r}")
    if (await session.exec(select(User).where(User.username == name))).first() is not None:
        raise ConflictError(f"the username {name!r} is taken")
    user = User(id=uuid7(), tenant=tenant, username=name, role=role.value,
                password_hash=hash_password(password), created_at=now)
    session.add(user)
    await session.flush()
    return user


async def password_principal(session: AsyncSession, username: str, password: str
                             ) -> Principal | None:
    """The user's principal if the password is right and the user is not disabled."""
    user = (await session.exec(
        select(User).where(User.username == username.strip().lower()))).first()
    if user is None:
        check_password(password, _DUMMY)  # the same time whether or not the user exists
        return None
    if not check_password(password, user.password_hash) or user.disabled_at is not None:
        return None
    return Principal(user.id, user.tenant, Role(user.role), kind="user")


async def start_session(session: AsyncSession, who: Principal, now: datetime
                        ) -> tuple[str, WebSession]:
    """A new browser session for ``who``; returns the cookie's secret (the only copy)."""
    secret = secrets.token_urlsafe(32)
    row = WebSession(id=hash_secret(secret), kind=who.kind, principal_id=who.token_id,
                     tenant=who.tenant, role=who.role.value, csrf=secrets.token_urlsafe(32),
                     created_at=now, expires_at=now + timedelta(hours=SESSION_HOURS))
    session.add(row)
    await session.flush()
    return secret, row


async def find_session(session: AsyncSession, secret: str, now: datetime
                       ) -> tuple[Principal, WebSession] | None:
    """The principal and session of a cookie's secret, if the session is still good."""
    if not secret or len(secret) > 100:
        return None
    row = await session.get(WebSession, hash_secret(secret))
    if row is None or row.expires_at <= now:
        return None
    if row.kind == "token":
        token = await session.get(Token, row.principal_id)
        if token is None or token.revoked_at is not None or (
                token.expires_at is not None and token.expires_at <= now):
            return None
    else:
        user = await session.get(User, row.principal_id)
        if user is None or user.disabled_at is not None:
            return None
    return Principal(row.principal_id, row.tenant, Role(row.role), kind=row.kind), row


async def end_session(session: AsyncSession, secret: str) -> None:
    await session.exec(sa.delete(WebSession).where(col(WebSession.id) == hash_secret(secret)))


_DUMMY = hash_password(secrets.token_urlsafe(16))
