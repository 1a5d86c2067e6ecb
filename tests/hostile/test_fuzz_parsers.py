"""Property tests and a mutation fuzzer for the parsers that read what strangers send: recording
and transcript metadata (ingest/metadata.py), transcripts (ingest/transcripts.py) and the Range
header (web/views/media.py).

The contract: any input gives a value or the project's ``BadRequestError`` (the Range parser:
``None`` to ignore the header, a range, or ``RangeNotSatisfiableError``), never another
exception; and the round trips hold (a valid E.164 number normalises to itself, a range within
the content is honoured exactly).
"""

import json
import random
from collections.abc import Callable
from datetime import date
from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive.errors import BadRequestError
from ingest.metadata import (
    RECORDING_FIELDS,
    TRANSCRIPT_FIELDS,
    ContactMetadata,
    normalise_phone,
    normalise_postcode,
    parse_recording,
    parse_transcript_metadata,
)
from ingest.transcripts import Transcript, parse_plain_text, parse_transcript_json
from web.views.media import RangeNotSatisfiableError, parse_range

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON value, with the text that hurts: controls, NUL, RTL marks, combining marks, emoji,
# lone surrogates (json.loads makes them from "\ud800").
_text = st.one_of(
    st.text(),
    st.sampled_from(["", " ", "\x00", "\u202e", "e\u0301", "\U0001f4de", "\ud800", "+44",
                     "020 7946 0000", "2026-11-23T09:00:00Z", "2026-11-23T09:00:00",
                     "true", "1-2", "-", "anonymous", "SW1A 1AA", "a@b.co"]),
)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _text)
json_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12)


