"""Ingest: contract validation with great-expectations, PII protection, fingerprints, poisoning screen."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlsec.config import contract_path, sample_dataset
from mlsec.digest import sha256_file
from mlsec.ingest import sample, stage
from mlsec.ingest.contract import DataContract, load_contract
from mlsec.ingest.pii import protect, raw_pii_remaining, scan, undeclared_findings

from conftest import Trained


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's files are its data directory (sources are allow-listed: mlsec.ingest.source)."""
    monkeypatch.setenv("MLSEC_DATA_DIRS", str(tmp_path))


def test_bundled_sample_is_reproducible(tmp_path: Path) -> None:
    assert sha256_file(sample.write(tmp_path / "s.csv")) == sha256_file(sample_dataset())


def test_sample_passes_contract_and_drops_pii(trained: Trained) -> None:
    ev = trained.data_evidence
    assert ev.contract.passed, ev.contract.failures
    assert ev.rows == 4000 and not ev.pii.raw_pii_remaining and ev.pii.undeclared_findings == []
    df = pd.read_csv(trained.dataset, dtype={"zip": str})
    assert not {"name", "email", "ssn", "phone"} & set(df.columns)
    assert df["zip"].str.fullmatch(r"\d{3}XX").all()
    assert ev.subject.digest == sha256_file(trained.dataset)
    assert ev.provenance.source_sha256 == sha256_file(sample_dataset())


def _bad(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    df = pd.read_csv(sample_dataset(), dtype={c: str for c in ("name", "email", "ssn", "phone", "zip", "gender")})
    mutate(df)
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda df: df.__setitem__("age", df["age"].where(df.index != 3, 7)), "age: expect_column_values_to_be_between"),
    (lambda df: df.drop(columns=["income"], inplace=True), "missing columns ['income']"),
    (lambda df: df.__setitem__("default", df["default"].where(df.index != 0, 5)), "default: expect_column_values_to_be_in_set"),
    (lambda df: df.__setitem__("customer_id", 1), "customer_id: expect_column_values_to_be_unique"),
    (lambda df: df.__setitem__("income", df["income"].where(df.index != 9, None)), "income: expect_column_values_to_not_be_null"),
])
def test_contract_violations_are_named(tmp_path: Path, mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    result = stage.run(str(_bad(tmp_path, mutate)), contract_path(), tmp_path / "out")
    assert not result.evidence.contract.passed
    assert any(expected in f for f in result.evidence.contract.failures), result.evidence.contract.failures


def test_undeclared_pii_is_found(tmp_path: Path, contract: DataContract) -> None:
    df = pd.DataFrame({"notes": ["call 555-123-4567", "ok", "mail a@b.example.org"], "x": [1, 2, 3]})
    found = {(f.column, f.kind) for f in undeclared_findings(df, contract)}
    assert found == {("#1 (header not in contract)", "phone"), ("#1 (header not in contract)", "email")}


def test_credit_cards_need_a_valid_checksum() -> None:
    assert scan(pd.Series(["4111 1111 1111 1111"])) == {"credit_card": 1}
    assert scan(pd.Series(["4111 1111 1111 1112"])) == {}


def test_masking_leaves_no_raw_pii(contract: DataContract) -> None:
    raw = pd.read_csv(sample_dataset(), nrows=50, dtype={"zip": str, "ssn": str, "phone": str})
    protected = protect(raw, contract)
    assert not raw_pii_remaining(protected, contract)
    assert raw_pii_remaining(raw, contract)  # the control: the raw frame is flagged


def test_label_flipping_is_screened(tmp_path: Path, contract: DataContract) -> None:
    def flip(df: pd.DataFrame) -> None:
        dup = df.iloc[:20].copy()
        dup["customer_id"] += 10_000_000
        dup["default"] = 1 - dup["default"]
        for row in dup.itertuples(index=False):
            df.loc[len(df)] = list(row)

    result = stage.run(str(_bad(tmp_path, flip)), contract_path(), tmp_path / "out")
    assert result.evidence.poisoning.conflicting_duplicates == 20


def test_missing_dataset_and_bad_contract_are_clear_errors(tmp_path: Path) -> None:
    missing = stage.run(str(tmp_path / "nowhere.csv"), contract_path(), tmp_path)
    assert missing.dataset is None
    assert [(e.code, e.message) for e in missing.evidence.errors] == [
        ("source_missing", f"dataset not found: {tmp_path / 'nowhere.csv'}")]
    (tmp_path / "c.yaml").write_text("name: x\nversion: '1'\nlabel: y\nfeatures: [a]\ncolumns: {y: {type: int}}\n")
    with pytest.raises(ValueError, match="column 'a' is used but not declared"):
        load_contract(tmp_path / "c.yaml")
