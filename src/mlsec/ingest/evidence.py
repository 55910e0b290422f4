"""What the data gate receives (mlsec.evidence.data/v1).

Nothing here is a raw data value: column headers the contract does not name appear as positions,
contract failures carry counts and redacted examples (mlsec.ingest.redact), and a run that could not
read or parse its source says why in `errors` (the gate denies on any entry).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlsec.evidence import Evidence, Sha256, Strict
from mlsec.ingest.errors import ErrorCode
from mlsec.ingest.figures import PoisoningScreen  # the poisoning screens' figures (mlsec.ingest.screens)


class ContractResult(Strict):
    name: str
    version: str
    sha256: Sha256 | None  # None: the contract file could not be read
    passed: bool
    failures: list[str]


class PiiFinding(Strict):
    column: str
    kind: str
    matches: int
    location: Literal["values", "header"] = "values"


class PiiReport(Strict):
    declared: dict[str, Literal["drop", "mask", "tokenize"]]
    undeclared_findings: list[PiiFinding]
    raw_pii_remaining: bool
    detector: str = ""  # the recognizer set that looked (mlsec.ingest.pii.DETECTOR)


class Provenance(Strict):
    source_uri: str
    source_sha256: Sha256 | None  # None: nothing was read (refused, missing or unreadable)
    ingested_by: str
    format: Literal["csv", "parquet"] | None = None  # None: not read far enough to tell
    code_commit: str = "unknown"
    formula_cells: int = Field(default=0, ge=0)  # cells that would run as a spreadsheet formula


class Transformation(Strict):
    """One step from the source's bytes to the dataset's, as the dataset provenance lists it."""

    step: Literal["parse", "neutralise_formulas", "drop", "mask", "tokenize", "write"]
    column: str | None = None
    detail: str = ""


class IngestError(Strict):
    code: ErrorCode
    message: str = Field(min_length=1)


class DataEvidence(Evidence):
    kind: Literal["mlsec.evidence.data/v1"] = "mlsec.evidence.data/v1"
    rows: int = Field(ge=0)
    columns: list[str]
    contract: ContractResult
    pii: PiiReport
    provenance: Provenance
    poisoning: PoisoningScreen
    errors: list[IngestError] = []
    transformations: list[Transformation] = []
