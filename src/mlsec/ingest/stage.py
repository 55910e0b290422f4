"""The ingest stage: source -> validated, PII-protected, fingerprinted dataset + data evidence.

It never raises: a source that is refused, missing, empty, not UTF-8 or not CSV, an unreadable
contract, or anything unexpected becomes an entry in the evidence's `errors`, which the data gate
denies with the reason. The dataset is written only when the data is clean (contract passed, no PII
left or found anywhere), as a new owner-only file; otherwise nothing lands on disk and the subject is
the digest of no bytes.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlsec import __version__
from mlsec.config import sample_dataset
from mlsec.digest import sha256_bytes, sha256_file
from mlsec.evidence import Subject
from mlsec.fsutil import write_secret
from mlsec.ingest.contract import DataContract, load_contract
from mlsec.ingest.errors import IngestFailure
from mlsec.ingest.evidence import (
    ContractResult, DataEvidence, IngestError, PiiReport, PoisoningScreen, Provenance, Transformation,
)
from mlsec.ingest.patterns import redact
from mlsec.ingest.profile import Reference, ReferenceProfile, shipped
from mlsec.ingest.pii import DETECTOR, Tokenizer, protect, raw_pii_remaining, undeclared_findings
from mlsec.ingest.redact import column_label, safe_message
from mlsec.ingest.screens import screen
from mlsec.ingest.source import Format, check_shape, detect_format, formula_cells, parse_parquet, read_source
from mlsec.ingest.validate import validate

log = logging.getLogger(__name__)

NOTHING = sha256_bytes(b"")  # the subject of a run that wrote no dataset
DATASET = "data.csv"


@dataclass(frozen=True)
class IngestResult:
    dataset: Path | None  # None: the data was not clean, nothing was written
    evidence: DataEvidence
    profile: ReferenceProfile | None = None  # the clean dataset's own, which evidence.poisoning names by digest


def parse(raw: bytes, contract: DataContract) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(typed frame for validation, every cell as the text it was in the file, for scanning)."""
    if not raw.strip():
        raise IngestFailure("empty", f"the source is empty ({len(raw)} bytes): no header row, no data")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise IngestFailure("not_utf8", f"the source is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset "
                                        f"{e.start} cannot be decoded; export the file as UTF-8 CSV") from None
    try:
        # Text columns stay text: a ZIP like 01234 must not become the number 1234.
        typed = pd.read_csv(io.StringIO(text), dtype={c: str for c, col in contract.columns.items() if col.type == "str"})
        cells = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise IngestFailure("empty", "the source has no header row") from None
    except (ValueError, pd.errors.ParserError) as e:
        raise IngestFailure("not_csv", f"the source is not a readable CSV: {safe_message(str(e))}") from None
    return typed, cells


def _oversized(cells: pd.DataFrame, contract: DataContract) -> list[IngestError]:
    errors, limit = [], contract.source.max_cell_chars
    for position, col in enumerate(cells.columns):
        n = int((cells[col].str.len() > limit).sum())
        if n:
            errors.append(IngestError(code="cell_too_long", message=(
                f"column {column_label(str(col), position, contract.columns)}: {n} cells longer than "
                f"{limit} characters; no field of this dataset should be that long")))
    return errors


def _formulas(typed: pd.DataFrame, cells: pd.DataFrame, contract: DataContract,
              steps: list[Transformation]) -> tuple[int, list[IngestError]]:
    """Formula cells denied, or neutralised in typed with a leading ' (recorded as a step), per contract."""
    found = formula_cells(cells, contract)
    total = sum(int(mask.sum()) for mask in found.values())
    labels = {col: column_label(col, list(cells.columns).index(col), contract.columns) for col in found}
    if found and contract.source.formula_cells == "deny":
        where = ", ".join(f"{labels[c]} ({int(m.sum())})" for c, m in found.items())
        return total, [IngestError(code="formula_cells", message=(
            f"{total} cells start with = + - @ (or tab/CR) and are not numbers: a spreadsheet would run them as "
            f"formulas; in columns {where}; the contract denies them (source.formula_cells: deny)"))]
    for col, mask in found.items():
        typed[col] = typed[col].astype(object)
        typed.loc[mask, col] = "'" + cells.loc[mask, col]
        steps.append(Transformation(step="neutralise_formulas", column=labels[col],
                                    detail=f"{int(mask.sum())} cells prefixed with '"))
    return total, []


def _protection_steps(contract: DataContract, present: pd.Index, tokenizer: Tokenizer | None) -> list[Transformation]:
    steps = []
    for col, pii in contract.pii_columns.items():
        if col in present:
            detail = f"hmac-sha256, key id {tokenizer.key_id}" if pii.action == "tokenize" and tokenizer else pii.kind
            steps.append(Transformation(step=pii.action, column=col, detail=detail))
    return steps


def poisoning_screen(df: pd.DataFrame, contract: DataContract) -> PoisoningScreen:
    """Cheap screens for label flipping: identical feature rows with different labels, and label rate."""
    label = contract.label
    if label not in df.columns or not all(f in df.columns for f in contract.features):
        return PoisoningScreen(conflicting_duplicates=0, label_rate=0.0)
    groups = df.groupby(contract.features, dropna=False)[label].nunique()
    conflicts = int((groups > 1).sum())
    rate = float(pd.to_numeric(df[label], errors="coerce").fillna(0).clip(0, 1).mean()) if len(df) else 0.0
    return PoisoningScreen(conflicting_duplicates=conflicts, label_rate=rate)


