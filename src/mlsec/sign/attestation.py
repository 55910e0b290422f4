"""SLSA provenance as an in-toto Statement v1, signed as a DSSE envelope (securesystemslib) with the model's key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from mlsec.digest import manifest_digest
from mlsec.gates.attest import STATEMENT_TYPE, AttestationError, open_envelope, sign_statement
from mlsec.sign.keys import load_public, sslib_key, sslib_signer

SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/mlsec/mlsec/pipeline/v1"


@dataclass(frozen=True)
class Materials:
    dataset_uri: str
    dataset_digest: str
    decision_digests: dict[str, str]  # "<gate>:<decision id>" -> decision digest
    code_commit: str
    image: str


@dataclass(frozen=True)
class VerifiedAttestation:
    subject_digest: str
    dataset_digest: str
    decision_digests: list[str]


def statement(model_manifest: dict[str, str], materials: Materials, invocation: str) -> dict[str, Any]:
    deps = [
        {"uri": materials.dataset_uri, "digest": {"sha256": materials.dataset_digest},
         "annotations": {"role": "dataset"}},
        {"uri": "git+mlsec", "digest": {"gitCommit": materials.code_commit}},
        {"uri": materials.image, "annotations": {"role": "image"}},
        *({"name": f"decision:{name}", "digest": {"sha256": d}, "annotations": {"role": "gate-decision"}}
          for name, d in sorted(materials.decision_digests.items())),
    ]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": d}} for n, d in sorted(model_manifest.items())],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {"buildType": BUILD_TYPE, "externalParameters": {},
                                "resolvedDependencies": deps},
            "runDetails": {"builder": {"id": "mlsec-pipeline"}, "metadata": {"invocationId": invocation}},
        },
    }


def sign(stmt: dict[str, Any], private_key: Path, out: Path) -> None:
    out.write_text(json.dumps(sign_statement(stmt, sslib_signer(private_key)), indent=2))


def verify(envelope_path: Path, public_key: Path | ec.EllipticCurvePublicKey) -> VerifiedAttestation:
    """Checks the DSSE signature with the trusted key, then reads what the statement claims."""
    key = load_public(public_key) if isinstance(public_key, Path) else public_key
    try:
        raw = envelope_path.read_bytes()
    except OSError as e:
        raise ValueError(f"attestation {envelope_path} is unreadable: {e}") from e
    try:
        stmt = open_envelope(raw, [sslib_key(key)])
    except AttestationError as e:
        raise ValueError(f"attestation signature does not verify with the trusted key: {e}") from e
    return read_statement(json.dumps(stmt).encode())


def read_statement(body: bytes) -> VerifiedAttestation:
    """What a verified statement claims: its subject digest, the dataset and the gate decisions."""
    stmt = json.loads(body)
    if stmt.get("_type") != STATEMENT_TYPE or stmt.get("predicateType") != SLSA_PROVENANCE:
        raise ValueError("attestation is not an in-toto v1 SLSA provenance statement")
    deps = stmt["predicate"]["buildDefinition"]["resolvedDependencies"]
    role = lambda d: d.get("annotations", {}).get("role")  # noqa: E731
    datasets = [d["digest"]["sha256"] for d in deps if role(d) == "dataset"]
    if len(datasets) != 1:
        raise ValueError("attestation must name exactly one dataset")
    return VerifiedAttestation(
        subject_digest=manifest_digest({s["name"]: s["digest"]["sha256"] for s in stmt["subject"]}),
        dataset_digest=datasets[0],
        decision_digests=[d["digest"]["sha256"] for d in deps if role(d) == "gate-decision"],
    )
