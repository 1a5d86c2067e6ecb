"""When an item may be destroyed: its retention window, counted from when the contact ended.

The default windows are those the issue fixes for a tenant with no policy (calls 365 days,
chats 730). Configurable, versioned policies come with the lifecycle work; every item records
the basis its date was computed on, so a later policy change can be applied and explained.
"""

from datetime import datetime, timedelta
from typing import Any

from archive.models import Channel

DEFAULT_DAYS = {Channel.CALL: 365, Channel.CHAT: 730}


def default_basis(channel: Channel) -> dict[str, Any]:
    return {"policy": "default", "version": 0, "days": DEFAULT_DAYS[channel]}


def retain_until(started_at: datetime, ended_at: datetime | None, days: int) -> datetime:
    """``days`` after the end of the contact (or its start, when the end is unknown)."""
    return (ended_at or started_at) + timedelta(days=days)