def _provenance(uri: str, raw: bytes | None, fmt: Format | None = None, formulas: int = 0) -> Provenance:
    from mlsec.sign.task import code_commit

    return Provenance(source_uri=redact(uri), source_sha256=sha256_bytes(raw) if raw is not None else None,
                      ingested_by=f"mlsec {__version__}", format=fmt, code_commit=code_commit(), formula_cells=formulas)


def _ingest(uri: str, raw: bytes, contract: DataContract, out_dir: Path, name: str,
            reference: Reference) -> IngestResult:
    fmt = detect_format(raw, uri, contract)
    typed, cells = parse(raw, contract) if fmt == "csv" else parse_parquet(raw, contract)
    check_shape(len(typed), len(typed.columns), contract)
    steps = [Transformation(step="parse", detail=fmt)]
    formulas, formula_errors = _formulas(typed, cells, contract, steps)
    tokenizer = Tokenizer.from_env() if any(p.action == "tokenize" for p in contract.pii_columns.values()) else None
    failures = validate(typed, contract)
    log.info("ingest: contract %s@%s -> %d failures", contract.name, contract.version, len(failures))
    findings = undeclared_findings(cells, contract)
    errors = _oversized(cells, contract) + formula_errors
    protected = protect(typed, contract, tokenizer)
    steps += _protection_steps(contract, typed.columns, tokenizer)
    remaining = raw_pii_remaining(protected, contract)
    dataset = None
    if not (failures or findings or remaining or errors):  # only clean data is ever written
        dataset = out_dir / DATASET
        write_secret(dataset, protected.to_csv(index=False, lineterminator="\n").encode())
        steps.append(Transformation(step="write", detail="csv, utf-8, declared PII protected"))
    labels = {c: column_label(str(c), i, contract.columns) for i, c in enumerate(typed.columns)}
    # The full screens need clean, typed data; anything else is denied for its own reasons first.
    poisoning, own = screen(protected, contract, reference) if dataset else (poisoning_screen(protected, contract), None)
    evidence = DataEvidence(
        subject=Subject(name=name, digest=sha256_file(dataset) if dataset else NOTHING),
        rows=len(protected),
        columns=[labels[c] for c in protected.columns],
        contract=ContractResult(name=contract.name, version=contract.version, sha256=contract.sha256,
                                passed=not failures, failures=failures),
        pii=PiiReport(declared={c: p.action for c, p in contract.pii_columns.items()},
                      undeclared_findings=findings, raw_pii_remaining=remaining, detector=DETECTOR),
        provenance=_provenance(uri, raw, fmt, formulas),
        poisoning=poisoning,
        errors=errors,
        transformations=steps,
    )
    return IngestResult(dataset=dataset, evidence=evidence, profile=own)


def _failed(uri: str, contract: DataContract | None, raw: bytes | None, error: IngestError, name: str) -> IngestResult:
    log.warning("ingest: %s", error.message)
    evidence = DataEvidence(
        subject=Subject(name=name, digest=NOTHING),
        rows=0,
        columns=[],
        contract=ContractResult(name=contract.name if contract else "unreadable", version=contract.version if contract else "",
                                sha256=contract.sha256 if contract else None, passed=False, failures=[]),
        pii=PiiReport(declared={c: p.action for c, p in contract.pii_columns.items()} if contract else {},
                      undeclared_findings=[], raw_pii_remaining=False),
        provenance=_provenance(uri, raw),
        poisoning=PoisoningScreen(conflicting_duplicates=0, label_rate=0.0),
        errors=[error],
    )
    return IngestResult(dataset=None, evidence=evidence)


def run(source: str, contract_file: Path, out_dir: Path, name: str = "dataset",
        reference: Reference | None = None) -> IngestResult:
    """Ingest source (a path, an s3:// URI, or "" for the bundled sample) into out_dir/data.csv, screened
    against reference (the last accepted dataset's profile; default: the one the sample ships)."""
    uri = source or str(sample_dataset())
    (out_dir / DATASET).unlink(missing_ok=True)  # a denied run must not leave an earlier copy behind
    try:
        contract = load_contract(contract_file)
    except ValueError as e:
        return _failed(uri, None, None, IngestError(code="contract_invalid", message=safe_message(str(e))), name)
    raw = None
    try:
        raw = read_source(uri, contract.source.max_bytes)
        log.info("ingest: read %d bytes from %s", len(raw), redact(uri))
        return _ingest(uri, raw, contract, out_dir, name, reference or shipped())
    except IngestFailure as e:
        error = IngestError(code=e.code, message=e.message)
    except Exception as e:  # noqa: BLE001 - the task must not crash: this too is a recorded deny
        error = IngestError(code="internal", message=f"ingest failed unexpectedly: {type(e).__name__}: "
                                                     f"{safe_message(str(e))}")
    (out_dir / DATASET).unlink(missing_ok=True)
    return _failed(uri, contract, raw, error, name)
