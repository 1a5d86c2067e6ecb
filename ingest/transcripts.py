"""Webchat transcripts: validation of the two shapes chat platforms push (a JSON ``messages`` list,
or a plain-text export), normalisation to one :class:`Transcript`, and card-data redaction.

Pure functions: no I/O, no database. Invalid input raises :class:`BadRequestError` listing every
bad field found (up to :data:`MAX_REPORTED_ERRORS`), not just the first.

JSON messages
-------------
Each message is an object with exactly these keys:

- ``at``: ISO 8601 timestamp with a UTC offset (``Z`` accepted), normalised to UTC to the
  microsecond;
- ``from``: ``customer``, ``agent``, ``bot`` or ``system`` (exactly; nothing else is mapped);
- ``name`` (optional): string of at most 200 characters, or null; surrounding whitespace is
  dropped and an empty name is null; no control characters;
- ``text``: string of at most 100,000 characters, kept exactly as sent apart from redaction.
  Empty text is allowed for every sender: platforms send empty messages for attachments and
  stickers they do not export, and the archive keeps the record of them rather than refusing the
  whole chat.

Order is kept as given (not sorted: the platform's order is the evidence).

Plain text
----------
See :func:`parse_plain_text` for the line format.
"""

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, Final, Literal, TypeVar, cast, get_args
from zoneinfo import ZoneInfo

from archive.errors import BadRequestError, FieldError
from ingest.redact import NO_REDACTIONS, Redactions, redact_text

_T = TypeVar("_T")

Sender = Literal["customer", "agent", "bot", "system"]
SENDERS: Final[tuple[Sender, ...]] = get_args(Sender)

MAX_MESSAGES = 20_000
MAX_TEXT_CHARS = 100_000
MAX_NAME_CHARS = 200
# An error list longer than this is cut (with a last entry saying how many more there were), so a
# 20,000-message upload with the same mistake in every message gets a readable answer.
MAX_REPORTED_ERRORS = 100

# UK chat exports print wall-clock time in the UK.
PLAIN_TEXT_ZONE = ZoneInfo("Europe/London")

