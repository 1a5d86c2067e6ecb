"""Transcripts pushed as JSON messages or plain text become one validated, redacted shape."""

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archive.errors import BadRequestError, FieldError
from ingest.redact import CARD_PLACEHOLDER, SECURITY_CODE_PLACEHOLDER, Redactions, redact_text
from ingest.transcripts import (
    MAX_MESSAGES,
    MAX_REPORTED_ERRORS,
    Message,
    Transcript,
    parse_messages,
    parse_plain_text,
    parse_timestamp,
    parse_transcript_json,
)


def errors_of(exc: pytest.ExceptionInfo[BadRequestError]) -> list[tuple[str, str]]:
    return [(e.field, e.message) for e in exc.value.errors]


def msg(at: object = "2026-11-23T09:00:00Z", sender: object = "customer", text: object = "hello",
        **extra: Any) -> dict[str, Any]:
    return {"at": at, "from": sender, "text": text, **extra}


# JSON messages


def test_json_messages_are_normalised_and_round_trip() -> None:
    transcript = parse_messages([
        msg("2026-11-23T09:00:00.123456Z", "system", "Chat started"),
        msg("2026-11-23T09:00:05.000001+00:00", "bot", "How can I help?", name="Ava"),
        msg("2026-11-23T10:00:01+01:00", "customer", "Council tax\nband query", name=" Ann "),
        # Out of order on purpose: the platform's order is kept, not sorted.
        msg("2026-11-23T08:59:59.999999-00:30", "agent", "", name=None),
    ])
    assert [m.at for m in transcript.messages] == [
        datetime(2026, 11, 23, 9, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 11, 23, 9, 0, 5, 1, tzinfo=UTC),
        datetime(2026, 11, 23, 9, 0, 1, tzinfo=UTC),
        datetime(2026, 11, 23, 9, 29, 59, 999999, tzinfo=UTC),
    ]
    assert all(m.at.utcoffset() == timedelta(0) for m in transcript.messages)
    assert [m.sender for m in transcript.messages] == ["system", "bot", "customer", "agent"]
    assert [m.name for m in transcript.messages] == [None, "Ava", "Ann", None]
    assert transcript.messages[2].text == "Council tax\nband query"
    assert transcript.redactions == Redactions()

    stored = transcript.to_json_bytes()
    assert Transcript.from_json_bytes(stored) == transcript
    assert Transcript.from_json_bytes(stored).to_json_bytes() == stored


def test_stored_json_is_canonical() -> None:
    transcript = parse_messages([msg("2026-11-23T09:00:00+00:00", text="café £5", name="Zoë")])
    assert transcript.to_json_bytes() == (
        '{"messages":[{"at":"2026-11-23T09:00:00Z","from":"customer","name":"Zoë",'
        '"text":"café £5"}],"redactions":{"cards":0,"security_codes":0}}'
    ).encode()


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(BadRequestError) as exc:
        parse_messages([
            msg(),
            {"at": "2026-11-23T09:00:00", "from": "Customer", "name": 7, "text": None},
            "not a message",
            {"extra": 1, "name": "x" * 201},
            msg(at="yesterday", text="x" * 100_001),
            msg(at=20261123, name="tab\there"),
        ])
    assert exc.value.status == 400
    assert errors_of(exc) == [
        ("messages[1].at", "needs a UTC offset, e.g. 2026-11-23T09:00:00Z"),
        ("messages[1].from", "must be one of customer, agent, bot, system"),
        ("messages[1].name", "must be a string or null"),
        ("messages[1].text", "must be a string"),
        ("messages[2]", "must be an object with at, from, name and text"),
        ("messages[3].extra", "unknown field; a message has at, from, name, text"),
        ("messages[3].at", "is required"),
        ("messages[3].from", "is required"),
        ("messages[3].text", "is required"),
        ("messages[3].name", "must be at most 200 characters"),
        ("messages[4].at",
         'is not an ISO 8601 timestamp (e.g. 2026-11-23T09:00:00Z): "yesterday"'),
        ("messages[4].text", "must be at most 100000 characters (got 100001)"),
        ("messages[5].at", "must be an ISO 8601 timestamp string"),
        ("messages[5].name", "must be a single line of text without control characters"),
    ]
    assert exc.value.detail == "Transcript messages are not valid (14 problems)"


@pytest.mark.parametrize("sender", ["customer", "agent", "bot", "system"])
def test_each_sender_is_accepted_with_any_text_even_empty(sender: str) -> None:
    transcript = parse_messages([msg(sender=sender, text="")])
    assert transcript.messages[0].sender == sender
    assert transcript.messages[0].text == ""


