"""What the data gate receives (mlsec.evidence.data/v1)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlsec.evidence import Evidence, Sha256, Strict


class ContractResult(Strict):
    name: str
    version: str
    sha256: Sha256
    passed: bool
    failures: list[str]


class PiiFinding(Strict):
    column: str
    kind: str
    matches: int


class PiiReport(Strict):
    declared: dict[str, Literal["drop", "mask"]]
    undeclared_findings: list[PiiFinding]
    raw_pii_remaining: bool


class Provenance(Strict):
    source_uri: str
    source_sha256: Sha256
    ingested_by: str


class PoisoningScreen(Strict):
    conflicting_duplicates: int = Field(ge=0)
    label_rate: float = Field(ge=0, le=1)


class DataEvidence(Evidence):
    kind: Literal["mlsec.evidence.data/v1"] = "mlsec.evidence.data/v1"
    rows: int = Field(ge=0)
    columns: list[str]
    contract: ContractResult
    pii: PiiReport
    provenance: Provenance
    poisoning: PoisoningScreen
