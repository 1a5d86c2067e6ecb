"""Metadata that telephony and webchat systems send: validated and normalised in one pass.

Every bad field is reported at once (``BadRequestError`` with one ``FieldError`` each), so an
integrator fixes a payload in one round trip. Normalisation makes search work whatever notation
the producer used: phone numbers become E.164 (region GB), emails lower case, postcodes
``SW1A 1AA``, names get a case-folded search key.
"""

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import phonenumbers

from archive.errors import BadRequestError, FieldError

MAX_TEXT = 200
MAX_TAGS = 50
MAX_PCI_RANGES = 200
WITHHELD = frozenset({"anonymous", "withheld", "unknown", "restricted", "private", "unavailable"})
DIRECTIONS = ("inbound", "outbound", "internal")
_EXTENSION = re.compile(r"^\d{2,6}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
_POSTCODE = re.compile(r"^([A-Z]{1,2}\d[A-Z\d]?) ?(\d[A-Z]{2})$")


class _Collector:
    """Reads fields from a payload, normalising each and collecting every error."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.errors: list[FieldError] = []

    def error(self, name: str, message: str) -> None:
        self.errors.append(FieldError(name, message))

    def get(self, name: str, parse: Callable[[str, Any], Any], *, required: bool = False
            ) -> Any:
        value = self.data.get(name)
        if value is None or value == "":
            if required:
                self.error(name, "is required")
            return None
        try:
            return parse(name, value)
        except (ValueError, TypeError) as exc:
            self.error(name, str(exc))
            return None

    def reject_unknown(self, allowed: set[str], prefix: str = "") -> None:
        for name in sorted(set(self.data) - allowed):
            self.error(prefix + name, "is not a known field")

    def raise_if_any(self) -> None:
        if self.errors:
            raise BadRequestError("the metadata has errors", errors=self.errors)


# Bidirectional controls: they can make a name or id display as something else.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _refused(ch: str) -> bool:
    """Control characters, surrogates, line and paragraph separators and bidi controls.
    Other format characters stay: the zero-width joiner and tag characters that emoji
    (families, the Welsh flag) are made of."""
    return ch in _BIDI or unicodedata.category(ch) in {"Cc", "Cs", "Zl", "Zp"}


def text(limit: int = MAX_TEXT) -> Callable[[str, Any], str]:
    def parse(_name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError("must be a string")
        value = value.strip()
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters")
        if any(_refused(ch) for ch in value):
            raise ValueError("must not contain control characters")
        return str(value)
    return parse


def timestamp(_name: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError("must be an ISO 8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 timestamp, e.g. 2026-11-23T09:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError("needs a UTC offset, e.g. 2026-11-23T09:00:00Z or +01:00")
    return parsed.astimezone(UTC)


def phone(_name: str, value: Any) -> str:
    """E.164 for any UK or international notation; short internal extensions kept as digits;
    withheld-number markers become ``None`` (no number)."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise TypeError("must be a phone number string")
    raw = str(value).strip()
    if raw.lower() in WITHHELD:
        return ""
    if _EXTENSION.match(raw):
        return raw
    try:
        number = phonenumbers.parse(raw, "GB")
    except phonenumbers.NumberParseException:
        raise ValueError("is not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError("is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def email(_name: str, value: Any) -> str:
    raw = text(320)(_name, value).lower()
    if not _EMAIL.match(raw):
        raise ValueError("is not an email address")
    return raw


def postcode(_name: str, value: Any) -> str:
    raw = re.sub(r"\s+", "", text(16)(_name, value)).upper()
    match = _POSTCODE.match(raw)
    if not match:
        raise ValueError("is not a UK postcode")
    return f"{match.group(1)} {match.group(2)}"


def normalise_postcode(value: str) -> str | None:
    """The stored form of a postcode typed into a search, or ``None`` if it is not one."""
    try:
        return postcode("postcode", value)
    except ValueError:
        return None


def normalise_phone(value: str) -> str | None:
    """The stored form of a number typed into a search, or ``None`` if it is not one."""
    try:
        return phone("caller_number", value) or None
    except ValueError:
        return None


def choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(_name: str, value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return str(value)
    return parse


def boolean(_name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
        return value.lower() in {"true", "1", "yes"}
    raise ValueError("must be true or false")


def tags(_name: str, value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise ValueError("must be a list of strings")
    cleaned = [t.strip() for t in items if t.strip()]
    if len(cleaned) > MAX_TAGS or any(len(t) > 50 for t in cleaned):
        raise ValueError(f"at most {MAX_TAGS} tags of at most 50 characters")
    return cleaned


def pci_ranges(_name: str, value: Any) -> list[tuple[float, float]]:
    """``[{start, end}, ...]`` in seconds; from a query string also ``"12.5-30,41-55"``."""
    if isinstance(value, str):
        try:
            value = [{"start": float(a), "end": float(b)}
                     for a, _, b in (part.partition("-") for part in value.split(",") if part)]
        except ValueError:
            raise ValueError("must be ranges like 12.5-30,41-55") from None
    if not isinstance(value, list) or len(value) > MAX_PCI_RANGES:
        raise ValueError(f"must be a list of at most {MAX_PCI_RANGES} {{start, end}} objects")
    ranges = []
    for i, r in enumerate(value):
        ok = (isinstance(r, dict) and set(r) == {"start", "end"}
              and all(isinstance(r[k], int | float) and not isinstance(r[k], bool)
                      for k in ("start", "end")))
        if not ok or not 0 <= r["start"] < r["end"]:
            raise ValueError(f"range {i} must be {{start, end}} seconds with 0 <= start < end")
        ranges.append((float(r["start"]), float(r["end"])))
    return ranges


@dataclass(frozen=True)
class ContactMetadata:
    """Normalised metadata of a call or a chat, ready for the index."""

    external_id: str
    started_at: datetime
    fields: dict[str, Any] = field(default_factory=dict)
    pci_redactions: tuple[tuple[float, float], ...] = ()

    def content_hash(self, source_sha256: str) -> str:
        """Identifies an upload: the same metadata and the same bytes give the same hash."""
        canonical = json.dumps(
            {"external_id": self.external_id, "started_at": self.started_at.isoformat(),
             "fields": {k: v.isoformat() if isinstance(v, datetime) else v
                        for k, v in sorted(self.fields.items())},
             "pci": self.pci_redactions, "source": source_sha256},
            sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


_EXTERNAL_ID = text(200)


def _common(c: _Collector) -> tuple[str, datetime, dict[str, Any]]:
    external_id = c.get("external_id", _EXTERNAL_ID, required=True)
    started = c.get("started_at", timestamp, required=True)
    ended = c.get("ended_at", timestamp)
    if started and ended and ended < started:
        c.error("ended_at", "must not be before started_at")
    fields: dict[str, Any] = {
        "ended_at": ended,
        "agent_id": c.get("agent_id", text(100)),
        "service": c.get("service", text(100)),
        "tags": c.get("tags", tags),
        "special_category": c.get("special_category", boolean) or False,
    }
    if started and ended:
        fields["duration"] = (ended - started).total_seconds()
    return external_id, started, fields


RECORDING_FIELDS = {"external_id", "started_at", "ended_at", "direction", "caller_number",
                    "called_number", "agent_id", "agent_extension", "service", "queue", "tags",
                    "special_category", "pci_redactions"}


def parse_recording(data: Mapping[str, Any]) -> ContactMetadata:
    """Validate the metadata of a call recording."""
    if not isinstance(data, Mapping):
        raise BadRequestError(errors=[FieldError("metadata", "must be a JSON object")])
    c = _Collector(data)
    c.reject_unknown(RECORDING_FIELDS)
    external_id, started, fields = _common(c)
    fields.update({
        "direction": c.get("direction", choice(DIRECTIONS)),
        "caller_number": c.get("caller_number", phone) or None,
        "called_number": c.get("called_number", phone) or None,
        "agent_extension": c.get("agent_extension", text(32)),
        "queue": c.get("queue", text(100)),
    })
    pci = c.get("pci_redactions", pci_ranges) or []
    c.raise_if_any()
    return ContactMetadata(external_id, started, _present(fields), tuple(pci))


TRANSCRIPT_FIELDS = {"external_id", "started_at", "ended_at", "customer", "agent_id",
                     "service", "tags", "special_category"}
CUSTOMER_FIELDS = {"name", "email", "postcode"}


def parse_transcript_metadata(data: Mapping[str, Any]) -> ContactMetadata:
    """Validate the metadata of a webchat transcript (its messages are parsed elsewhere)."""
    if not isinstance(data, Mapping):
        raise BadRequestError(errors=[FieldError("metadata", "must be a JSON object")])
    c = _Collector(data)
    c.reject_unknown(TRANSCRIPT_FIELDS)
    external_id, started, fields = _common(c)
    customer = data.get("customer") or {}
    if not isinstance(customer, Mapping):
        c.error("customer", "must be an object with name, email and postcode")
        customer = {}
    cc = _Collector(customer)
    cc.reject_unknown(CUSTOMER_FIELDS, "customer.")
    name = cc.get("name", text())
    fields.update({
        "customer_name": name,
        "customer_name_key": name.casefold() if name else None,
        "customer_email": cc.get("email", email),
        "customer_postcode": cc.get("postcode", postcode),
    })
    c.errors.extend(FieldError(f"customer.{e.field}" if not e.field.startswith("customer.")
                               else e.field, e.message) for e in cc.errors)
    c.raise_if_any()
    return ContactMetadata(external_id, started, _present(fields))


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}
