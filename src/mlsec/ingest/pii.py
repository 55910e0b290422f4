"""Find PII in every column (numbers too) and every header; drop, mask or tokenize declared PII columns.

Two recognizer sets look at each value and a hit by either counts:
- presidio-analyzer's pattern recognizers (e-mail with a TLD check, US SSN, phone numbers through
  Google's phonenumbers, credit cards with Luhn, IBAN with its checksum, IP addresses), each scored and
  raised by context: the column header is the context (a 9-digit number under "ssn" counts, under
  "account_id" it does not). Presidio runs on a blank spaCy pipeline (a tokenizer, no trained model:
  none can be downloaded here, and pattern recognizers need none).
- mlsec.ingest.patterns: linear-time patterns that also see what presidio leaves out (a dash-less SSN
  stored in a float column) and every cell, however long.
Scanning reads each cell's text as it was in the file (`cells`: every column read as str). Every row is
scanned, once per distinct value: a column is first cut down in C (pyarrow, RE2) to the cells that could
hold any of these kinds, those are counted by distinct value (pyarrow's hash), and each distinct value is
analysed once and counted as often as it occurs. A numeric column of a million rows
costs two vectorised passes, not a million recognizer calls; a value repeated 100,000 times is analysed
once. Nothing is sampled: a value that occurs once is analysed like any other. Masking likewise computes
each distinct value's mask once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlsec.ingest.contract import DataContract, PiiKind
from mlsec.ingest.errors import IngestFailure
from mlsec.ingest.evidence import PiiFinding
from mlsec.ingest.patterns import kinds_in
from mlsec.ingest.redact import column_label

PRESIDIO_KINDS = {"EMAIL_ADDRESS": "email", "US_SSN": "ssn", "PHONE_NUMBER": "phone", "CREDIT_CARD": "credit_card",
                  "IBAN_CODE": "iban", "IP_ADDRESS": "ip_address"}
# A bare match of a weak pattern scores 0.4 or less (ten digits as a phone number); a supporting header
# raises it by 0.35 (presidio's LemmaContextAwareEnhancer), so it counts only with its context.
MIN_SCORE = 0.5
# presidio's regexes are not linear-time: longer cells get the linear patterns only (cells over the
# contract's max_cell_chars are a deny anyway).
MAX_ANALYZED_CHARS = 4096
# Values that hold none of the kinds above: a plain number with at most 8 integer and 12 fraction
# digits (the shortest kind, a phone number, needs 10 digits; a card's 13 cannot fit in the fraction),
# or text with no digit, '@' (e-mail) or ':' (IPv6). One RE2 pass over the column finds them.
_CANNOT_HOLD_PII = r"^(?:-?\d{1,8}(?:\.\d{1,12})?|[^0-9@:]*)$"


@lru_cache(maxsize=1)
def _analyzer() -> Any:
    import spacy
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer, EmailRecognizer, IbanRecognizer, IpRecognizer, PhoneRecognizer, UsSsnRecognizer,
    )

    # The e-mail check's TLD list from the snapshot inside tldextract: a pipeline never fetches it.
    offline_tlds = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):  # type: ignore[misc]
        def validate_result(self, pattern_text: str) -> bool:
            return bool(offline_tlds(pattern_text).fqdn)

    nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank:en"}])
    # Set instead of load(), which would download a trained model; presidio types the field as None.
    nlp.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (OfflineEmailRecognizer(), UsSsnRecognizer(), PhoneRecognizer(), CreditCardRecognizer(),
                       IbanRecognizer(), IpRecognizer()):
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])


def _detector() -> str:
    from importlib.metadata import version

    return (f"presidio-analyzer {version('presidio-analyzer')} ({', '.join(sorted(PRESIDIO_KINDS.values()))}; "
            f"blank spaCy {version('spacy')}, header as context) + mlsec.ingest.patterns")


DETECTOR = _detector()


def presidio_kinds(text: str, header: str = "") -> set[str]:
    """The kinds presidio finds in text with header as context (score at least MIN_SCORE)."""
    if len(text) > MAX_ANALYZED_CHARS:
        return set()
    results = _analyzer().analyze(text=text, language="en", entities=list(PRESIDIO_KINDS),
                                  context=[header] if header else None, score_threshold=MIN_SCORE)
    return {PRESIDIO_KINDS[r.entity_type] for r in results}


def kinds(text: str, header: str = "") -> set[str]:
    return set(kinds_in(text)) | presidio_kinds(text, header)


def _candidates(series: pd.Series) -> pd.Series:
    """Distinct text -> how many rows hold it, for the values that could hold PII at all (nulls never do):
    one vectorised regex pass over the column's text, then the survivors counted by value, both in C."""
    try:
        arr = pa.array(series.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all str (a typed or masked column): its text
        arr = pa.array(series.astype(str).where(series.notna()).to_numpy(dtype=object), type=pa.large_string(),
                       from_pandas=True)
    keep = pc.invert(pc.match_substring_regex(arr, _CANNOT_HOLD_PII)).fill_null(False)
    counts = pc.value_counts(pc.filter(arr, keep))
    return pd.Series(counts.field("counts").to_numpy(zero_copy_only=False),
                     index=counts.field("values").to_pylist(), dtype="int64")


def scan(series: pd.Series, header: str = "") -> dict[str, int]:
    """Count values that look like each kind of PII (each distinct value is analysed once)."""
    counts: Counter[str] = Counter()
    for value, n in _candidates(series).items():
        for kind in kinds(str(value), header):
            counts[kind] += int(n)
    return dict(counts)


class Tokenizer:
    """tok_ + HMAC-SHA256(key, value), written in the letters a-p: the same value always gets the same
    token (joins survive), the value cannot be recovered or guessed without the key, and a token holds no
    digit, so no PII pattern can match it. The key comes from MLSEC_PII_TOKEN_KEY_FILE (a mounted Secret)
    or MLSEC_PII_TOKEN_KEY; it is never logged, recorded or written, only its id (an HMAC of a constant)."""

    MIN_KEY_BYTES = 32
    SHAPE = re.compile(r"tok_[a-p]{64}")
    _LETTERS = bytes.maketrans(b"0123456789abcdef", b"abcdefghijklmnop")

    def __init__(self, key: bytes) -> None:
        if len(key) < self.MIN_KEY_BYTES:
            raise IngestFailure("token_key_missing", f"the PII tokenization key is {len(key)} bytes; "
                                                     f"it must have at least {self.MIN_KEY_BYTES}")
        self._key = key
        self.key_id = hmac.new(key, b"mlsec pii token key id", hashlib.sha256).hexdigest()[:16]

    @classmethod
    def from_env(cls) -> Tokenizer:
        if path := os.environ.get("MLSEC_PII_TOKEN_KEY_FILE"):
            try:
                key = Path(path).read_bytes().rstrip(b"\r\n")
            except OSError as e:
                raise IngestFailure("token_key_missing", f"cannot read the PII tokenization key file "
                                                         f"(MLSEC_PII_TOKEN_KEY_FILE): {e.strerror}") from None
            return cls(key)
        if value := os.environ.get("MLSEC_PII_TOKEN_KEY"):
            return cls(value.encode())
        raise IngestFailure("token_key_missing", "the contract tokenizes PII columns and no key is configured: "
                                                 "set MLSEC_PII_TOKEN_KEY_FILE (a mounted Secret) or MLSEC_PII_TOKEN_KEY")

    def __repr__(self) -> str:  # never the key
        return f"Tokenizer(key_id={self.key_id})"

    def token(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest().encode()
        return "tok_" + digest.translate(self._LETTERS).decode()


def _mask(kind: PiiKind, values: pd.Series) -> pd.Series:
    """Each value's mask, computed once per distinct value (nulls included, as their text)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    masked = _mask_each(kind, pd.Series(uniques, dtype=object)).to_numpy(dtype=object)
    return pd.Series(masked[codes], index=values.index)


def _mask_each(kind: PiiKind, values: pd.Series) -> pd.Series:
    text = values.astype(str)
    if kind == "zip":
        return text.str[:3] + "XX"  # 3-digit ZIP prefix: the usual generalisation
    if kind == "email":
        return "***@" + text.str.rsplit("@", n=1).str[-1]
    if kind in {"ssn", "phone", "credit_card", "iban"}:
        return "***" + text.str.replace(r"\D", "", regex=True).str[-4:]
    return text.str[:1] + "***"


def undeclared_findings(cells: pd.DataFrame, contract: DataContract) -> list[PiiFinding]:
    """PII in any header, and in the values of any column not declared as PII to drop or tokenize (a
    masked column is masked for its own kind only, so any hit there is undeclared too)."""
    declared = contract.pii_columns
    findings: list[PiiFinding] = []
    for position, col in enumerate(cells.columns):
        label = column_label(str(col), position, contract.columns)
        findings += [PiiFinding(column=label, kind=kind, matches=1, location="header")
                     for kind in sorted(scan(pd.Series([str(col)])))]
        if col in declared and declared[col].action in ("drop", "tokenize"):
            continue
        findings += [PiiFinding(column=label, kind=kind, matches=n)
                     for kind, n in sorted(scan(cells[col], str(col)).items())]
    return findings


def protect(df: pd.DataFrame, contract: DataContract, tokenizer: Tokenizer | None = None) -> pd.DataFrame:
    """Drop, mask or tokenize every declared PII column; returns a new frame. Nulls stay null."""
    out = df.copy()
    for col, pii in contract.pii_columns.items():
        if col not in out.columns:
            continue
        if pii.action == "drop":
            out = out.drop(columns=[col])
        elif pii.action == "tokenize":
            if tokenizer is None:
                raise IngestFailure("token_key_missing", f"column {col} is to be tokenized and no key was loaded")
            tokens = {v: tokenizer.token(str(v)) for v in out[col].dropna().unique()}  # each value once
            out[col] = out[col].map(tokens)
        else:
            out[col] = _mask(pii.kind, out[col])
    return out


def raw_pii_remaining(protected: pd.DataFrame, contract: DataContract) -> bool:
    """True if a declared PII column survived unprotected: dropped ones present, masked ones still
    matching, tokenized ones holding anything but tokens."""
    for col, pii in contract.pii_columns.items():
        if col not in protected.columns:
            continue
        if pii.action == "drop":
            return True
        if pii.action == "tokenize":
            values = protected[col].dropna().astype(str)
            if not values.str.fullmatch(Tokenizer.SHAPE.pattern).all():
                return True
        elif scan(protected[col], col):
            return True
    return False
