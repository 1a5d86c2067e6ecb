"""The text anonymiser: what identifies a person goes, everything else stays."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archive.anonymise import anonymise_text, name_patterns, postcode_district

# -- examples ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("mail me at Ann.Smith+council@Example.co.uk please",
     "mail me at [EMAIL] please"),
    ("(ann@example.org)", "([EMAIL])"),
    ("I'm at SW1A 1AA", "I'm at [POSTCODE]"),
    ("postcode sw1a1aa.", "postcode [POSTCODE]."),
    ("m1 1ae and EC1A 1BB", "[POSTCODE] and [POSTCODE]"),
    ("call 07700 900123", "call [PHONE]"),
    ("call 07700900123 or 020-7946-0000", "call [PHONE] or [PHONE]"),
    ("+44 (0)20 7946 0000 now", "[PHONE] now"),
    ("ring 0044 20 7946 0000", "ring [PHONE]"),
    ("my French number +33 1 42 68 53 00", "my French number [PHONE]"),
    ("(020) 7946 0000", "[PHONE]"),
    ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
    ("already [card number removed] at ingest", "already [CARD] at ingest"),
    ("account 123456789", "account [PHONE]"),
])
def test_personal_patterns_are_replaced(text: str, expected: str) -> None:
    assert anonymise_text(text) == expected


@pytest.mark.parametrize("text", [
    "I paid £1,234.56 on 2026-11-23 at 10:30",
    "on 23.11.2026 09:00, ref 1234567 (7 digits), room 101",
    "Your council tax band is D; call 999 in an emergency.",
    "email support at the counter; see section 4.2",
    "",
])
def test_text_without_personal_data_is_unchanged(text: str) -> None:
    assert anonymise_text(text) == text


def test_names_whole_words_case_insensitive_with_their_parts() -> None:
    text = "Hello ANN smith, this is Bob. Annual review for Ann; Smithson is not Smith."
    out = anonymise_text(text, ["Ann Smith", "Bob"])
    assert out == ("Hello [NAME], this is [NAME]. Annual review for [NAME]; "
                   "Smithson is not [NAME].")


def test_a_name_never_breaks_a_placeholder() -> None:
    out = anonymise_text("card 4111111111111111 email a@b.co", ["Card", "Email"])
    assert out == "[NAME] [CARD] [NAME] [EMAIL]"


def test_name_patterns_skip_initials_and_blanks() -> None:
    assert name_patterns(["J  Bloggs", "  ", "Straße"]) == [
        "j bloggs", "strasse", "bloggs", "straße"]


def test_a_date_does_not_hide_a_phone_number_beside_it() -> None:
    assert anonymise_text("23.11.2026 07700 900123") == "23.11.2026 [PHONE]"


@pytest.mark.parametrize(("value", "district"), [
    ("SW1A 1AA", "SW1A"), ("sw1a1aa", "SW1A"), ("M1 1AE", "M1"), ("B33 8TH", "B33"),
    ("not a postcode", None), ("", None), (None, None),
])
def test_postcode_district(value: str | None, district: str | None) -> None:
    assert postcode_district(value) == district


# -- properties -------------------------------------------------------------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Filler text: no digits and no "@", so no personal pattern can form in it.
filler = st.text(alphabet=_LETTERS + " ,.;!?'-\n", max_size=40)
sep = st.sampled_from([" ", "-", ""])


@st.composite
def uk_phone(draw: st.DrawFn) -> str:
    subscriber = draw(st.text(alphabet="0123456789", min_size=9, max_size=9))
    lead = draw(st.sampled_from("1237"))
    digits = lead + subscriber
    cut = draw(st.integers(2, 5))
    s = draw(sep)
    body = f"{digits[:cut]}{s}{digits[cut:]}"
    prefix = draw(st.sampled_from(["0", "+44 ", "+44", "0044 ", "+44 (0)"]))
    return prefix + body


@st.composite
def international_phone(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(["1", "33", "49", "353", "91"]))
    groups = draw(st.lists(st.text(alphabet="0123456789", min_size=2, max_size=4),
                           min_size=3, max_size=4))
    return f"+{country} " + " ".join(groups)


@st.composite
def postcode(draw: st.DrawFn) -> str:
    area = draw(st.text(alphabet="ABCDEFGHIJKLMNOPRSTUWYZ", min_size=1, max_size=2))
    district = draw(st.integers(1, 99))
    sector = draw(st.integers(0, 9))
    unit = draw(st.text(alphabet="ABDEFGHJLNPQRSTUWXYZ", min_size=2, max_size=2))
    code = f"{area}{district}{draw(sep.filter(lambda s: s != '-'))}{sector}{unit}"
    return code.lower() if draw(st.booleans()) else code


email = st.emails().filter(lambda e: len(e) < 80)
personal = st.one_of(uk_phone(), international_phone(), postcode(), email)


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(filler, personal), min_size=1, max_size=4), filler)
def test_no_generated_personal_value_survives(parts: list[tuple[str, str]], tail: str) -> None:
    text = "".join(f"{before} {value} " for before, value in parts) + tail
    out = anonymise_text(text)
    for _, value in parts:
        assert value not in out
        if "@" not in value:  # no run of its digits is left either
            assert len(_digits(value)) < 4 or _digits(value) not in _digits(out)
    assert "@" not in out.replace("[EMAIL]", "")


@settings(max_examples=300, deadline=None)
@given(filler)
def test_filler_without_personal_data_is_unchanged(text: str) -> None:
    assert anonymise_text(text) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(filler, personal), min_size=1, max_size=3))
def test_anonymising_twice_changes_nothing_more(parts: list[tuple[str, str]]) -> None:
    once = anonymise_text(" ".join(f"{a} {b}" for a, b in parts))
    assert anonymise_text(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=_LETTERS, min_size=2, max_size=12), filler, filler)
def test_a_given_name_never_survives_as_a_word(name: str, before: str, after: str) -> None:
    out = anonymise_text(f"{before} {name.upper()} {after}", [name])
    assert not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", out, re.IGNORECASE)
