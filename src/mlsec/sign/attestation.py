"""SLSA provenance as an in-toto Statement v1, signed as a DSSE envelope with the model's signing key."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from mlsec.digest import manifest_digest
from mlsec.sign.keys import key_fingerprint, load_private, load_public

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
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


def _pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: what is actually signed."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


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
    body = json.dumps(stmt, sort_keys=True).encode()
    key = load_private(private_key)
    sig = key.sign(_pae(PAYLOAD_TYPE, body), ec.ECDSA(hashes.SHA256()))
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode(),
        "signatures": [{"keyid": key_fingerprint(key.public_key()), "sig": base64.b64encode(sig).decode()}],
    }
    out.write_text(json.dumps(envelope, indent=2))


def verify(envelope_path: Path, public_key: Path | ec.EllipticCurvePublicKey) -> VerifiedAttestation:
    """Checks the DSSE signature with the trusted key, then reads what the statement claims."""
    try:
        env = json.loads(envelope_path.read_text())
        body = base64.b64decode(env["payload"], validate=True)
        sigs = [base64.b64decode(s["sig"], validate=True) for s in env["signatures"]]
        payload_type = env["payloadType"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"attestation {envelope_path} is not a DSSE envelope: {e}") from e
    key = load_public(public_key) if isinstance(public_key, Path) else public_key
    if payload_type != PAYLOAD_TYPE or not any(_ok(key, s, _pae(payload_type, body)) for s in sigs):
        raise ValueError("attestation signature does not verify with the trusted key")
    return read_statement(body)


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


def _ok(key: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> bool:
    try:
        key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False
