"""Removal of payment card data from transcript text (PCI DSS: no card numbers or security codes
may be stored, encrypted or not).

Two rules, applied in this order:

1. **Card numbers.** A *digit run* is a maximal stretch of ASCII digit *groups* joined by a single
   space or dash (``4111 1111 1111 1111``, ``4111-1111-1111-1111``, ``4111111111111111``). Every
   *window* of whole, consecutive groups of a run holding 13 to 19 digits that passes the Luhn
   check is a card. A group is never split: an unbroken 20-digit reference holds Luhn-valid
   16-digit stretches by chance, but nobody types a card glued to other digits, so only whole
   groups are tried. Windows that share a group are merged and replaced by one placeholder (one
   card counted); windows that merely sit side by side (two cards separated by a space) are two
   cards. A group glued to a longer alphanumeric token (``REF4111...``, ``AB-4111``) is not part
   of any window, but the rest of its run still is. When in doubt the rule removes too much (a
   phone number typed straight before a card may go with it): a leaked card is the worse error.
2. **Security codes.** A 3-4 digit number standing on its own (not part of a digit run, a time,
   a date, a decimal or a token) is removed when a card-security word (``cvv``, ``security code``,
   ``3 digits on the back``...) is within 40 characters before it, or within 20 characters after
   it, in the same sentence (no ``.``, ``!``, ``?`` or line break between them).

Redaction is idempotent: the placeholders hold no digits, and their own words are ignored when
looking for security words.

Known limits: a card split across lines or across separate chat messages is not seen as one
number; digits typed with other separators (dots, double spaces) are not joined.
"""

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

CARD_PLACEHOLDER = "[card number removed]"
SECURITY_CODE_PLACEHOLDER = "[security code removed]"

MIN_CARD_DIGITS = 13
MAX_CARD_DIGITS = 19
# How far (in characters) a security code may sit after, or before, a card-security word.
WORDS_BEFORE_CODE_WINDOW = 40
CODE_BEFORE_WORDS_WINDOW = 20


@dataclass(frozen=True, slots=True)
class Redactions:
    """How many card numbers and security codes were removed."""

    cards: int = 0
    security_codes: int = 0

    @property
    def total(self) -> int:
        return self.cards + self.security_codes

    def __add__(self, other: "Redactions") -> "Redactions":
        return Redactions(
            cards=self.cards + other.cards,
            security_codes=self.security_codes + other.security_codes,
        )


NO_REDACTIONS = Redactions()

_DIGIT_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_DIGIT_GROUP = re.compile(r"[0-9]+")
_WORD_CHAR = re.compile(r"\w")

# A 3-4 digit number on its own: not glued to a word (``A123``, ``AB-123``) and not part of a
# longer number (``1 234``, ``10:30``, ``12/2026``, ``1.234``, ``020-7946``).
_SHORT_NUMBER = re.compile(
    r"(?<!\w)(?<!\w-)(?<![0-9][ .,/:])[0-9]{3,4}(?!\w)(?!-\w)(?![ .,/:][0-9])"
)
_SECURITY_WORDS = re.compile(
    r"""\b(?:
        cvv2? | cvc2? | cv2 | csc
      | security \s+ (?:code|number|digits?)s?
      | card \s+ verification
      | digits? \s+ on \s+ the \s+ back
      | back \s+ of \s+ (?:the|your|my|a) \s+ card
    )\b""",
    re.IGNORECASE | re.VERBOSE,
)
_SENTENCE_END = re.compile(r"[.!?\n]")
_PLACEHOLDERS = re.compile(
    "|".join(re.escape(p) for p in (CARD_PLACEHOLDER, SECURITY_CODE_PLACEHOLDER))
)


def redact_text(text: str) -> tuple[str, Redactions]:
    """Remove card numbers, then security codes, from ``text``; say how many of each."""
    text, cards = _redact_cards(text)
    text, codes = _redact_security_codes(text)
    return text, Redactions(cards=cards, security_codes=codes)


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check that every payment card number passes."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        total += _luhn_value(int(char), position)
    return total % 10 == 0


def _luhn_value(digit: int, position_from_right: int) -> int:
    if position_from_right % 2 == 0:
        return digit
    doubled = digit * 2
    return doubled - 9 if doubled > 9 else doubled


