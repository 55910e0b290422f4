"""Find PII by pattern in every column (numbers too) and every header; drop or mask declared PII columns.

Scanning reads each cell's text as it was in the file (`cells`: every column read as str), so a card
number or a dash-less SSN in a numeric column is found as written. Patterns are linear (see patterns.py).
"""

from __future__ import annotations

import re

import pandas as pd

from mlsec.ingest.contract import DataContract, PiiKind
from mlsec.ingest.evidence import PiiFinding
from mlsec.ingest.patterns import KINDS, has
from mlsec.ingest.redact import column_label


def scan(series: pd.Series) -> dict[str, int]:
    """Count values that look like each kind of PII."""
    text = [str(v) for v in series.dropna()]
    counts: dict[str, int] = {}
    for kind in KINDS:
        n = sum(1 for v in text if has(v, kind))
        if n:
            counts[kind] = n
    return counts


def _mask_value(kind: PiiKind, value: str) -> str:
    if kind == "zip":
        return value[:3] + "XX"  # 3-digit ZIP prefix: the usual generalisation
    if kind == "email":
        return "***@" + value.split("@")[-1]
    if kind in {"ssn", "phone", "credit_card"}:
        return "***" + re.sub(r"\D", "", value)[-4:]
    return value[:1] + "***"


def undeclared_findings(cells: pd.DataFrame, contract: DataContract) -> list[PiiFinding]:
    """PII in any header, and in the values of any column not declared as PII to drop (a masked column
    is masked for its own kind only, so any pattern hit there is undeclared too)."""
    declared = contract.pii_columns
    findings: list[PiiFinding] = []
    for position, col in enumerate(cells.columns):
        label = column_label(str(col), position, contract.columns)
        findings += [PiiFinding(column=label, kind=kind, matches=1, location="header")
                     for kind in scan(pd.Series([str(col)]))]
        if col in declared and declared[col].action == "drop":
            continue
        findings += [PiiFinding(column=label, kind=kind, matches=n) for kind, n in scan(cells[col]).items()]
    return findings


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
