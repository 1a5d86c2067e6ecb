"""Anonymisation of chat text and metadata: pure functions, no I/O.

:func:`anonymise_text` replaces what identifies a person in free text with placeholders, in this
order (each later rule sees the placeholders of the earlier ones, never the values):

1. **Emails** (``[EMAIL]``): a local part, ``@`` and a dotted domain.
2. **Card numbers** (``[CARD]``): the Luhn-checked rule of :mod:`ingest.redact` (security codes
   next to card words keep that module's placeholder). Ingest already removed cards; this
   catches any the chat platform let through and turns the ingest placeholder into ``[CARD]``.
3. **UK postcodes** (``[POSTCODE]``): full postcodes in any case and spacing (``sw1a1aa``).
4. **Phone numbers** (``[PHONE]``): every number :mod:`phonenumbers` finds valid (UK region
   default, so national and international notations), and any other run of 9 or more digits
   joined by spaces, dashes, dots or brackets (7 after ``+``; numbers typed side by side go as
   one): fictional and unallocated ranges (``07700 900123``) and account or reference numbers,
   which identify a person as surely as a phone number does. Dates and times are left alone.
5. **Names** (``[NAME]``): each given name, whole words, case-insensitive, and each of its
   words of two letters or more (``Ann`` of ``Ann Smith`` on its own), never inside a
   placeholder.

When in doubt the rules remove too much: a figure or a word wrongly replaced costs less than a
person left identifiable. Known limits: local numbers typed without their area code (7 or 8
digits), addresses other than postcodes, and names nobody told us (a neighbour mentioned by the
customer) survive.
"""

import re
from collections.abc import Callable, Iterable

import phonenumbers

from ingest.metadata import normalise_postcode
from ingest.redact import CARD_PLACEHOLDER, redact_text

EMAIL = "[EMAIL]"
CARD = "[CARD]"
POSTCODE = "[POSTCODE]"
PHONE = "[PHONE]"
NAME = "[NAME]"

_EMAIL = re.compile(r"[^\s@<>()\[\],;:\"]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_POSTCODE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{1,2}[0-9][A-Za-z0-9]?[ \t]*[0-9][A-Za-z]{2}(?![A-Za-z0-9])")
# Digits with the separators people type in numbers; counted, then judged by length.
_DIGIT_RUN = re.compile(r"(?<![0-9])\+?\(?[0-9](?:[ \t.()-]{0,3}[0-9])+\)?(?![0-9])")
# Dates are left alone (and split a run of digits): ``2026-11-23``, ``23.11.2026``.
_DATE = re.compile(r"(?<![0-9])(?:[0-9]{4}[-./][0-9]{1,2}[-./][0-9]{1,2}"
                   r"|[0-9]{1,2}[-./][0-9]{1,2}[-./](?:[0-9]{4}|[0-9]{2}))(?![0-9])")
MIN_NUMBER_DIGITS = 9
MIN_PLUS_DIGITS = 7  # after "+", a shorter run is still a phone number
MIN_NAME_PART = 2
_PLACEHOLDER = re.compile(r"\[[A-Za-z ]+\]")


def anonymise_text(text: str, names: Iterable[str] = ()) -> str:
    """``text`` with emails, card numbers, postcodes, phone numbers and ``names`` replaced by
    placeholders (see the module docstring)."""
    text = _EMAIL.sub(EMAIL, text)
    text, _ = redact_text(text)
    text = text.replace(CARD_PLACEHOLDER, CARD)
    text = _POSTCODE.sub(POSTCODE, text)
    text = _replace_phones(text)
    return _replace_names(text, names)


def postcode_district(value: str | None) -> str | None:
    """The outward code (``SW1A`` of ``SW1A 1AA``): a district of some thousands of addresses,
    kept for statistics. ``None`` for no postcode or something that is not one."""
    if not value:
        return None
    full = normalise_postcode(value)
    return full.split(" ", 1)[0] if full else None


def name_patterns(names: Iterable[str]) -> list[str]:
    """The strings replaced for ``names``: each name and each of its words of two letters or
    more, lower-cased and case-folded, longest first (so a full name goes as one placeholder)."""
    found: set[str] = set()
    for given in names:
        name = " ".join(given.split())
        if not name:
            continue
        for form in (name, *name.split(" ")):
            if form == name or sum(ch.isalpha() for ch in form) >= MIN_NAME_PART:
                # Both forms: a case-insensitive match of "ss" does not find "ß".
                found.update({form.lower(), form.casefold()})
    return sorted(found, key=lambda s: (-len(s), s))


def _replace_phones(text: str) -> str:
    spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(
        text, "GB", leniency=phonenumbers.Leniency.VALID)]
    text = _replace_spans(text, spans, PHONE)
    return _outside(_DATE, text, lambda part: _DIGIT_RUN.sub(_phone_or_keep, part))


def _phone_or_keep(match: re.Match[str]) -> str:
    run = match.group()
    digits = sum(ch.isdigit() for ch in run)
    least = MIN_PLUS_DIGITS if run.startswith("+") else MIN_NUMBER_DIGITS
    if digits < least:
        return run
    # Brackets the run did not open or close stay in the text around the placeholder.
    lead = "(" if run.startswith("(") and ")" not in run else ""
    trail = ")" if run.endswith(")") and "(" not in run else ""
    return f"{lead}{PHONE}{trail}"


def _replace_spans(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    pieces: list[str] = []
    done = 0
    for start, end in sorted(spans):
        if start < done:
            continue
        pieces += [text[done:start], placeholder]
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


def _replace_names(text: str, names: Iterable[str]) -> str:
    patterns = name_patterns(names)
    if not patterns:
        return text
    regex = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in patterns) + r")(?!\w)",
                       re.IGNORECASE)
    return _outside(_PLACEHOLDER, text, lambda part: regex.sub(NAME, part))


def _outside(pattern: re.Pattern[str], text: str, change: Callable[[str], str]) -> str:
    """Apply ``change`` to the text between matches of ``pattern``, leaving those whole."""
    pieces: list[str] = []
    done = 0
    for match in pattern.finditer(text):
        pieces += [change(text[done:match.start()]), match.group()]
        done = match.end()
    pieces.append(change(text[done:]))
    return "".join(pieces)
