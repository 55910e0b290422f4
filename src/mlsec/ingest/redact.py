"""Safe descriptions of data-derived strings: what a reason, an evidence document or a log may carry.

Cell text and column headers that the contract does not name are never echoed: a header becomes its
position, a text value its shape (letters as a/A, digits as 9, runs collapsed) or the PII kind it
matches, and only short numbers that match no PII pattern are shown as they are.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from mlsec.ingest.patterns import kinds_in, redact

_SHORT_NUMBER = re.compile(r"-?\d{1,8}(?:\.\d{1,6})?")
_QUOTED = re.compile(r"'[^'\n]{0,400}'|\"[^\"\n]{0,400}\"")
_MAX_MESSAGE = 300


def shape(text: str, limit: int = 12) -> str:
    """'Ada Lovelace' -> 'Aa Aa', 'x9@y.org' -> 'a9@a.a': the kind of text, not the text."""
    out: list[str] = []
    for c in text:
        s = "9" if c.isdigit() else ("A" if c.isupper() else "a") if c.isalpha() else ("_" if c.isspace() else "?")
        if s == "_":
            s = " "
        elif s == "?":
            s = c if c in "@.-_/:,;()+" else "?"
        if not out or out[-1] != s or s not in "aA9":
            out.append(s)
    joined = "".join(out)
    return joined if len(joined) <= limit else joined[:limit] + "…"


def describe_value(value: object) -> str:
    """A sample value as a reason may show it."""
    if isinstance(value, bool) or value is None:
        return str(value)
    text = str(value)
    if kinds := kinds_in(text):
        return "<" + "+".join(kinds) + ">"
    if isinstance(value, int | float) or _SHORT_NUMBER.fullmatch(text):
        return text if _SHORT_NUMBER.fullmatch(text) else f"<number, {sum(c.isdigit() for c in text)} digits>"
    return f"<text {shape(text)!r}, {len(text)} chars>"


def column_label(name: str, position: int, known: Collection[str]) -> str:
    """A header the contract names is shown; any other is only its 1-based position."""
    return name if name in known else f"#{position + 1} (header not in contract)"


def safe_message(text: str) -> str:
    """An exception's message with quoted parts (often the offending value) and PII patterns removed."""
    text = redact(_QUOTED.sub("'…'", text))
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"
