"""Card numbers and security codes are removed from transcript text, and nothing else is."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.redact import (
    CARD_PLACEHOLDER,
    SECURITY_CODE_PLACEHOLDER,
    Redactions,
    luhn_valid,
    redact_text,
)

CARD = CARD_PLACEHOLDER
CODE = SECURITY_CODE_PLACEHOLDER


def test_redactions_add_up() -> None:
    total = Redactions(cards=1, security_codes=2) + Redactions(cards=3)
    assert total == Redactions(cards=4, security_codes=2)
    assert total.total == 6
    assert Redactions().total == 0


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "3782 822463 10005",  # Amex, 15 digits
        "5500-0000-0000-0004",
        "4222222222222",  # 13 digits
        "6011 0009 9013 9424",
        "4111 1111-1111 1111",  # mixed separators
    ],
)
def test_card_numbers_are_removed(number: str) -> None:
    text, counts = redact_text(f"My card is {number}, thanks.")
    assert text == f"My card is {CARD}, thanks."
    assert counts == Redactions(cards=1)


@pytest.mark.parametrize(
    "text",
    [
        "Call me on 07700 900123 or 020 7946 0000.",
        "Call me on 07700900123 please",
        "+44 20 7946 0958",
        "Order ref 1234 5678 9012 3456 (fails Luhn)",
        "Your case number is 20261123-0001-4417",
        "Born 23-11-1980, moved 01-02-2003",
        "A 20-digit reference 12345678901234567890 and a 12-digit one 411111111111",
    ],
)
def test_numbers_that_are_not_cards_are_left_alone(text: str) -> None:
    assert redact_text(text) == (text, Redactions())


@pytest.mark.parametrize(
    "text",
    [
        "REF4111111111111111",
        "4111111111111111X",
        "ref_4111111111111111",
        "AB-4111-1111-1111-1111",
        "4111-1111-1111-1111-AB",
    ],
)
def test_digits_inside_a_longer_token_are_not_a_card(text: str) -> None:
    assert redact_text(text) == (text, Redactions())


def test_a_token_glued_to_the_first_group_does_not_hide_the_card_after_it() -> None:
    text, counts = redact_text("REF123 4111 1111 1111 1111")
    assert (text, counts) == (f"REF123 {CARD}", Redactions(cards=1))


def test_an_unbroken_run_is_never_split_to_find_a_card() -> None:
    # A Luhn-valid 16-digit card glued to more digits is one 20-digit number: not a card.
    assert luhn_valid("4111111111111111")
    text = "Reference 41111111111111119999"
    assert redact_text(text) == (text, Redactions())


def test_only_the_luhn_valid_groups_of_a_longer_spaced_run_go() -> None:
    # Windows of whole groups are tried; here only the first four groups pass Luhn.
    assert not luhn_valid("41111111111111119")
    assert not luhn_valid("1111111111119")
    text, counts = redact_text("card 4111 1111 1111 1111 9 is it")
    assert (text, counts) == (f"card {CARD} 9 is it", Redactions(cards=1))


def test_overlapping_valid_windows_are_one_card() -> None:
    # Both "4111 1111 1111 1111" and "1111 1111 1111 2" pass Luhn; they share three groups, so
    # the whole run goes, counted once.
    assert luhn_valid("1111111111112")
    text, counts = redact_text("card 4111 1111 1111 1111 2 ok")
    assert (text, counts) == (f"card {CARD} ok", Redactions(cards=1))


def test_two_cards_side_by_side_are_two_cards() -> None:
    text, counts = redact_text("4111 1111 1111 1111 5500 0000 0000 0004")
    assert (text, counts) == (f"{CARD} {CARD}", Redactions(cards=2))


def test_several_cards_in_one_text() -> None:
    text, counts = redact_text(
        "First 4111111111111111; no wait, 5500-0000-0000-0004. Phone 07700 900123."
    )
    assert text == f"First {CARD}; no wait, {CARD}. Phone 07700 900123."
    assert counts == Redactions(cards=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my cvv is 123", f"my cvv is {CODE}"),
        ("CVC: 4567", f"CVC: {CODE}"),
        ("the CV2 number is 987", f"the CV2 number is {CODE}"),
        ("Security code 321 please", f"Security code {CODE} please"),
        ("the security number on it is 555", f"the security number on it is {CODE}"),
        ("the 3 digits on the back are 246", f"the 3 digits on the back are {CODE}"),
        ("the card verification value, 135", f"the card verification value, {CODE}"),
        ("on the back of the card it says 802", f"on the back of the card it says {CODE}"),
        ("123 is the cvv", f"{CODE} is the cvv"),
        (
            "card 4111 1111 1111 1111 exp 12/27 cvv 123",
            f"card {CARD} exp 12/27 cvv {CODE}",
        ),
    ],
)
def test_security_codes_near_card_words_are_removed(text: str, expected: str) -> None:
    redacted, counts = redact_text(text)
    assert redacted == expected
    assert counts.security_codes == 1


@pytest.mark.parametrize(
    "text",
    [
        # Far from the words (more than 40 characters after them).
        "I gave the cvv earlier but the meeting room on the fourth floor is 123",
        # A different sentence.
        "I do not know my security code. My flat is 123.",
        "What is the cvv?\nFlat 123",
        # No card words at all: a year, a time, a house number.
        "Can I book an appointment for 12 March 2026 at 1030 at 221 Baker Street?",
        # Part of a longer number, time or date even when the words are close.
        "cvv? my phone is 020 7946 0000",
        "security code sent at 10:30 on 12/2026",
        "cvv 1.234",
        "cvv 12345",
        "cvv A123",
    ],
)
def test_numbers_away_from_card_words_are_left_alone(text: str) -> None:
    assert redact_text(text) == (text, Redactions())


def test_placeholder_words_do_not_count_as_card_words() -> None:
    text = f"flat {CODE} 456 and {CARD} 789"
    assert redact_text(text) == (text, Redactions())


def test_long_text_is_redacted_quickly() -> None:
    # Bounded work per digit: a 100,000-character run of single digits and many card words.
    assert redact_text("1 " * 50_000)[1] == Redactions()
    text, counts = redact_text("cvv 123 " * 10_000)
    assert counts.security_codes == 10_000
    assert text == f"cvv {CODE} " * 10_000


# Properties

# Any characters that can be stored as UTF-8, but ASCII digits.
_NO_ASCII_DIGITS = st.characters(codec="utf-8", exclude_characters="0123456789")


def _luhn_check_digit(body: str) -> str:
    for digit in "0123456789":
        if luhn_valid(body + digit):
            return digit
    raise AssertionError("unreachable")


@st.composite
def cards(draw: st.DrawFn) -> str:
    """A Luhn-valid 13-19 digit number written with random single separators."""
    length = draw(st.integers(min_value=13, max_value=19))
    body = draw(st.text(alphabet="0123456789", min_size=length - 1, max_size=length - 1))
    digits = body + _luhn_check_digit(body)
    separators = draw(st.lists(st.sampled_from(["", " ", "-"]), min_size=length - 1,
                               max_size=length - 1))
    return digits[0] + "".join(s + d for s, d in zip(separators, digits[1:], strict=True))


_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")


def _luhn_windows(text: str) -> list[str]:
    """Brute force: every window of whole digit groups in ``text`` that looks like a card."""
    found = []
    for run in _RUN.findall(text):
        groups = re.split("[ -]", run)
        for first in range(len(groups)):
            for last in range(first, len(groups)):
                digits = "".join(groups[first : last + 1])
                if 13 <= len(digits) <= 19 and luhn_valid(digits):
                    found.append(digits)
    return found


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(_NO_ASCII_DIGITS), card=cards(), suffix=st.text(_NO_ASCII_DIGITS))
def test_any_card_in_any_text_is_removed(prefix: str, card: str, suffix: str) -> None:
    text, counts = redact_text(f"{prefix} {card} {suffix}")
    assert counts == Redactions(cards=1)
    assert not re.search("[0-9]", text)
    assert CARD in text


@given(st.text(_NO_ASCII_DIGITS))
def test_text_without_digits_is_unchanged(text: str) -> None:
    assert redact_text(text) == (text, Redactions())


_FRAGMENTS = st.one_of(
    cards(),
    st.text(_NO_ASCII_DIGITS, max_size=10),
    st.text("0123456789", min_size=1, max_size=6),
    st.sampled_from(["cvv", "CVC2:", "security code", "3 digits on the back", "back of my card",
                     "-", "/", ":", ".", "2026", "07700 900123", CARD, CODE]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_FRAGMENTS, st.sampled_from([" ", "", "-", ", ", ". ", "\n"]))))
def test_redaction_is_idempotent_and_leaves_no_card(parts: list[tuple[str, str]]) -> None:
    text = "".join(fragment + joint for fragment, joint in parts)
    once, _ = redact_text(text)
    assert redact_text(once) == (once, Redactions())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_FRAGMENTS, st.sampled_from([" ", ", ", ". ", "\n"]))))
def test_no_card_shaped_number_survives(parts: list[tuple[str, str]]) -> None:
    # Fragments are joined by separators that never glue digits to letters, so every
    # Luhn-valid run of whole groups, card or not, must be gone.
    text = "".join(fragment + joint for fragment, joint in parts)
    redacted, counts = redact_text(text)
    assert _luhn_windows(redacted) == []
    assert redacted.count(CARD) == text.count(CARD) + counts.cards
