"""The sign stage: model dir -> signed bundle (model/, model.sig, provenance.dsse.json) + signing evidence.

The bundle layout is what the registry stores and what the server verifies before loading.
"""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlsec.digest import manifest_digest, tree_digest, tree_manifest
from mlsec.evidence import Subject
from mlsec.sign import attestation
from mlsec.sign.evidence import AttestationCheck, SignatureCheck, SigningEvidence
from mlsec.sign.keys import KeyPair, fingerprint

MODEL = "model"
SIGNATURE = "model.sig"
ATTESTATION = "provenance.dsse.json"


@dataclass(frozen=True)
class Verified:
    model_digest: str  # recomputed from the files on disk
    signed_digest: str  # read from the verified signature's manifest
    signer: str
    attestation: attestation.VerifiedAttestation


def _hashing_config():  # type: ignore[no-untyped-def]
    from model_signing import hashing

    # Sign every file: no default-ignored .git* paths an attacker could hide content in.
    return hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=False)


def _signed_manifest_digest(signature: Path) -> str:
    """The model digest the signature vouches for, read from its (already verified) DSSE payload."""
    bundle = json.loads(signature.read_text())
    stmt = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return manifest_digest({r["name"]: r["digest"] for r in stmt["predicate"]["resources"]})


def sign(model_dir: Path, out_dir: Path, keys: KeyPair, materials: attestation.Materials, invocation: str) -> Path:
    """Copies the model into out_dir/model and writes the signature and the signed attestation beside it."""
    import model_signing

    target = out_dir / MODEL
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model_dir, target)
    model_signing.signing.Config().set_hashing_config(_hashing_config()).use_elliptic_key_signer(
        private_key=keys.private_key
    ).sign(target, out_dir / SIGNATURE)
    stmt = attestation.statement(tree_manifest(target), materials, invocation)
    attestation.sign(stmt, keys.private_key, keys.public_key, out_dir / ATTESTATION)
    return out_dir


def verify_signature(bundle_dir: Path, public_key: Path) -> str:
    """Checks model.sig over every file in model/; returns the digest it vouches for."""
    import model_signing

    model, sig = bundle_dir / MODEL, bundle_dir / SIGNATURE
    for p in (model, sig):
        if not p.exists():
            raise ValueError(f"signed bundle {bundle_dir} lacks {p.name}")
    try:
        model_signing.verifying.Config().set_hashing_config(_hashing_config()).use_elliptic_key_verifier(
            public_key=public_key
        ).verify(model, sig)
    except Exception as e:  # model-signing raises ValueError and library-specific errors alike
        raise ValueError(f"model signature verification failed: {e}") from e
    return _signed_manifest_digest(sig)


def verify(bundle_dir: Path, public_key: Path) -> Verified:
    """Raises ValueError naming what failed: signature, extra/missing/changed file, or attestation."""
    signed = verify_signature(bundle_dir, public_key)
    att = attestation.verify(bundle_dir / ATTESTATION, public_key)
    digest = tree_digest(bundle_dir / MODEL)
    if att.subject_digest != digest:
        raise ValueError(f"attestation is about {att.subject_digest}, not this model {digest}")
    return Verified(model_digest=digest, signed_digest=signed, signer=fingerprint(public_key), attestation=att)


def evidence(bundle_dir: Path, name: str, public_key: Path) -> SigningEvidence:
    """Checks signature and attestation separately; a failed check is evidence for the gate, not a crash."""
    model = bundle_dir / MODEL
    unverified = "0" * 64
    try:
        signed: str | None = verify_signature(bundle_dir, public_key)
    except ValueError:
        signed = None
    try:
        att: attestation.VerifiedAttestation | None = attestation.verify(bundle_dir / ATTESTATION, public_key)
    except (ValueError, OSError):
        att = None
    return SigningEvidence(
        subject=Subject(name=name, digest=tree_digest(model)),
        files=sorted(tree_manifest(model)),
        signature=SignatureCheck(method="ecdsa-p256", verified=signed is not None,
                                 signer=fingerprint(public_key), signed_digest=signed or unverified),
        attestation=AttestationCheck(
            verified=att is not None,
            subject_digest=att.subject_digest if att else unverified,
            dataset_digest=att.dataset_digest if att else unverified,
            decision_digests=att.decision_digests if att else [],
        ),
    )
