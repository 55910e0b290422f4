"""What the promotion gate receives (mlsec.evidence.promotion/v1)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlsec.evidence import Evidence, Sha256, Strict
from mlsec.train.evidence import Metrics


class RegistryCheck(Strict):
    """Facts the registry established from its own stored copy, not the uploader's disk."""

    version: str
    files_verified: bool
    signature_verified: bool
    attestation_verified: bool
    signer: str  # from the verified model signature
    revoked: bool
    evidence_verified: bool  # the stored training evidence is what a signed training decision judged
    cache_mismatches: list[str] = Field(default_factory=list)  # manifest fields the signed records contradict


class ApprovalFact(Strict):
    """An approval whose signature verified, for this model digest and this stage; the policy decides
    whether its key belongs to someone allowed to approve."""

    identity: str  # normalised: NFKC, case-folded, trimmed
    key: str  # sha256 fingerprint of the key that signed it


class PromotionEvidence(Evidence):
    kind: Literal["mlsec.evidence.promotion/v1"] = "mlsec.evidence.promotion/v1"
    target_stage: str
    current_stages: list[str]  # stages whose alias points at this version now
    dataset_digest: Sha256
    metrics: Metrics
    registry: RegistryCheck
    author: str  # who asks for the promotion (normalised); never counts as an approver
    approvals: list[ApprovalFact] = Field(default_factory=list)
    rollback: bool = False  # the request: move the stage back to an earlier version
    held_stage_before: bool = False  # registry fact: this stage has pointed at this version before
