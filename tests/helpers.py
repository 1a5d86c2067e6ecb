"""Small helpers for tests that go through the HTTP API."""

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from archive.db import Database
from archive.models import Role, Tenant
from archive.tokens import create_token, ensure_tenant


async def make_token(db: Database, tenant: str, role: Role, now: datetime,
                     expires_at: datetime | None = None) -> str:
    async with db.session() as session:
        await ensure_tenant(session, tenant, now)
        _, secret = await create_token(session, tenant=tenant, role=role, now=now,
                                       expires_at=expires_at)
        await session.commit()
    return secret


async def set_media_policy(db: Database, policy: str, tenant: str = "camden") -> None:
    """What the tenant keeps of call audio: original, opus or both."""
    async with db.session() as session:
        row = await session.get(Tenant, tenant)
        assert row is not None
        row.media_policy = policy
        session.add(row)
        await session.commit()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


ARCHIVE_EXE = str(Path(sys.executable).with_name("archive"))


def run_archive(args: list[str], data_dir: Path,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``archive`` command over ``data_dir`` (no other ``ARCHIVE_*`` setting of
    this process leaks in; ``env`` adds some)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
    clean["ARCHIVE_DATA_DIR"] = str(data_dir)
    return subprocess.run([ARCHIVE_EXE, *args], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=120, check=False)