_MESSAGE_KEYS = frozenset({"at", "from", "name", "text"})
_SENDER_LABELS = {"customer": "Customer", "agent": "Agent", "bot": "Bot", "system": "System"}
_NEEDS_OFFSET = "needs a UTC offset, e.g. 2026-11-23T09:00:00Z"
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. ``at`` is timezone-aware UTC; ``sender`` is the JSON field ``from``."""

    at: datetime
    sender: Sender
    name: str | None
    text: str

    def __post_init__(self) -> None:
        if self.at.utcoffset() != timedelta(0):
            raise ValueError("Message.at must be timezone-aware UTC")
        if self.sender not in SENDERS:
            raise ValueError(f"Message.sender must be one of {', '.join(SENDERS)}")


@dataclass(frozen=True, slots=True)
class Transcript:
    """A validated, redacted chat: what is stored (encrypted) for a ``chat`` item."""

    messages: tuple[Message, ...]
    redactions: Redactions = NO_REDACTIONS

    def to_json_bytes(self) -> bytes:
        """Canonical UTF-8 JSON (sorted keys, no spaces): equal transcripts give equal bytes."""
        document = {
            "messages": [
                {"at": _format_utc(m.at), "from": m.sender, "name": m.name, "text": m.text}
                for m in self.messages
            ],
            "redactions": {
                "cards": self.redactions.cards,
                "security_codes": self.redactions.security_codes,
            },
        }
        return json.dumps(
            document, ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes) -> "Transcript":
        """Read back what :meth:`to_json_bytes` wrote. Stored data is trusted to be ours, so
        this checks its shape but does not redact again; a malformed document raises
        ``ValueError`` (it means a bug or corruption, not a bad request)."""
        try:
            document = json.loads(data.decode("utf-8"))
            messages = tuple(
                Message(
                    at=_parse_stored_time(m["at"]),
                    sender=cast(Sender, _expect(m["from"], str)),
                    name=_expect(m["name"], str) if m["name"] is not None else None,
                    text=_expect(m["text"], str),
                )
                for m in document["messages"]
            )
            counts = document["redactions"]
            redactions = Redactions(
                cards=_expect(counts["cards"], int),
                security_codes=_expect(counts["security_codes"], int),
            )
        except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a stored transcript: {exc!r}") from exc
        return cls(messages=messages, redactions=redactions)

    def to_text(self) -> str:
        """Human-readable transcript, one message per line, continuation lines indented::

            [2026-11-23 09:01:02 UTC] Customer (Ann): hello
                second line
        """
        return "".join(_message_line(m) for m in self.messages)


def _format_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_stored_time(value: object) -> datetime:
    moment = datetime.fromisoformat(_expect(value, str))
    if moment.tzinfo is None:
        raise ValueError("stored timestamp without offset")
    return moment.astimezone(UTC)


def _expect(value: object, kind: type[_T]) -> _T:
    # bool is an int to isinstance, but never a count here.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _message_line(message: Message) -> str:
    speaker = _SENDER_LABELS[message.sender]
    if message.name is not None:
        speaker = f"{speaker} ({message.name})"
    stamp = message.at.strftime("%Y-%m-%d %H:%M:%S UTC")
    first, *rest = message.text.splitlines() or [""]
    lines = [f"[{stamp}] {speaker}: {first}".rstrip()]
    lines.extend(f"    {line}".rstrip() for line in rest)
    return "\n".join(lines) + "\n"


# Timestamps


def parse_timestamp(value: object) -> datetime:
    """An ISO 8601 timestamp with a UTC offset (``Z`` accepted) as an aware UTC datetime.

    Raises ``ValueError`` whose message reads well after a field name (``started_at: needs a
    UTC offset, ...``); also useful for transcript metadata.
    """
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 timestamp string")  # noqa: TRY004 -- a field message
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"is not an ISO 8601 timestamp (e.g. 2026-11-23T09:00:00Z): {_quote(value)}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(_NEEDS_OFFSET)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


def _quote(value: str, limit: int = 40) -> str:
    """``value`` quoted for an error message, cut short: errors must not echo whole inputs."""
    shown = value if len(value) <= limit else value[: limit - 1] + "…"
    return json.dumps(shown, ensure_ascii=True)


def _field_name(key: object) -> str:
    """``key`` as a path component: ``.foo`` for plain names, ``["odd key"]`` otherwise."""
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,39}", key):
        return f".{key}"
    return f"[{_quote(str(key))}]"


def _invalid(detail: str, errors: list[FieldError], root: str) -> BadRequestError:
    """The error to raise for ``errors``, the list cut to :data:`MAX_REPORTED_ERRORS`."""
    count = len(errors)
    if count > MAX_REPORTED_ERRORS:
        errors = [
            *errors[:MAX_REPORTED_ERRORS],
            FieldError(root, f"and {count - MAX_REPORTED_ERRORS} more problems not listed"),
        ]
    noun = "problem" if count == 1 else "problems"
    return BadRequestError(f"{detail} ({count} {noun})", errors=errors)


def _check_name(value: str) -> tuple[str | None, str | None]:
    """(normalised name, None) or (None, what is wrong with it)."""
    name = value.strip()
    if len(name) > MAX_NAME_CHARS:
        return None, f"must be at most {MAX_NAME_CHARS} characters"
    if _CONTROL_CHARS.search(name) or _SURROGATES.search(name):
        return None, "must be a single line of text without control characters"
    return name or None, None


def _check_text(value: str) -> str | None:
    """What is wrong with a message text, if anything."""
    if len(value) > MAX_TEXT_CHARS:
        return f"must be at most {MAX_TEXT_CHARS} characters (got {len(value)})"
    if _SURROGATES.search(value):
        return "must be valid Unicode text (it holds an unpaired surrogate)"
    return None


def _redacted(
    messages: Iterable[tuple[datetime, Sender, str | None, str]],
) -> Transcript:
    """The transcript of ``messages`` with every text redacted and the counts summed."""
    kept: list[Message] = []
    total = NO_REDACTIONS
    for at, sender, name, text in messages:
        clean, redactions = redact_text(text)
        total += redactions
        kept.append(Message(at=at, sender=sender, name=name, text=clean))
    return Transcript(messages=tuple(kept), redactions=total)


# JSON messages


def parse_messages(value: object, field: str = "messages") -> Transcript:
    """Validate, normalise and redact a JSON ``messages`` list (see the module docstring).

    ``field`` is the path of the list in the request, the prefix of every error's field.
    """
    if not isinstance(value, list):
        raise _invalid(
            "Transcript messages are not valid",
            [FieldError(field, "must be a list of messages")],
            field,
        )
    if not value:
        raise _invalid(
            "Transcript messages are not valid", [FieldError(field, "must not be empty")], field
        )
    if len(value) > MAX_MESSAGES:
        raise _invalid(
            "Transcript messages are not valid",
            [FieldError(field, f"has {len(value)} messages; at most {MAX_MESSAGES} are allowed")],
            field,
        )
    errors: list[FieldError] = []
    parsed = [_parse_message(item, f"{field}[{index}]", errors) for index, item in enumerate(value)]
    if errors:
        raise _invalid("Transcript messages are not valid", errors, field)
    return _redacted(m for m in parsed if m is not None)


def _parse_message(
    item: object, path: str, errors: list[FieldError]
) -> tuple[datetime, Sender, str | None, str] | None:
    """One message's fields, or None after adding each thing wrong with it to ``errors``."""
    if not isinstance(item, dict):
        errors.append(FieldError(path, "must be an object with at, from, name and text"))
        return None
    at, at_problem = _message_at(item.get("at"))
    sender, sender_problem = _message_sender(item.get("from"))
    name, name_problem = _message_name(item.get("name"))
    text, text_problem = _message_text_field(item.get("text"))
    checked = {"at": at_problem, "from": sender_problem, "name": name_problem, "text": text_problem}
    problems = [
        *(
            (_field_name(key), "unknown field; a message has at, from, name, text")
            for key in item
            if key not in _MESSAGE_KEYS
        ),
        *((f".{key}", "is required") for key in ("at", "from", "text") if key not in item),
        *((f".{key}", p) for key, p in checked.items() if p is not None and key in item),
    ]
    errors.extend(FieldError(f"{path}{key}", problem) for key, problem in problems)
    if problems or at is None or sender is None or text is None:
        return None
    return at, sender, name, text