def _payloads(fields: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects whose keys are mostly the parser's own fields, with any values."""
    return st.dictionaries(st.sampled_from(sorted(fields)) | _text, json_values, max_size=10)


def _value_or_bad_request(parse: Callable[[Any], object], data: Any) -> object | None:
    try:
        return parse(data)
    except BadRequestError as exc:
        assert exc.status == 400
        assert exc.errors, "a BadRequestError names the bad fields"
        return None


@FAST
@given(_payloads(RECORDING_FIELDS))
def test_recording_metadata_is_a_value_or_a_bad_request(data: dict[str, Any]) -> None:
    result = _value_or_bad_request(parse_recording, data)
    assert result is None or isinstance(result, ContactMetadata)


@FAST
@given(_payloads(TRANSCRIPT_FIELDS | {"customer"}))
def test_transcript_metadata_is_a_value_or_a_bad_request(data: dict[str, Any]) -> None:
    result = _value_or_bad_request(parse_transcript_metadata, data)
    assert result is None or isinstance(result, ContactMetadata)


@FAST
@given(json_values)
def test_any_json_value_as_metadata_is_a_value_or_a_bad_request(value: Any) -> None:
    _value_or_bad_request(parse_recording, value)
    _value_or_bad_request(parse_transcript_metadata, value)


_messages = st.lists(st.dictionaries(st.sampled_from(["at", "from", "name", "text"]) | _text,
                                     json_values, max_size=5), max_size=5)


@FAST
@given(st.one_of(json_values, st.fixed_dictionaries({"messages": _messages | json_values})))
def test_transcript_json_is_a_value_or_a_bad_request(payload: Any) -> None:
    result = _value_or_bad_request(parse_transcript_json, payload)
    assert result is None or (isinstance(result, tuple) and isinstance(result[0], Transcript))


_lines = st.lists(st.one_of(
    st.text(max_size=40),
    st.builds(lambda stamp, who, text: f"[{stamp}] {who}: {text}",
              st.sampled_from(["2026-11-23 09:01:02", "23/11/2026 09:01", "09:01:02",
                               "2026-03-29 01:30", "2026-10-25 01:30", "99:99", "2026-02-30 09:00",
                               "09:01 +01:00", "1", "2026-11-23T09:01:02.123456Z"]),
              st.sampled_from(["Customer", "Agent (Ann)", "Bot", "Nobody", "(x)", ""]),
              st.text(max_size=20)),
), max_size=8)


@FAST
@given(_lines, st.none() | st.dates())
def test_plain_text_transcripts_are_a_value_or_a_bad_request(
        lines: list[str], default_date: date | None) -> None:
    result = _value_or_bad_request(lambda t: parse_plain_text(t, default_date), "\n".join(lines))
    assert result is None or isinstance(result, Transcript)


# -- round trips ---------------------------------------------------------------------------

def _e164_examples() -> list[str]:
    """Real-shaped numbers of every region phonenumbers knows, each type it has an example of."""
    numbers = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                numbers.append(phonenumbers.format_number(
                    example, phonenumbers.PhoneNumberFormat.E164))
    return sorted(set(numbers))


E164 = _e164_examples()
META = {"external_id": "call-1", "started_at": "2026-11-23T09:00:00Z"}


def test_there_are_many_example_numbers() -> None:
    assert len(E164) > 300


@pytest.mark.parametrize("number", E164[::7])
def test_a_valid_e164_number_normalises_to_itself(number: str) -> None:
    assert normalise_phone(number) == number
    parsed = parse_recording({**META, "caller_number": number, "called_number": number})
    assert parsed.fields["caller_number"] == parsed.fields["called_number"] == number


@FAST
@given(st.text(max_size=30) | st.from_regex(r"\+?[0-9 ()-]{3,20}", fullmatch=True))
def test_phone_normalisation_is_idempotent(raw: str) -> None:
    once = normalise_phone(raw)
    if once is not None:
        assert normalise_phone(once) == once


@FAST
@given(st.text(max_size=12) | st.from_regex(r"[A-Za-z]{1,2}[0-9][A-Za-z0-9]? ?[0-9][A-Za-z]{2}",
                                            fullmatch=True))
def test_postcode_normalisation_is_idempotent(raw: str) -> None:
    once = normalise_postcode(raw)
    if once is not None:
        assert normalise_postcode(once) == once


# -- the Range header ----------------------------------------------------------------------

def _range_or_refusal(value: str | None, size: int) -> tuple[int, int] | str | None:
    try:
        result = parse_range(value, size)
    except RangeNotSatisfiableError:
        return "416"
    if result is not None:
        start, end = result
        assert 0 <= start < end <= size, (value, size, result)
    return result


_range_headers = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"\s*[bB][yY][tT][eE][sS]\s*=\s*[0-9]{0,25}\s*-\s*[0-9]{0,25}\s*(,.*)?",
                  fullmatch=True),
    st.sampled_from(["bytes=", "bytes=-", "bytes=--1", "bytes=1-0", "bytes=0-0,1-1", "items=0-1",
                     "bytes=\u0661-\u0662", "bytes=\uff11-\uff12", "bytes=0-" + "9" * 4000]),
)


@settings(max_examples=1000, deadline=None)
@given(_range_headers, st.integers(min_value=0, max_value=2**63))
def test_any_range_header_is_ignored_honoured_or_refused(value: str, size: int) -> None:
    _range_or_refusal(value, size)




@pytest.mark.parametrize("value", ["bytes=0-" + "9" * 5000, "bytes=" + "9" * 5000 + "-",
                                   "bytes=-" + "9" * 5000])
def test_a_range_with_a_huge_number_is_ignored_or_refused(value: str) -> None:
    # bytes=0-<huge> is the whole content, the other two are unsatisfiable / the whole content.
    assert _range_or_refusal(value, 1000) in {(0, 1000), "416"}


