"""What the training gate receives (mlsec.evidence.training/v1)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlsec.evidence import Evidence, Sha256, Strict


class Metrics(Strict):
    accuracy: float = Field(ge=0, le=1)
    auc: float = Field(ge=0, le=1)
    holdout_rows: int = Field(gt=0)


class Fairness(Strict):
    protected_attribute: str
    demographic_parity_difference: float = Field(ge=0, le=1)


class TrainingRun(Strict):
    device: str
    epochs: int = Field(gt=0)
    seed: int
    torch_version: str
    mlsec_version: str
    duration_s: float = Field(ge=0)


class TrainingEvidence(Evidence):
    kind: Literal["mlsec.evidence.training/v1"] = "mlsec.evidence.training/v1"
    dataset_digest: Sha256
    files: list[str]
    metrics: Metrics
    fairness: Fairness | None = None
    run: TrainingRun