def _message_at(value: object) -> tuple[datetime | None, str | None]:
    try:
        return parse_timestamp(value), None
    except ValueError as exc:
        return None, str(exc)


def _message_sender(value: object) -> tuple[Sender | None, str | None]:
    if isinstance(value, str) and value in SENDERS:
        return value, None
    return None, f"must be one of {', '.join(SENDERS)}"


def _message_name(value: object) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, "must be a string or null"
    return _check_name(value)


def _message_text_field(value: object) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, "must be a string"
    problem = _check_text(value)
    return (None, problem) if problem else (value, None)


def parse_transcript_json(payload: object) -> tuple[Transcript, dict[str, Any]]:
    """Split a ``POST /v1/transcripts`` body into its parsed ``messages`` and the rest.

    The metadata dict (every key but ``messages``, values untouched) is left for the caller to
    validate. Message errors have fields like ``messages[3].at``.
    """
    if not isinstance(payload, dict):
        raise _invalid(
            "The transcript is not valid", [FieldError("body", "must be a JSON object")], "body"
        )
    if "messages" not in payload:
        raise _invalid(
            "The transcript is not valid", [FieldError("messages", "is required")], "messages"
        )
    metadata = {key: value for key, value in payload.items() if key != "messages"}
    return parse_messages(payload["messages"], "messages"), metadata


# Plain text

_LABELS: Final[dict[str, Sender]] = {
    "customer": "customer",
    "visitor": "customer",
    "citizen": "customer",
    "resident": "customer",
    "you": "customer",
    "agent": "agent",
    "advisor": "agent",
    "adviser": "agent",
    "operator": "agent",
    "staff": "agent",
    "bot": "bot",
    "virtual assistant": "bot",
    "chatbot": "bot",
    "system": "system",
}
# A line opening with "[" and a digit is a message header and must parse as one.
_HEADER_START = re.compile(r"\[\s*[0-9]")
_HEADER = re.compile(r"\[(?P<stamp>[^\]]*)\](?P<rest>.*)", re.DOTALL)
_STAMP = re.compile(
    r"""\s*
    (?:
        (?: (?P<year>[0-9]{4})-(?P<month>[0-9]{1,2})-(?P<day>[0-9]{1,2})
          | (?P<uk_day>[0-9]{1,2})/(?P<uk_month>[0-9]{1,2})/(?P<uk_year>[0-9]{4}) )
        (?: T | \s+ )
    )?
    (?P<hour>[0-9]{1,2}) : (?P<minute>[0-9]{2})
    (?: : (?P<second>[0-9]{2}) (?: [.,] (?P<fraction>[0-9]{1,6}) )? )?
    \s* (?P<zone> Z | UTC | [+-][0-9]{2}(?::?[0-9]{2})? )?
    \s*""",
    re.VERBOSE | re.IGNORECASE,
)
_SPEAKER = re.compile(
    r"\s*(?P<label>[^\s():][^():]*?)\s*(?:\((?P<name>[^()]*)\))?\s*:(?P<text>.*)", re.DOTALL
)
_HEADER_HINT = "a message starts with a header like [2026-11-23 09:01:02] Customer: ..."
_STAMP_FORMATS = "[2026-11-23 09:01:02], [23/11/2026 09:01], [09:01:02] or with +01:00 / Z / UTC"