@pytest.mark.parametrize("sender", ["Customer", "AGENT", "visitor", "user", "", None, 1, ["bot"]])
def test_other_senders_are_refused_not_mapped(sender: object) -> None:
    with pytest.raises(BadRequestError) as exc:
        parse_messages([msg(sender=sender)])
    assert errors_of(exc) == [("messages[0].from", "must be one of customer, agent, bot, system")]


def test_unknown_keys_are_named() -> None:
    with pytest.raises(BadRequestError) as exc:
        parse_messages([msg(), msg(sender_id="42", **{"odd key!": True})])
    assert errors_of(exc) == [
        ("messages[1].sender_id", "unknown field; a message has at, from, name, text"),
        ('messages[1]["odd key!"]', "unknown field; a message has at, from, name, text"),
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "must be a list of messages"),
        ({"at": "2026-11-23T09:00:00Z"}, "must be a list of messages"),
        ([], "must not be empty"),
        ([msg()] * (MAX_MESSAGES + 1),
         f"has {MAX_MESSAGES + 1} messages; at most {MAX_MESSAGES} are allowed"),
    ],
)
def test_the_list_itself_is_checked(value: object, message: str) -> None:
    with pytest.raises(BadRequestError) as exc:
        parse_messages(value)
    assert errors_of(exc) == [("messages", message)]


def test_the_largest_transcript_is_accepted() -> None:
    transcript = parse_messages([msg(text="x" * 10)] * MAX_MESSAGES)
    assert len(transcript.messages) == MAX_MESSAGES


def test_a_long_error_list_is_cut_short() -> None:
    with pytest.raises(BadRequestError) as exc:
        parse_messages([msg(sender="user")] * 150)
    errors = errors_of(exc)
    assert len(errors) == MAX_REPORTED_ERRORS + 1
    assert errors[0] == ("messages[0].from", "must be one of customer, agent, bot, system")
    assert errors[-1] == ("messages", "and 50 more problems not listed")
    assert exc.value.detail == "Transcript messages are not valid (150 problems)"


def test_names_are_trimmed_and_blank_names_are_none() -> None:
    transcript = parse_messages([msg(name="  "), msg(name="  Ann  Smith "), msg(name="x" * 200)])
    assert [m.name for m in transcript.messages] == [None, "Ann  Smith", "x" * 200]


def test_unpaired_surrogates_are_refused() -> None:
    # json.loads accepts "\ud800"; such text could not be stored as UTF-8.
    messages = json.loads('[{"at": "2026-11-23T09:00:00Z", "from": "bot", "text": "a\\ud800"}]')
    with pytest.raises(BadRequestError) as exc:
        parse_messages(messages)
    assert errors_of(exc) == [
        ("messages[0].text", "must be valid Unicode text (it holds an unpaired surrogate)")
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23T09:00:00Z", datetime(2026, 11, 23, 9, tzinfo=UTC)),
        ("2026-07-01T10:00:00+01:00", datetime(2026, 7, 1, 9, tzinfo=UTC)),
        ("2026-11-23 09:00:00.5-05:00", datetime(2026, 11, 23, 14, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_timestamps_are_normalised_to_utc(value: str, expected: datetime) -> None:
    parsed = parse_timestamp(value)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-11-23T09:00:00", "needs a UTC offset, e.g. 2026-11-23T09:00:00Z"),
        ("2026-11-23", "needs a UTC offset, e.g. 2026-11-23T09:00:00Z"),
        ("23/11/2026 09:00", 'is not an ISO 8601 timestamp (e.g. 2026-11-23T09:00:00Z): '
                             '"23/11/2026 09:00"'),
        ("9999-12-31T23:00:00-05:00", "is out of range"),
        (1700000000, "must be an ISO 8601 timestamp string"),
    ],
)
def test_bad_timestamps(value: object, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_timestamp(value)
    assert str(exc.value) == message


def test_cards_are_removed_from_messages_and_counted() -> None:
    transcript = parse_messages([
        msg(sender="agent", text="Can you give me the long number on the card?"),
        msg(text="4111 1111 1111 1111"),
        msg(text="and the cvv is 737. My number is 07700 900123, order 1234 5678 9012 3456"),
        msg(text="Or use 5500-0000-0000-0004 instead"),
    ])
    assert transcript.redactions == Redactions(cards=2, security_codes=1)
    assert [m.text for m in transcript.messages[1:]] == [
        CARD_PLACEHOLDER,
        f"and the cvv is {SECURITY_CODE_PLACEHOLDER}. My number is 07700 900123, "
        "order 1234 5678 9012 3456",
        f"Or use {CARD_PLACEHOLDER} instead",
    ]
    stored = transcript.to_json_bytes()
    for secret in (b"4111", b"5500", b"737"):
        assert secret not in stored
    assert b"07700 900123" in stored
    assert b"1234 5678 9012 3456" in stored
    assert json.loads(stored)["redactions"] == {"cards": 2, "security_codes": 1}


def test_messages_must_be_utc() -> None:
    with pytest.raises(ValueError, match="UTC"):
        Message(at=datetime(2026, 1, 1), sender="bot", name=None, text="")  # noqa: DTZ001
    with pytest.raises(ValueError, match="UTC"):
        Message(at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1))), sender="bot",
                name=None, text="")


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"messages": []}',
        b'{"messages": [{"at": "2026-11-23T09:00:00Z"}], "redactions": {}}',
        b'{"messages": [{"at": "2026-11-23T09:00:00", "from": "bot", "name": null, "text": ""}],'
        b' "redactions": {"cards": 0, "security_codes": 0}}',
        b'{"messages": [{"at": "2026-11-23T09:00:00Z", "from": "user", "name": null, "text": ""}],'
        b' "redactions": {"cards": 0, "security_codes": 0}}',
        b'{"messages": [], "redactions": {"cards": true, "security_codes": 0}}',
        b"\xff",
    ],
)
def test_reading_back_a_malformed_document_fails(data: bytes) -> None:
    with pytest.raises(ValueError):
        Transcript.from_json_bytes(data)


