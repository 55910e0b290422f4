"""The sign stage as a pipeline task."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mlsec.config import Settings
from mlsec.gates.attest import gate_trust, read_history
from mlsec.ingest import provenance as dataset_provenance
from mlsec.ingest.evidence import DataEvidence
from mlsec.evidence import read_evidence
from mlsec.sign import stage
from mlsec.sign.methods import configured_signing, configured_trust
from mlsec.sign.attestation import Materials


def code_commit() -> str:
    if commit := os.environ.get("MLSEC_GIT_COMMIT"):
        return commit
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def run(model_dir: Path, data_evidence: Path, decisions: Path, model_name: str, invocation: str,
        signed_out: Path, evidence_out: Path) -> None:
    settings = Settings()
    signing = configured_signing(settings.key_dir, create_key=settings.deploy_target == "local")
    data = read_evidence(DataEvidence, data_evidence)
    history = [s.decision for s in read_history(decisions, gate_trust(settings.key_dir))]  # only signed ones
    materials = Materials(
        dataset_uri=data.provenance.source_uri, dataset_digest=data.subject.digest,
        decision_digests={f"{d.gate}:{d.id}": d.digest for d in history},
        code_commit=code_commit(), image=os.environ.get("MLSEC_IMAGE", "local"),
        dataset_statement=dataset_provenance.statement(data),  # signed and carried in the model's provenance
    )
    stage.sign(model_dir, signed_out, signing, materials, invocation)
    # The evidence is what a verifier sees with the configured trust, not what the signer believes.
    stage.evidence(signed_out, model_name, configured_trust(settings.key_dir)).write(evidence_out)
