"""Producer metadata: every notation normalised, every bad field named."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archive.errors import BadRequestError
from ingest.metadata import (
    normalise_phone,
    normalise_postcode,
    parse_recording,
    parse_transcript_metadata,
)

BASE = {"external_id": "c-1", "started_at": "2026-11-23T09:00:00+01:00"}


@pytest.mark.parametrize("notation", [
    "020 7946 0000", "02079460000", "+44 20 7946 0000", "+44 (0)20 7946 0000",
    "0044 20 7946 0000", "(020) 7946-0000", "+442079460000",
])
def test_uk_notations_become_e164(notation: str) -> None:
    meta = parse_recording({**BASE, "caller_number": notation})
    assert meta.fields["caller_number"] == "+442079460000"


@given(st.sampled_from(["7700 900", "20 7946 0", "1632 960"]),
       st.integers(min_value=0, max_value=99),
       st.sampled_from(["0{}", "+44 {}", "+44 (0){}", "0044{}"]),
       st.sampled_from([" ", "-", ""]))
def test_notation_never_changes_the_number(prefix: str, tail: int, form: str,
                                           sep: str) -> None:
    national = f"{prefix}{tail:02d}".replace(" ", sep)
    assert normalise_phone(form.format(national)) == normalise_phone("0" + national)


def test_international_withheld_and_extensions() -> None:
    meta = parse_recording({**BASE, "caller_number": "+33 1 42 68 53 00",
                            "called_number": "2001"})
    assert meta.fields["caller_number"] == "+33142685300"
    assert meta.fields["called_number"] == "2001"
    withheld = parse_recording({**BASE, "caller_number": "Anonymous"})
    assert "caller_number" not in withheld.fields


def test_times_are_utc_and_duration_follows() -> None:
    meta = parse_recording({**BASE, "ended_at": "2026-11-23T08:05:30Z"})
    assert meta.started_at == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert meta.fields["duration"] == 330.0


def test_every_bad_recording_field_is_named_at_once() -> None:
    with pytest.raises(BadRequestError) as info:
        parse_recording({"started_at": "2026-11-23T09:00:00", "ended_at": "2026-01-01T00:00Z",
                         "caller_number": "not a number", "direction": "sideways",
                         "tags": [1, 2], "special_category": "perhaps", "extra": 1,
                         "pci_redactions": "5-x", "agent_id": "a" * 101})
    fields = {e.field for e in info.value.errors}
    assert fields == {"external_id", "started_at", "caller_number", "direction", "tags",
                      "special_category", "extra", "pci_redactions", "agent_id"}


def test_ended_before_started_is_refused() -> None:
    with pytest.raises(BadRequestError) as info:
        parse_recording({**BASE, "ended_at": "2026-11-23T07:00:00Z"})
    assert info.value.errors[0].field == "ended_at"


def test_customer_fields_are_normalised_for_search() -> None:
    meta = parse_transcript_metadata({**BASE, "customer": {
        "name": "  Ann  Example ", "email": "Ann.Example@Example.ORG", "postcode": "n19gu"}})
    assert meta.fields["customer_name"] == "Ann  Example"
    assert meta.fields["customer_name_key"] == "ann  example"
    assert meta.fields["customer_email"] == "ann.example@example.org"
    assert meta.fields["customer_postcode"] == "N1 9GU"


def test_bad_customer_fields_are_named() -> None:
    with pytest.raises(BadRequestError) as info:
        parse_transcript_metadata({**BASE, "customer": {"email": "no-at-sign",
                                                        "postcode": "12345", "age": 3}})
    assert {e.field for e in info.value.errors} == {
        "customer.email", "customer.postcode", "customer.age"}


@pytest.mark.parametrize(("typed", "stored"), [
    ("sw1a1aa", "SW1A 1AA"), ("SW1A 1AA", "SW1A 1AA"), (" m1  1ae ", "M1 1AE"),
    ("B338TH", "B33 8TH"), ("90210", None), ("", None),
])
def test_postcode_search_form(typed: str, stored: str | None) -> None:
    assert normalise_postcode(typed) == stored


def test_same_upload_same_content_hash() -> None:
    a = parse_recording({**BASE, "caller_number": "020 7946 0000", "tags": "x,y"})
    b = parse_recording({**BASE, "caller_number": "+442079460000", "tags": ["x", "y"]})
    assert a.content_hash("s") == b.content_hash("s") != a.content_hash("t")
