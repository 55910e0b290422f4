"""The poisoning screens' figures as the data evidence carries them (computed by mlsec.ingest.screens).

Apart from the screens so that every task reading evidence (each gate, promote, serve) imports pydantic
models, not pandas, scipy and scikit-learn: that import cost each kfp.local task about two seconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlsec.evidence import Sha256, Strict


class ReferenceUsed(Strict):
    """Which reference the screens compared against, as the evidence records it."""

    source: Literal["registry", "shipped", "none"]
    detail: str  # where it came from, or why there is none
    sha256: Sha256 | None = None  # of the profile's canonical JSON
    rows: int = Field(default=0, ge=0)


class LabelShift(Strict):
    group: str  # "all", or "<protected attribute>=<value>"
    rows: int = Field(ge=0)
    rate: float = Field(ge=0, le=1)
    reference_rate: float = Field(ge=0, le=1)
    z: float
    p_value: float = Field(ge=0, le=1)


class Drift(Strict):
    feature: str
    group: str
    psi: float = Field(ge=0)
    ks: float = Field(ge=0, le=1)
    ks_p_value: float = Field(ge=0, le=1)


class LabelIssues(Strict):
    label: int
    rows: int = Field(ge=0)
    suspected: int = Field(ge=0)
    share: float = Field(ge=0, le=1)


class Trigger(Strict):
    pattern: str  # e.g. "num_late_payments=9.0" or "age in bin 1 & credit_history_years in bin 6"
    rows: int = Field(ge=0)
    share: float = Field(ge=0, le=1)  # of this dataset's rows
    label: int
    purity: float = Field(ge=0, le=1)  # share of the pattern's rows with that label
    reference_share: float = Field(ge=0, le=1)


class PoisoningScreen(Strict):
    conflicting_duplicates: int = Field(ge=0)
    label_rate: float = Field(ge=0, le=1)
    screened: bool = False  # False: the data never got far enough (contract failed, unreadable)
    reference: ReferenceUsed | None = None
    label_shift: list[LabelShift] = []
    drift: list[Drift] = []
    label_issues: list[LabelIssues] = []
    triggers: list[Trigger] = []
    duplicate_share: float = Field(default=0.0, ge=0, le=1)
    near_duplicate_share: float = Field(default=0.0, ge=0, le=1)
    outlier_share: float = Field(default=0.0, ge=0, le=1)
    # SHA-256 of this dataset's own profile (its canonical JSON), which ingest writes as an artifact of its
    # own: promote stores the file's bytes as the next ingest's reference only if they hash to this.
    profile_sha256: Sha256 | None = None
