"""SLSA provenance as an in-toto Statement v1, signed as a DSSE envelope (securesystemslib) with the model's key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from mlsec.digest import manifest_digest, sha256_json
from mlsec.gates.attest import STATEMENT_TYPE, AttestationError, open_envelope
from mlsec.sign.keys import load_public, sslib_key

SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/mlsec/mlsec/pipeline/v1"


@dataclass(frozen=True)
class Materials:
    dataset_uri: str
    dataset_digest: str
    decision_digests: dict[str, str]  # "<gate>:<decision id>" -> decision digest
    code_commit: str
    image: str
    # The dataset's provenance Statement (mlsec.ingest.provenance), unsigned: the sign stage signs it.
    dataset_statement: dict[str, Any] | None = None


@dataclass(frozen=True)
class VerifiedAttestation:
    subject_digest: str
    dataset_digest: str
    decision_digests: list[str]
    # The signed dataset provenance the statement embeds, once its digest matched the one it names; its
    # own signature is checked by mlsec.sign.stage with the same trust.
    dataset_provenance: dict[str, Any] | None = None


def statement(model_manifest: dict[str, str], materials: Materials, invocation: str,
              dataset_provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """dataset_provenance: the signed dataset provenance document, named by digest and carried along."""
    deps = [
        {"uri": materials.dataset_uri, "digest": {"sha256": materials.dataset_digest},
         "annotations": {"role": "dataset"}},
        {"uri": "git+mlsec", "digest": {"gitCommit": materials.code_commit}},
        {"uri": materials.image, "annotations": {"role": "image"}},
        *({"name": f"decision:{name}", "digest": {"sha256": d}, "annotations": {"role": "gate-decision"}}
          for name, d in sorted(materials.decision_digests.items())),
        *([{"name": "dataset-provenance", "digest": {"sha256": sha256_json(dataset_provenance)},
            "annotations": {"role": "dataset-provenance"}}] if dataset_provenance is not None else []),
    ]
    build: dict[str, Any] = {"buildType": BUILD_TYPE, "externalParameters": {}, "resolvedDependencies": deps}
    if dataset_provenance is not None:
        build["internalParameters"] = {"datasetProvenance": dataset_provenance}
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": d}} for n, d in sorted(model_manifest.items())],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": build,
            "runDetails": {"builder": {"id": "mlsec-pipeline"}, "metadata": {"invocationId": invocation}},
        },
    }


def verify(envelope_path: Path, public_key: Path | ec.EllipticCurvePublicKey) -> VerifiedAttestation:
    """Checks the DSSE signature with the trusted key, then reads what the statement claims."""
    key = load_public(public_key) if isinstance(public_key, Path) else public_key
    try:
        raw = envelope_path.read_bytes()
    except OSError as e:
        raise ValueError(f"attestation {envelope_path} is unreadable: {e}") from e
    return read_statement(json.dumps(open_signed(raw, key)).encode())


def open_signed(raw: bytes, key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The statement of a DSSE envelope signed with key; ValueError otherwise."""
    try:
        return open_envelope(raw, [sslib_key(key)])
    except AttestationError as e:
        raise ValueError(f"attestation signature does not verify with the trusted key: {e}") from e


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
    named = [d["digest"]["sha256"] for d in deps if role(d) == "dataset-provenance"]
    carried = stmt["predicate"]["buildDefinition"].get("internalParameters", {}).get("datasetProvenance")
    if len(named) > 1 or (carried is None) != (not named):
        raise ValueError("attestation must name one dataset provenance and carry it, or neither")
    if carried is not None and sha256_json(carried) != named[0]:
        raise ValueError(f"the dataset provenance carried is {sha256_json(carried)}, not the {named[0]} named")
    return VerifiedAttestation(
        subject_digest=manifest_digest({s["name"]: s["digest"]["sha256"] for s in stmt["subject"]}),
        dataset_digest=datasets[0],
        decision_digests=[d["digest"]["sha256"] for d in deps if role(d) == "gate-decision"],
        dataset_provenance=carried,
    )
