"""What the training gate receives (mlsec.evidence.training/v1)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlsec.evidence import Evidence, Sha256, Strict


class Metrics(Strict):
    accuracy: float = Field(ge=0, le=1)
    auc: float = Field(ge=0, le=1)
    holdout_rows: int = Field(gt=0)


class GroupRates(Strict):
    """One group of the protected attribute on the holdout; TPR/FPR are None when the group has no
    positives (resp. negatives) to measure them on."""

    rows: int = Field(gt=0)
    selection_rate: float = Field(ge=0, le=1)
    true_positive_rate: float | None = Field(default=None, ge=0, le=1)
    false_positive_rate: float | None = Field(default=None, ge=0, le=1)


class Fairness(Strict):
    protected_attribute: str
    demographic_parity_difference: float = Field(ge=0, le=1)
    equalized_odds_difference: float = Field(ge=0, le=1)
    groups: dict[str, GroupRates]


class AttackResult(Strict):
    attack: Literal["fgsm", "pgd"]
    epsilon: float = Field(gt=0)  # L-inf radius in the standardised feature space
    accuracy: float = Field(ge=0, le=1)  # accuracy on the attacked holdout rows


class AdversarialTraining(Strict):
    attack: Literal["pgd"] = "pgd"
    epsilon: float = Field(gt=0)
    clean_accuracy_cost: float  # plain model's holdout accuracy minus this one's (same data, same seed)


class Robustness(Strict):
    space: Literal["standardized"] = "standardized"
    rows: int = Field(gt=0)  # holdout rows attacked
    clean_accuracy: float = Field(ge=0, le=1)  # on those rows
    attacks: list[AttackResult]
    adversarial_training: AdversarialTraining | None = None


class MembershipAttack(Strict):
    attack: Literal["black_box", "loss_threshold"]
    auc: float = Field(ge=0, le=1)  # the attack's ROC AUC telling members from non-members (0.5: no leak)
    advantage: float = Field(ge=0, le=1)  # max over thresholds of TPR - FPR


class DifferentialPrivacy(Strict):
    target_epsilon: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)
    epsilon: float = Field(ge=0)  # spent, from Opacus' accountant
    noise_multiplier: float = Field(ge=0)
    max_grad_norm: float = Field(gt=0)


class Privacy(Strict):
    members: int = Field(gt=0)
    non_members: int = Field(gt=0)
    membership: list[MembershipAttack]
    dp: DifferentialPrivacy | None = None


class Watermark(Strict):
    key_id: str  # HMAC of a fixed label under the key: names the key, reveals nothing of it
    triggers: int = Field(gt=0)
    agreement: float = Field(ge=0, le=1)  # share of trigger rows predicted as the key dictates
    threshold: float = Field(gt=0, le=1)
    verified: bool
    clean_accuracy_cost: float  # plain model's holdout accuracy minus this one's (same data, same seed)


class Scan(Strict):
    scanner: str  # "picklescan 1.0.5", "modelscan 0.8.8"
    issues: list[str]  # what the scanner flagged; empty when it cleared the file


class BaseModel(Strict):
    digest: Sha256
    format: Literal["safetensors", "pickle"]
    scans: list[Scan]


class SupplyChain(Strict):
    sbom_file: str  # CycloneDX JSON inside the model directory (so the model signature covers it)
    sbom_digest: Sha256
    sbom_components: int = Field(gt=0)
    base_model: BaseModel | None = None


class TrainingRun(Strict):
    device: str
    epochs: int = Field(gt=0)  # the budget
    epochs_run: int = Field(gt=0)  # fewer when early stopping ended the run
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
    robustness: Robustness | None = None
    privacy: Privacy | None = None
    watermark: Watermark | None = None
    supply_chain: SupplyChain | None = None
    run: TrainingRun
