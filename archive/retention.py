"""When an item may be destroyed: its retention window, counted from when the contact ended.

A window is resolved, for a tenant and channel, from (first found): the highest version in the
``policies`` table (set through ``PUT /v1/policies``, the CLI, or copied from the settings file
at start), the settings file's window for every tenant, then the built-in default (calls 365
days, chats 730). Every item records the basis its date was computed on (policy id, version,
days), so a later change can be applied and explained.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from archive.errors import ConfigurationError
from archive.models import Channel, Policy

DEFAULT_DAYS = {Channel.CALL: 365, Channel.CHAT: 730}
MAX_DAYS = 36_500  # a hundred years: anything longer is a typo
_ENTRY = re.compile(r"^(?:(?P<tenant>[a-z0-9][a-z0-9-]{0,62})\.)?(?P<channel>[a-z]+)="
                    r"(?P<days>\d{1,6})$")


def default_basis(channel: Channel) -> dict[str, Any]:
    return {"policy": "default", "version": 0, "days": DEFAULT_DAYS[channel]}


def policy_id(tenant: str, channel: Channel | str) -> str:
    """The stable name of a tenant's policy for a channel; its versions share it."""
    return f"{tenant}/{Channel(channel).value}"


def policy_basis(policy: Policy) -> dict[str, Any]:
    return {"policy": policy_id(policy.tenant, policy.channel), "version": policy.version,
            "days": policy.days}


def retain_until(started_at: datetime, ended_at: datetime | None, days: int) -> datetime:
    """``days`` after the end of the contact (or its start, when the end is unknown)."""
    return (ended_at or started_at) + timedelta(days=days)


@dataclass(frozen=True)
class Windows:
    """Retention windows from the settings file (``retention_days``): for every tenant
    (``tenant`` None) or one tenant, per channel."""

    days: Mapping[tuple[str | None, Channel], int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Windows":
        """``CHANNEL=DAYS`` (every tenant) or ``TENANT.CHANNEL=DAYS``, comma-separated."""
        days: dict[tuple[str | None, Channel], int] = {}
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            match = _ENTRY.match(entry)
            channel = match["channel"] if match else ""
            if match is None or channel not in {c.value for c in Channel}:
                raise ConfigurationError(
                    f"setting retention_days: {entry!r} is not CHANNEL=DAYS or "
                    "TENANT.CHANNEL=DAYS (channel call or chat)")
            value = int(match["days"])
            if not 1 <= value <= MAX_DAYS:
                raise ConfigurationError(
                    f"setting retention_days: {entry!r}: days must be 1 to {MAX_DAYS}")
            key = (match["tenant"], Channel(channel))
            if key in days:
                raise ConfigurationError(f"setting retention_days: {entry!r} is given twice")
            days[key] = value
        return cls(days)

    def for_tenant(self, tenant: str, channel: Channel) -> int | None:
        """The window the settings file fixes for this tenant (its own, else every tenant's)."""
        return self.days.get((tenant, channel), self.days.get((None, channel)))

    def fixed_for(self, tenant: str, channel: Channel) -> bool:
        """Whether the settings file decides this window (the API may not change it)."""
        return self.for_tenant(tenant, channel) is not None

    def tenants_named(self) -> set[str]:
        return {t for t, _ in self.days if t is not None}


async def current_policy(session: AsyncSession, tenant: str, channel: Channel) -> Policy | None:
    """The version in force of the tenant's policy for ``channel``, if one was ever set."""
    stmt = (select(Policy).where(Policy.tenant == tenant, Policy.channel == channel.value)
            .order_by(col(Policy.version).desc()).limit(1))
    return (await session.exec(stmt)).first()


async def basis_for(session: AsyncSession, tenant: str, channel: Channel,
                    windows: Windows) -> dict[str, Any]:
    """The basis on which an item of ``tenant`` and ``channel`` arriving now is kept."""
    policy = await current_policy(session, tenant, channel)
    if policy is not None:
        return policy_basis(policy)
    configured = windows.for_tenant(tenant, channel)
    if configured is not None:
        return {"policy": "settings", "version": 0, "days": configured}
    return default_basis(channel)