@FAST
@given(st.data(), st.integers(min_value=1, max_value=2**40))
def test_a_range_within_the_size_is_honoured(data: st.DataObject, size: int) -> None:
    first = data.draw(st.integers(min_value=0, max_value=size - 1))
    last = data.draw(st.integers(min_value=first, max_value=size - 1))
    assert parse_range(f"bytes={first}-{last}", size) == (first, last + 1)
    assert parse_range(f"bytes={first}-", size) == (first, size)
    suffix = data.draw(st.integers(min_value=1, max_value=2 * size))
    assert parse_range(f"bytes=-{suffix}", size) == (max(0, size - suffix), size)


# -- a mutation fuzzer ---------------------------------------------------------------------

SEEDS: dict[str, bytes] = {
    "recording": json.dumps({
        "external_id": "call-1", "started_at": "2026-11-23T09:00:00Z",
        "ended_at": "2026-11-23T09:05:00+00:00", "direction": "inbound",
        "caller_number": "020 7946 0000", "called_number": "+44 1632 960001",
        "agent_id": "a7", "agent_extension": "2001", "service": "tax", "queue": "q",
        "tags": ["x", "y"], "special_category": "yes",
        "pci_redactions": [{"start": 1.5, "end": 3}]}).encode(),
    "transcript": json.dumps({
        "external_id": "chat-1", "started_at": "2026-11-23T09:00:00Z",
        "customer": {"name": "Ann O'Neil", "email": "Ann@Example.org", "postcode": "sw1a1aa"},
        "messages": [{"at": "2026-11-23T09:00:01Z", "from": "customer", "name": "Ann",
                      "text": "card 4111 1111 1111 1111"},
                     {"at": "2026-11-23T09:00:02+01:00", "from": "agent", "text": ""}]}).encode(),
    "plain": (b"[2026-11-23 09:01:02] Customer (Ann): hello\n  more\n"
              b"[09:02] Agent: hi\r\n[23/11/2026 09:03:04 +01:00] Bot: x\n"),
    "range": b"bytes=0-1023",
}
_TOKENS = [b"\x00", b"\xff", b'"', b"{", b"}", b"[", b"]", b",", b":", b"-", b"\\u0000",
           b"\\ud800", b"\xe2\x80\xae", b"\xcc\x81", b"\xf0\x9f\x93\x9e", b"9" * 40, b"null",
           b"1e999", b"-0", b"\n[", b"[99:99] X: ", b"+44", b"\r"]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        at = rng.randint(0, len(buf))
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert a nasty token
            buf[at:at] = rng.choice(_TOKENS)
        elif op == 2:  # delete a run
            del buf[at:at + rng.randint(1, 8)]
        elif op == 3:  # duplicate a run
            buf[at:at] = buf[at:at + rng.randint(1, 16)]
        else:  # random bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 4))
    return bytes(buf)


def _decode_json(raw: bytes) -> Any:
    """What the HTTP layer does before the parsers: undecodable JSON is a 400 there."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _feed(kind: str, raw: bytes) -> None:
    if kind == "recording":
        _value_or_bad_request(parse_recording, _decode_json(raw))
    elif kind == "transcript":
        payload = _decode_json(raw)
        parsed = _value_or_bad_request(parse_transcript_json, payload)
        if isinstance(parsed, tuple):
            _value_or_bad_request(parse_transcript_metadata, parsed[1])
    elif kind == "plain":
        _value_or_bad_request(parse_plain_text, raw.decode("utf-8", "replace"))
    else:
        text = raw.decode("latin-1")  # how aiohttp hands over a header's bytes
        for size in (0, 1, 1024, 2**40):
            _range_or_refusal(text, size)


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_mutation_fuzzer(kind: str) -> None:
    """2,000 mutations of a valid input per parser, from a fixed seed (reproducible)."""
    rng = random.Random(f"issue-9-{kind}")
    corpus = [SEEDS[kind]]
    for _ in range(2000):
        sample = _mutate(rng, rng.choice(corpus))
        _feed(kind, sample)
        if len(corpus) < 64:
            corpus.append(sample)  # mutations of mutations reach deeper