def test_the_request_body_is_split_into_messages_and_metadata() -> None:
    customer = {"name": "Ann Smith", "email": "ann@example.org"}
    body = {
        "external_id": "chat-1",
        "started_at": "2026-11-23T09:00:00Z",
        "customer": customer,
        "messages": [msg()],
    }
    transcript, metadata = parse_transcript_json(body)
    assert metadata == {
        "external_id": "chat-1",
        "started_at": "2026-11-23T09:00:00Z",
        "customer": customer,
    }
    assert metadata["customer"] is customer
    assert "messages" in body
    assert transcript.messages[0].text == "hello"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ([msg()], [("body", "must be a JSON object")]),
        ({"external_id": "x"}, [("messages", "is required")]),
        ({"messages": [msg(), msg(at="2026-11-23T09:00:00")]},
         [("messages[1].at", "needs a UTC offset, e.g. 2026-11-23T09:00:00Z")]),
    ],
)
def test_request_body_errors(body: object, errors: list[tuple[str, str]]) -> None:
    with pytest.raises(BadRequestError) as exc:
        parse_transcript_json(body)
    assert errors_of(exc) == errors


# Plain text

CHAT = """\
[2026-07-01 10:00:00] Visitor (Ann Smith): Hello, I need help with my council tax
it's about the single person discount
[2026-07-01 10:00:30] Virtual Assistant: I can put you through to an adviser.

[2026-07-01 10:01:02] ADVISER (Bob): Morning Ann. Can you confirm your address?
[10:02:15] customer (Ann Smith): 12 High Street

    Flat 3
[10:03] system: Chat transferred
[2026-07-01T10:04:00Z] Agent: Thanks, that's done.
"""


def test_a_realistic_plain_text_chat() -> None:
    transcript = parse_plain_text(CHAT)
    assert [(m.at, m.sender, m.name, m.text) for m in transcript.messages] == [
        (datetime(2026, 7, 1, 9, 0, tzinfo=UTC), "customer", "Ann Smith",
         "Hello, I need help with my council tax\nit's about the single person discount"),
        (datetime(2026, 7, 1, 9, 0, 30, tzinfo=UTC), "bot", None,
         "I can put you through to an adviser."),
        (datetime(2026, 7, 1, 9, 1, 2, tzinfo=UTC), "agent", "Bob",
         "Morning Ann. Can you confirm your address?"),
        # Time-only lines take the date of the last dated line; BST is UTC+1.
        (datetime(2026, 7, 1, 9, 2, 15, tzinfo=UTC), "customer", "Ann Smith",
         "12 High Street\n\nFlat 3"),
        (datetime(2026, 7, 1, 9, 3, tzinfo=UTC), "system", None, "Chat transferred"),
        # An explicit offset wins over UK local time.
        (datetime(2026, 7, 1, 10, 4, tzinfo=UTC), "agent", None, "Thanks, that's done."),
    ]
    assert transcript.redactions == Redactions()