@dataclass(slots=True)
class _Pending:
    """A plain-text message being read: its header, then its continuation lines."""

    line: int
    at: datetime
    sender: Sender
    name: str | None
    lines: list[str]
    blank_lines: int = 0


def parse_plain_text(text: str, default_date: date | None = None) -> Transcript:
    """Validate, normalise and redact a plain-text chat export.

    The format, line by line (lines split on ``\\n``, ``\\r\\n`` or ``\\r``; numbered from 1; a
    leading byte-order mark is ignored):

    - A **header** line starts, in its first column, with ``[`` and a digit. It must read
      ``[TIMESTAMP] Speaker: text`` or ``[TIMESTAMP] Speaker (Name): text``; a line that starts
      that way but does not parse is an error (``line 7: ...``), never silently text.
    - TIMESTAMP is ``YYYY-MM-DD HH:MM[:SS[.ffffff]]`` (``T`` may replace the space), or the UK
      day-first ``DD/MM/YYYY HH:MM[:SS]``, or a time alone ``HH:MM[:SS]``, optionally followed by
      ``Z``, ``UTC`` or an offset (``+01:00``, ``+0100``, ``-05``).
    - Without an offset the time is **UK local time** (Europe/London: GMT in winter, BST in
      summer), because UK chat exports print the local clock; it is converted to UTC. A time
      that occurs twice when the clocks go back is taken as the first occurrence unless that is
      earlier than the previous message (then the second); a time skipped when the clocks go
      forward is an error.
    - A time alone takes the date of the most recent header that had one, else ``default_date``;
      with neither it is an error. (Midnight is not inferred: a time-only export that crosses
      midnight needs a dated header on the new day.)
    - Speaker labels, case-insensitive: customer, visitor, citizen, resident, you (customer);
      agent, advisor, adviser, operator, staff (agent); bot, virtual assistant, chatbot (bot);
      system. Any other label is an error. An empty name ``()`` is no name.
    - Any other non-blank line continues the previous message (joined with ``\\n``). Text and
      continuation lines lose surrounding whitespace (exports indent them). Blank lines inside a
      message are kept; blank lines before a header or at the end are dropped. Text before the
      first header is an error.
    - Each message text is then redacted like JSON messages; the same limits apply.
    """
    errors: list[FieldError] = []
    done: list[tuple[datetime, Sender, str | None, str]] = []
    current: _Pending | None = None
    current_date: date | None = None
    swallow = False  # after a bad header (or text before the first), skip its continuations

    def finish() -> None:
        if current is None:
            return
        body = "\n".join(current.lines)
        if problem := _check_text(body):
            errors.append(FieldError(f"line {current.line}", f"message text {problem}"))
        done.append((current.at, current.sender, current.name, body))

    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate(lines, start=1):
        where = f"line {number}"
        if _SURROGATES.search(line):
            errors.append(FieldError(where, "is not valid Unicode text"))
            continue
        if _HEADER_START.match(line):
            finish()
            current = None
            if len(done) >= MAX_MESSAGES:
                errors.append(FieldError(where, f"more than {MAX_MESSAGES} messages"))
                break
            previous = done[-1][0] if done else None
            try:
                current, stamp_date = _parse_header(
                    line, number, current_date, default_date, previous
                )
            except ValueError as exc:
                errors.append(FieldError(where, str(exc)))
                swallow = True
                continue
            swallow = False
            current_date = stamp_date or current_date
        elif not line.strip():
            if current is not None:
                current.blank_lines += 1
        elif current is not None:
            current.lines.extend([""] * current.blank_lines)
            current.blank_lines = 0
            current.lines.append(line.strip())
        elif not swallow:
            errors.append(FieldError(where, f"text before the first message; {_HEADER_HINT}"))
            swallow = True
    finish()
    if not done and not errors:
        errors.append(FieldError("text", f"holds no messages; {_HEADER_HINT}"))
    if errors:
        raise _invalid("The plain-text transcript is not valid", errors, "text")
    return _redacted(done)


