"""PII patterns that run in linear time, and the redactor every data-derived string passes through.

Every pattern starts with a literal or a digit, so the regex engine skips ahead in C to the next
candidate instead of trying each offset; every quantifier has a ceiling; context that would need a
variable-width look-behind (an email's local part) is checked by hand over at most 65 characters.
So a 1 MB cell costs a few passes, never one pass per character.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_LABEL = r"[A-Za-z0-9-]{1,63}"
_EMAIL_AT = re.compile(rf"@{_LABEL}(?:\.{_LABEL}){{0,8}}\.[A-Za-z]{{2,24}}(?![A-Za-z])")

# kind -> patterns; "\d(?<!\d\d)" is "a digit not preceded by a digit", written so the match starts with \d.
PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    "ssn": (
        re.compile(r"\d(?<!\d\d)\d{2}-\d{2}-\d{4}(?!\d)"),
        # Without dashes: nine digits, not part of a longer number or a decimal fraction (123456789.0 from
        # a float column still counts); validity (not 000/666/9xx, group 00, serial 0000) checked below.
        re.compile(r"\d(?<![\d.]\d)\d{8}(?:\.0{1,8})?(?!\d|\.\d)"),
    ),
    "phone": (
        re.compile(r"\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}(?!\d)"),
        re.compile(r"\d(?<!\d\d)\d{2}[ .-]\d{3}[ .-]\d{4}(?!\d)"),
    ),
    # 13-19 digits, written as one run or in the usual groups (4-4-4-4[-1..3], Amex 4-6-5).
    "credit_card": (re.compile(r"\d(?<![\d-]\d)(?:\d{12,18}|\d{3}(?:[ -]\d{4}){3}(?:[ -]?\d{1,3})?|\d{3}[ -]\d{6}[ -]\d{5})(?!\d)"),),
}
KINDS = ("email", *PATTERNS)
# A pattern runs only if text holds one of these characters (a C-speed `in` test): a cell of a million
# digits is not searched for dashed SSNs or phone numbers at all.
_NEEDS: dict[re.Pattern[str], str] = {
    PATTERNS["ssn"][0]: "-", PATTERNS["phone"][0]: "(", PATTERNS["phone"][1]: " .-",
}
_DIGIT = re.compile(r"\d")


def luhn(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(reversed(digits)))
    return 13 <= len(digits) <= 19 and total % 10 == 0


def _valid_ssn(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:9]
    return area not in {"000", "666"} and area[0] != "9" and group != "00" and serial != "0000"


def _emails(text: str) -> Iterator[tuple[int, int]]:
    for m in _EMAIL_AT.finditer(text):
        at = start = m.start()
        while start > 0 and at - start <= 64 and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        if 0 < at - start <= 64:  # a local part of 1-64 characters, the whole run
            yield start, m.end()


def find(text: str, kind: str, *, checked: bool = True) -> Iterator[tuple[int, int]]:
    """Spans of kind in text; checked=False also yields card/SSN-shaped numbers that fail their checks."""
    if kind == "email":
        if "@" in text:
            yield from _emails(text)
        return
    if not _DIGIT.search(text):
        return
    for i, pattern in enumerate(PATTERNS[kind]):
        if pattern in _NEEDS and not any(c in text for c in _NEEDS[pattern]):
            continue
        for m in pattern.finditer(text):
            if checked and kind == "credit_card" and not luhn(m.group()):
                continue
            if checked and kind == "ssn" and i == 1 and not _valid_ssn(m.group()):
                continue
            yield m.span()


def has(text: str, kind: str) -> bool:
    return next(find(text, kind), None) is not None


def kinds_in(text: str) -> list[str]:
    """The kinds of PII in text (card numbers only with a valid Luhn checksum)."""
    return [kind for kind in KINDS if has(text, kind)]


def redact(text: str) -> str:
    """text with every PII-shaped substring (card- and SSN-like numbers even unchecked) replaced by <kind>."""
    spans = sorted((s, e, kind) for kind in KINDS for s, e in find(text, kind, checked=False))
    out, pos = [], 0
    for s, e, kind in spans:
        if s >= pos:
            out += [text[pos:s], f"<{kind}>"]
        pos = max(pos, e)  # an overlapping span (a phone running into a card) is redacted with the first
    return "".join([*out, text[pos:]])