def test_plain_text_in_winter_is_gmt_and_in_summer_bst() -> None:
    transcript = parse_plain_text(
        "[2026-01-15 10:00] Agent: winter\n"
        "[2026-07-01 10:00] Agent: summer\n"
        "[23/11/2026 09:01:02] Agent: UK day-first date\n"
        "[2026-07-01 10:00:00.25 +02:00] Agent: offset\n"
        "[2026-07-01 10:00 utc] Agent: utc\n"
    )
    assert [m.at for m in transcript.messages] == [
        datetime(2026, 1, 15, 10, 0, tzinfo=UTC),
        datetime(2026, 7, 1, 9, 0, tzinfo=UTC),
        datetime(2026, 11, 23, 9, 1, 2, tzinfo=UTC),
        datetime(2026, 7, 1, 8, 0, 0, 250000, tzinfo=UTC),
        datetime(2026, 7, 1, 10, 0, tzinfo=UTC),
    ]


def test_time_only_lines_use_the_default_date() -> None:
    transcript = parse_plain_text(
        "[09:01:02] Agent: Hello\r\n[09:02] Resident: Hi\r\n", default_date=date(2026, 11, 23)
    )
    assert [(m.at, m.sender) for m in transcript.messages] == [
        (datetime(2026, 11, 23, 9, 1, 2, tzinfo=UTC), "agent"),
        (datetime(2026, 11, 23, 9, 2, tzinfo=UTC), "customer"),
    ]


def test_a_repeated_hour_when_the_clocks_go_back_follows_the_chat() -> None:
    # 01:00-02:00 happens twice on 2026-10-25: first in BST (UTC+1), then in GMT.
    transcript = parse_plain_text(
        "[2026-10-25 01:30] Agent: first time round\n"
        "[01:10] Customer: second time round, so after the one above\n"
        "[01:40] Agent: still the second time\n"
    )
    assert [m.at for m in transcript.messages] == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 10, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 40, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("label", "sender"),
    [
        ("Customer", "customer"), ("visitor", "customer"), ("CITIZEN", "customer"),
        ("Resident", "customer"), ("You", "customer"), ("Agent", "agent"),
        ("advisor", "agent"), ("Adviser", "agent"), ("Operator", "agent"), ("staff", "agent"),
        ("Bot", "bot"), ("virtual  assistant", "bot"), ("Chatbot", "bot"), ("System", "system"),
    ],
)
def test_speaker_labels(label: str, sender: str) -> None:
    transcript = parse_plain_text(f"[2026-11-23 09:00] {label} (Sam): hi")
    assert (transcript.messages[0].sender, transcript.messages[0].name) == (sender, "Sam")


def test_plain_text_names_and_empty_text() -> None:
    transcript = parse_plain_text(
        "[2026-11-23 09:00] Agent (): \n[2026-11-23 09:01] Agent (Team: Housing):  x  "
    )
    assert [(m.name, m.text) for m in transcript.messages] == [(None, ""), ("Team: Housing", "x")]


def test_plain_text_errors_name_their_lines() -> None:
    text = "\n".join([
        "Transcript export",                     # 1: text before the first message
        "more preamble",                         # 2: (reported once, with line 1)
        "[2026-11-23 09:00] Agent: hello",       # 3: fine
        "[2026-13-01 09:00] Agent: bad month",   # 4
        "  continuation of a bad line",          # 5: swallowed by the bad header
        "[10:00 PM] Agent: 12-hour clock",       # 6
        "[2026-03-29 01:30] Agent: clocks went forward",  # 7
        "[10:00] Supervisor: hi",                # 8
        "[10:00] Agent said hello",              # 9
        "[2026-11-23 25:00] Agent: hour",        # 10
        "[2026-11-23 09:00 +24:00] Agent: offset",  # 11
        "[2026-11-23 09:00 Agent: unclosed",     # 12
        f"[2026-11-23 09:00] Agent ({'x' * 201}): long name",  # 13
        "[2026-11-23 09:00] Agent: fine again",  # 14
    ])
    with pytest.raises(BadRequestError) as exc:
        parse_plain_text(text)
    formats = ("expected [2026-11-23 09:01:02], [23/11/2026 09:01], [09:01:02] or with "
               "+01:00 / Z / UTC")
    assert errors_of(exc) == [
        ("line 1", "text before the first message; a message starts with a header like "
                   "[2026-11-23 09:01:02] Customer: ..."),
        ("line 4", '"2026-13-01 09:00" is not a valid date'),
        ("line 6", f'unrecognised timestamp "10:00 PM"; {formats}'),
        ("line 7", "2026-03-29 01:30 did not happen in UK time (the clocks went forward); "
                   "give a UTC offset"),
        ("line 8", 'unknown speaker "Supervisor"; expected one of customer, visitor, citizen, '
                   "resident, you, agent, advisor, adviser, operator, staff, bot, "
                   "virtual assistant, chatbot, system"),
        ("line 9", "expected 'Speaker: text' or 'Speaker (Name): text' after the timestamp"),
        ("line 10", '"2026-11-23 25:00" is not a valid time'),
        ("line 11", '"+24:00" is not a valid UTC offset'),
        ("line 12", f"the timestamp has no closing ]; {formats}"),
        ("line 13", "speaker name must be at most 200 characters"),
    ]
    assert exc.value.detail == "The plain-text transcript is not valid (10 problems)"