def _replace_spans(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    """``text`` with each of the sorted, disjoint ``spans`` replaced by ``placeholder``."""
    pieces: list[str] = []
    done = 0
    for start, end in spans:
        pieces.append(text[done:start])
        pieces.append(placeholder)
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


# Card numbers


def _redact_cards(text: str) -> tuple[str, int]:
    spans: list[tuple[int, int]] = []
    for run in _DIGIT_RUN.finditer(text):
        spans.extend(_cards_in_run(text, run.start(), run.end()))
    return _replace_spans(text, spans, CARD_PLACEHOLDER), len(spans)


def _cards_in_run(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The character spans of the cards in the digit run ``text[start:end]``."""
    groups = [(g.start(), g.end()) for g in _DIGIT_GROUP.finditer(text, start, end)]
    first, last = 0, len(groups) - 1
    if _glued_before(text, start):
        first += 1
    if _glued_after(text, end):
        last -= 1
    merged: list[list[int]] = []
    for window_first, window_last in sorted(_card_windows(text, groups, first, last)):
        if merged and window_first <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], window_last)
        else:
            merged.append([window_first, window_last])
    return [(groups[a][0], groups[b][1]) for a, b in merged]


def _card_windows(
    text: str, groups: list[tuple[int, int]], first: int, last: int
) -> list[tuple[int, int]]:
    """Every (first group, last group) window in ``groups[first:last + 1]`` that is a card.

    Windows are grown leftwards from each last group, so each new digit's position from the
    right (which is what Luhn weighs) is known and the check sum is kept as it grows.
    """
    windows: list[tuple[int, int]] = []
    for window_last in range(first, last + 1):
        total = 0
        count = 0
        for window_first in range(window_last, first - 1, -1):
            group_start, group_end = groups[window_first]
            for index in range(group_end - 1, group_start - 1, -1):
                total += _luhn_value(ord(text[index]) - 48, count)
                count += 1
            if count > MAX_CARD_DIGITS:
                break
            if count >= MIN_CARD_DIGITS and total % 10 == 0:
                windows.append((window_first, window_last))
    return windows


def _is_word_char(char: str) -> bool:
    return _WORD_CHAR.match(char) is not None


def _glued_before(text: str, start: int) -> bool:
    """Whether the digits at ``start`` continue a token such as ``REF123`` or ``AB-123``."""
    if start == 0:
        return False
    before = text[start - 1]
    if _is_word_char(before):
        return True
    return before == "-" and start >= 2 and _is_word_char(text[start - 2])


def _glued_after(text: str, end: int) -> bool:
    if end >= len(text):
        return False
    after = text[end]
    if _is_word_char(after):
        return True
    return after == "-" and end + 1 < len(text) and _is_word_char(text[end + 1])


# Security codes


def _redact_security_codes(text: str) -> tuple[str, int]:
    # Mask the placeholders so that "[security code removed]" is not itself a security word.
    masked = _PLACEHOLDERS.sub(lambda m: "\0" * len(m.group()), text)
    words = [(m.start(), m.end()) for m in _SECURITY_WORDS.finditer(masked)]
    if not words:
        return text, 0
    word_starts = [start for start, _ in words]
    word_ends = [end for _, end in words]
    spans = [
        (number.start(), number.end())
        for number in _SHORT_NUMBER.finditer(text)
        if _near_security_word(text, number.start(), number.end(), word_starts, word_ends)
    ]
    return _replace_spans(text, spans, SECURITY_CODE_PLACEHOLDER), len(spans)


def _near_security_word(
    text: str, start: int, end: int, word_starts: list[int], word_ends: list[int]
) -> bool:
    """Whether the nearest security word before or after ``text[start:end]`` is close enough.

    Security words do not overlap, so their ends are sorted like their starts and the nearest
    one on each side is found by bisection (transcripts can be long and full of numbers).
    """
    before = bisect_right(word_ends, start) - 1
    if before >= 0:
        gap = text[word_ends[before] : start]
        if len(gap) <= WORDS_BEFORE_CODE_WINDOW and not _SENTENCE_END.search(gap):
            return True
    after = bisect_left(word_starts, end)
    if after < len(word_starts):
        gap = text[end : word_starts[after]]
        if len(gap) <= CODE_BEFORE_WORDS_WINDOW and not _SENTENCE_END.search(gap):
            return True
    return False
