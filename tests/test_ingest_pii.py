"""PII detection on presidio's maintained recognizers (issue 12 item 3): checksums, context from the column
header, no network, and the linear-time patterns still beside them."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlsec.config import contract_path, sample_dataset
from mlsec.ingest import pii, stage
from mlsec.ingest.contract import load_contract

IBANS = ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"]
BAD_IBAN = "GB82 WEST 1234 5698 7654 33"  # one digit off: the mod-97 check fails
PHONES = ["2125550143", "4155552671", "3125550199"]  # ten digits, no separators


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSEC_DATA_DIRS", str(tmp_path))


def test_iban_is_found_by_its_checksum() -> None:
    assert pii.scan(pd.Series([*IBANS, BAD_IBAN, "no iban here"]), "notes") == {"iban": 2}
    assert pii.presidio_kinds(IBANS[0]) == {"iban"}
    assert pii.presidio_kinds(BAD_IBAN) == set()


def test_the_header_is_context() -> None:
    """Ten bare digits are a phone number under a phone header, and nothing under another: the same values,
    only the context differs (presidio raises a weak match with a supporting context word)."""
    values = pd.Series(PHONES * 10)
    assert pii.scan(values, "customer_phone") == {"phone": 30}
    assert pii.scan(values, "order_ref") == {}


def test_undeclared_pii_found_only_by_presidio_denies_the_dataset(tmp_path: Path) -> None:
    df = pd.read_csv(sample_dataset(), dtype=str, keep_default_na=False)
    df = df.assign(payout_account=[IBANS[i % 2] for i in range(len(df))], mobile=PHONES[0])
    path = tmp_path / "x.csv"
    df.to_csv(path, index=False)
    result = stage.run(str(path), contract_path(), tmp_path / "w")
    found = {(f.column, f.kind, f.matches) for f in result.evidence.pii.undeclared_findings}
    assert found == {("#15 (header not in contract)", "iban", len(df)),
                     ("#16 (header not in contract)", "phone", len(df))}
    assert result.dataset is None and result.evidence.pii.detector.startswith("presidio-analyzer 2.")


def test_the_recognizers_never_reach_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """presidio's e-mail check would fetch the Public Suffix List; here it reads tldextract's snapshot."""
    calls: list[Any] = []

    def no_network(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert pii.presidio_kinds("write to ada@example.co.uk") == {"email"}
    assert pii.presidio_kinds("ada@example.invalidtld") == set()  # the TLD check still runs
    assert calls == []


def test_plain_numbers_and_plain_text_never_reach_the_recognizers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectorised cut: a float or int column and letters-only text are not analysed value by value."""
    seen: list[str] = []
    monkeypatch.setattr(pii, "kinds", lambda text, header="": seen.append(text) or set())
    pii.scan(pd.Series(["52341.23", "-3.5", "12345678", "0.123456789012", "Ada Lovelace", "", "M"]), "x")
    assert seen == []
    pii.scan(pd.Series(["123456789", "0.1234567890123", "a@b.co", "fe80::1"]), "x")
    assert sorted(seen) == ["0.1234567890123", "123456789", "a@b.co", "fe80::1"]


def test_the_linear_patterns_still_count() -> None:
    """A dash-less SSN in a float column: presidio's own SSN recognizer calls 9 bare digits too weak."""
    assert "ssn" not in pii.presidio_kinds("536221234.0", "amount")
    assert pii.scan(pd.Series(["536221234.0"]), "amount") == {"ssn": 1}


def test_masked_and_tokenized_columns_are_scanned_for_their_kind(tmp_path: Path) -> None:
    contract = load_contract(contract_path())
    df = pd.read_csv(sample_dataset(), dtype=str, keep_default_na=False).assign(zip="ada@example.com")
    findings = pii.undeclared_findings(df, contract)
    assert [(f.column, f.kind) for f in findings] == [("zip", "email")]  # a masked column is not a hiding place
