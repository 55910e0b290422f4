"""The ingest stage: source -> validated, PII-protected, fingerprinted dataset + data evidence."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlsec import __version__
from mlsec.digest import sha256_bytes, sha256_file
from mlsec.evidence import Subject
from mlsec.ingest.contract import DataContract, load_contract
from mlsec.ingest.evidence import ContractResult, DataEvidence, PiiReport, PoisoningScreen, Provenance
from mlsec.ingest.pii import protect, raw_pii_remaining, undeclared_findings
from mlsec.ingest.validate import validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    dataset: Path
    evidence: DataEvidence


def read_source(uri: str) -> bytes:
    """A local path or an s3://bucket/key URI (credentials from the usual AWS environment)."""
    if uri.startswith("s3://"):
        from mlsec.registry.s3 import client_from_env

        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not bucket or not key:
            raise ValueError(f"not an s3://bucket/key URI: {uri}")
        return client_from_env().get_object(Bucket=bucket, Key=key)["Body"].read()
    path = Path(uri)
    if not path.is_file():
        raise FileNotFoundError(f"dataset not found: {uri}")
    return path.read_bytes()


def poisoning_screen(df: pd.DataFrame, contract: DataContract) -> PoisoningScreen:
    """Cheap screens for label flipping: identical feature rows with different labels, and label rate."""
    label = contract.label
    if label not in df.columns or not all(f in df.columns for f in contract.features):
        return PoisoningScreen(conflicting_duplicates=0, label_rate=0.0)
    groups = df.groupby(contract.features, dropna=False)[label].nunique()
    conflicts = int((groups > 1).sum())
    rate = float(pd.to_numeric(df[label], errors="coerce").fillna(0).clip(0, 1).mean()) if len(df) else 0.0
    return PoisoningScreen(conflicting_duplicates=conflicts, label_rate=rate)


def run(source: str, contract_file: Path, out_dir: Path, name: str = "dataset") -> IngestResult:
    contract = load_contract(contract_file)
    raw = read_source(source)
    log.info("ingest: read %d bytes from %s", len(raw), source)
    try:
        # Text columns stay text: a ZIP like 01234 must not become the number 1234.
        text = {c: str for c, col in contract.columns.items() if col.type == "str"}
        df = pd.read_csv(io.BytesIO(raw), dtype=text)
    except (ValueError, pd.errors.ParserError) as e:
        raise ValueError(f"{source} is not a readable CSV: {e}") from e
    failures = validate(df, contract)
    log.info("ingest: contract %s@%s -> %d failures", contract.name, contract.version, len(failures))
    findings = undeclared_findings(df, contract)
    protected = protect(df, contract)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = out_dir / "data.csv"
    protected.to_csv(dataset, index=False, lineterminator="\n")
    evidence = DataEvidence(
        subject=Subject(name=name, digest=sha256_file(dataset)),
        rows=len(protected),
        columns=list(protected.columns),
        contract=ContractResult(
            name=contract.name, version=contract.version, sha256=contract.sha256,
            passed=not failures, failures=failures,
        ),
        pii=PiiReport(
            declared={c: p.action for c, p in contract.pii_columns.items()},
            undeclared_findings=findings,
            raw_pii_remaining=raw_pii_remaining(protected, contract),
        ),
        provenance=Provenance(source_uri=source, source_sha256=sha256_bytes(raw), ingested_by=f"mlsec {__version__}"),
        poisoning=poisoning_screen(protected, contract),
    )
    return IngestResult(dataset=dataset, evidence=evidence)
