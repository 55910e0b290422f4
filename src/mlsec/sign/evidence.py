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


class DatasetProvenanceCheck(Strict):
    """The dataset provenance (mlsec.ingest.provenance) the model's provenance carries, checked on its own:
    a model provenance that verifies says nothing yet about the dataset's."""

    present: bool  # the verified model provenance carries one (False too when the model provenance failed)
    verified: bool  # its DSSE signature checks with the trusted identity and it is a dataset provenance
    document_digest: Sha256 | None = None  # sha256 of the signed document, as the model's provenance names it
    dataset_digest: Sha256 | None = None  # the processed dataset it is about
    source_digest: Sha256 | None = None  # the raw bytes that dataset was made from
    matches_dataset: bool = False  # dataset_digest is the dataset the model's provenance names
    problem: str | None = None  # why it is missing, did not verify or does not match


class SigningEvidence(Evidence):
    kind: Literal["mlsec.evidence.signing/v1"] = "mlsec.evidence.signing/v1"
    files: list[str]
    formats: dict[str, str]  # file -> what its bytes are (mlsec.sign.formats.sniff), not what its name says
    signature: SignatureCheck
    attestation: AttestationCheck
    dataset_provenance: DatasetProvenanceCheck
