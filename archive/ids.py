"""Item and record ids: UUIDv7 (RFC 9562), so ids sort by creation time and index well."""

import os
import time
import uuid


def uuid7(ms: int | None = None) -> uuid.UUID:
    """A UUIDv7: 48-bit Unix milliseconds, version 7, then 74 random bits."""
    ts = time.time_ns() // 1_000_000 if ms is None else ms
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 62 & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    value = (ts & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def parse_uuid(value: str) -> uuid.UUID | None:
    """Parse an id given by a client, or ``None`` if it is not a UUID."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None
