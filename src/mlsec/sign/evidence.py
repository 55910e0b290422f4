"""What the signing gate receives (mlsec.evidence.signing/v1)."""

from __future__ import annotations

from typing import Literal

from mlsec.evidence import Evidence, Sha256, Strict


class SignatureCheck(Strict):
    method: Literal["key", "certificate", "sigstore"]
    verified: bool
    signer: str  # "sha256:<public key fingerprint>" (key, certificate) or "<identity>@<issuer>" (sigstore)
    signed_digest: Sha256  # the model digest recomputed from the verified signature's manifest


class AttestationCheck(Strict):
    verified: bool
    subject_digest: Sha256
    dataset_digest: Sha256
    decision_digests: list[Sha256]
    dataset_provenance_digest: Sha256 | None = None  # the verified dataset provenance it carries, if any


class SigningEvidence(Evidence):
    kind: Literal["mlsec.evidence.signing/v1"] = "mlsec.evidence.signing/v1"
    files: list[str]
    formats: dict[str, str]  # file -> what its bytes are (mlsec.sign.formats.sniff), not what its name says
    signature: SignatureCheck
    attestation: AttestationCheck
