"""Find PII by pattern in every text column, and drop or mask the columns the contract declares."""

from __future__ import annotations

import re

import pandas as pd

from mlsec.ingest.contract import DataContract, PiiKind
from mlsec.ingest.evidence import PiiFinding

# Patterns for raw values; masked values must no longer match them.
PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    "ssn": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "phone": re.compile(r"\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b"),
    "credit_card": re.compile(r"\b(?:\d[ -]?){13,19}\b"),
}


def _luhn(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(reversed(digits)))
    return len(digits) >= 13 and total % 10 == 0


def scan(series: pd.Series) -> dict[str, int]:
    """Count values that look like each kind of PII."""
    text = series.dropna().astype(str)
    counts: dict[str, int] = {}
    for kind, pattern in PATTERNS.items():
        hits = text[text.str.contains(pattern)]
        if kind == "credit_card":
            hits = hits[hits.map(lambda v: any(_luhn(m) for m in PATTERNS["credit_card"].findall(v)))]
        if len(hits):
            counts[kind] = int(len(hits))
    return counts


def _mask_value(kind: PiiKind, value: str) -> str:
    if kind == "zip":
        return value[:3] + "XX"  # 3-digit ZIP prefix: the usual generalisation
    if kind == "email":
        return "***@" + value.split("@")[-1]
    if kind in {"ssn", "phone", "credit_card"}:
        return "***" + re.sub(r"\D", "", value)[-4:]
    return value[:1] + "***"


def undeclared_findings(df: pd.DataFrame, contract: DataContract) -> list[PiiFinding]:
    declared = contract.pii_columns
    return [
        PiiFinding(column=col, kind=kind, matches=n)
        for col in df.columns
        if col not in declared and df[col].dtype == object
        for kind, n in scan(df[col]).items()
    ]


def protect(df: pd.DataFrame, contract: DataContract) -> pd.DataFrame:
    """Drop or mask every declared PII column; returns a new frame."""
    out = df.copy()
    for col, pii in contract.pii_columns.items():
        if col not in out.columns:
            continue
        if pii.action == "drop":
            out = out.drop(columns=[col])
        else:
            out[col] = out[col].astype(str).map(lambda v, k=pii.kind: _mask_value(k, v))
    return out


def raw_pii_remaining(protected: pd.DataFrame, contract: DataContract) -> bool:
    """True if a declared PII column survived unprotected: dropped ones present, masked ones still matching."""
    for col, pii in contract.pii_columns.items():
        if col not in protected.columns:
            continue
        if pii.action == "drop" or scan(protected[col]):
            return True
    return False