def test_a_time_without_any_date_is_an_error() -> None:
    with pytest.raises(BadRequestError) as exc:
        parse_plain_text("\n\n[09:01:02] Agent: hello")
    assert errors_of(exc) == [
        ("line 3", "has a time but no date; give the date ([2026-11-23 09:01:02]) or a default "
                   "date"),
    ]


@pytest.mark.parametrize("text", ["", "\n \n", "\ufeff"])
def test_a_plain_text_transcript_needs_a_message(text: str) -> None:
    with pytest.raises(BadRequestError) as exc:
        parse_plain_text(text)
    assert errors_of(exc) == [
        ("text", "holds no messages; a message starts with a header like "
                 "[2026-11-23 09:01:02] Customer: ..."),
    ]


def test_a_too_long_plain_text_message_is_named_by_its_first_line() -> None:
    with pytest.raises(BadRequestError) as exc:
        parse_plain_text("[2026-11-23 09:00] Agent: hi\n[09:01] Customer: a\n" + "x" * 100_000)
    assert errors_of(exc) == [
        ("line 2", "message text must be at most 100000 characters (got 100002)"),
    ]


def test_plain_text_is_redacted_like_json() -> None:
    transcript = parse_plain_text(
        "[2026-11-23 09:00] Agent: What are the 3 digits on the back?\n"
        "[2026-11-23 09:01] Customer: 4111-1111-1111-1111\n"
        "security code 123\n"
        "and my phone is 020 7946 0000\n"
    )
    assert transcript.messages[1].text == (
        f"{CARD_PLACEHOLDER}\nsecurity code {SECURITY_CODE_PLACEHOLDER}\n"
        "and my phone is 020 7946 0000"
    )
    assert transcript.redactions == Redactions(cards=1, security_codes=1)


def test_to_text_is_readable_and_reads_back() -> None:
    transcript = parse_messages([
        msg("2026-11-23T09:01:02.999Z", "customer", "hello\nsecond line\n\nafter a gap",
            name="Ann"),
        msg("2026-11-23T09:02:00Z", "agent", ""),
        msg("2026-11-23T09:03:00Z", "bot", "one line"),
    ])
    text = transcript.to_text()
    assert text == (
        "[2026-11-23 09:01:02 UTC] Customer (Ann): hello\n"
        "    second line\n"
        "\n"
        "    after a gap\n"
        "[2026-11-23 09:02:00 UTC] Agent:\n"
        "[2026-11-23 09:03:00 UTC] Bot: one line\n"
    )
    again = parse_plain_text(text)
    assert [(m.sender, m.name, m.text) for m in again.messages] == [
        (m.sender, m.name, m.text) for m in transcript.messages
    ]
    assert [m.at for m in again.messages] == [
        m.at.replace(microsecond=0) for m in transcript.messages
    ]


# Properties

_names = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=20).map(str.strip)
_messages = st.builds(
    Message,
    at=st.datetimes(
        # Hypothesis takes naive bounds and applies the time zone itself.
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    sender=st.sampled_from(["customer", "agent", "bot", "system"]),
    name=st.none() | _names.filter(bool),
    # Stored text has been redacted already.
    text=st.text(max_size=50).map(lambda text: redact_text(text)[0]),
)


@settings(max_examples=100, deadline=None)
@given(messages=st.lists(_messages, min_size=1, max_size=5),
       cards=st.integers(0, 5), codes=st.integers(0, 5))
def test_stored_json_round_trips(messages: list[Message], cards: int, codes: int) -> None:
    transcript = Transcript(tuple(messages), Redactions(cards, codes))
    stored = transcript.to_json_bytes()
    assert Transcript.from_json_bytes(stored) == transcript
    # What is stored is itself valid input; redaction of redacted text finds nothing new.
    reparsed = parse_messages(json.loads(stored)["messages"])
    assert reparsed == Transcript(transcript.messages)


def test_field_errors_are_the_shared_type() -> None:
    with pytest.raises(BadRequestError) as exc:
        parse_messages([{}])
    assert all(isinstance(e, FieldError) for e in exc.value.errors)