def _parse_header(
    line: str,
    number: int,
    current_date: date | None,
    default_date: date | None,
    previous: datetime | None,
) -> tuple[_Pending, date | None]:
    """A header line as a new pending message, and the date it printed (if any).

    Raises ``ValueError`` saying what is wrong with the line.
    """
    header = _HEADER.fullmatch(line)
    if header is None:
        raise ValueError(f"the timestamp has no closing ]; expected {_STAMP_FORMATS}")
    stamp = _STAMP.fullmatch(header["stamp"])
    if stamp is None:
        raise ValueError(
            f"unrecognised timestamp {_quote(header['stamp'])}; expected {_STAMP_FORMATS}"
        )
    speaker = _SPEAKER.fullmatch(header["rest"])
    if speaker is None:
        raise ValueError("expected 'Speaker: text' or 'Speaker (Name): text' after the timestamp")
    label = " ".join(speaker["label"].lower().split())
    sender = _LABELS.get(label)
    if sender is None:
        raise ValueError(
            f"unknown speaker {_quote(speaker['label'])}; expected one of {', '.join(_LABELS)}"
        )
    name: str | None = None
    if speaker["name"] is not None:
        name, problem = _check_name(speaker["name"])
        if problem:
            raise ValueError(f"speaker name {problem}")
    stamp_date = _stamp_date(stamp)
    day = stamp_date or current_date or default_date
    if day is None:
        raise ValueError(
            "has a time but no date; give the date ([2026-11-23 09:01:02]) or a default date"
        )
    at = _stamp_moment(stamp, day, previous)
    first = speaker["text"].strip()
    return _Pending(line=number, at=at, sender=sender, name=name, lines=[first]), stamp_date


def _stamp_date(stamp: re.Match[str]) -> date | None:
    try:
        if stamp["year"] is not None:
            return date(int(stamp["year"]), int(stamp["month"]), int(stamp["day"]))
        if stamp["uk_year"] is not None:
            return date(int(stamp["uk_year"]), int(stamp["uk_month"]), int(stamp["uk_day"]))
    except ValueError:
        raise ValueError(f"{_quote(stamp.group().strip())} is not a valid date") from None
    return None


def _stamp_moment(stamp: re.Match[str], day: date, previous: datetime | None) -> datetime:
    """The UTC instant of a header's timestamp on ``day``."""
    try:
        clock = time(
            int(stamp["hour"]),
            int(stamp["minute"]),
            int(stamp["second"] or 0),
            int((stamp["fraction"] or "").ljust(6, "0")),
        )
    except ValueError:
        raise ValueError(f"{_quote(stamp.group().strip())} is not a valid time") from None
    wall = datetime.combine(day, clock)  # naive: a wall-clock time, zone applied below
    try:
        zone = stamp["zone"]
        if zone is None:
            return _uk_local_to_utc(wall, previous)
        return wall.replace(tzinfo=_fixed_zone(zone)).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{_quote(stamp.group().strip())} is out of range") from None


def _fixed_zone(zone: str) -> timezone:
    if zone.upper() in {"Z", "UTC"}:
        return UTC
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"{_quote(zone)} is not a valid UTC offset")
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if zone.startswith("-") else offset)


def _uk_local_to_utc(wall: datetime, previous: datetime | None) -> datetime:
    """UK wall-clock ``wall`` (naive) as UTC; see :func:`parse_plain_text` for the clock
    changes."""
    candidates = sorted({
        wall.replace(tzinfo=PLAIN_TEXT_ZONE, fold=fold).astimezone(UTC) for fold in (0, 1)
    })
    real = [c for c in candidates if c.astimezone(PLAIN_TEXT_ZONE).replace(tzinfo=None) == wall]
    if not real:
        raise ValueError(
            f"{wall:%Y-%m-%d %H:%M} did not happen in UK time (the clocks went forward); "
            "give a UTC offset"
        )
    if len(real) == 2 and previous is not None and real[0] < previous:
        return real[1]
    return real[0]
