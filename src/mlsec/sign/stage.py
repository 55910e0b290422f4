"""The sign stage: model dir -> signed bundle (model/, model.sig, provenance.dsse.json) + signing evidence.

The bundle layout is what the registry stores and what the server verifies before loading.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsec.digest import manifest_digest, tree_manifest
from mlsec.evidence import Subject
from mlsec.ingest import provenance as dataset_provenance
from mlsec.sign import attestation, formats
from mlsec.sign.evidence import AttestationCheck, DatasetProvenanceCheck, SignatureCheck, SigningEvidence
from mlsec.sign.keys import KeyPair
from mlsec.sign.methods import Signing, Trust, as_signing, as_trust

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


def signed_manifest(signature: Path) -> dict[str, str]:
    """file -> sha256 as the signature lists them. model-signing's file serialization digests each file's
    bytes with SHA-256, so once it has verified (or made) the signature this IS tree_manifest of the model:
    the one hashing pass serves the signature and the model digest."""
    bundle = json.loads(signature.read_text())
    stmt = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return {str(r["name"]): str(r["digest"]) for r in stmt["predicate"]["resources"]}


def _signed_manifest_digest(signature: Path) -> str:
    """The model digest the signature vouches for, read from its (already verified) DSSE payload."""
    return manifest_digest(signed_manifest(signature))


def _link_tree(src: Path, dst: Path) -> None:
    """dst mirrors src by hard links (no bytes copied); a copy only where linking is impossible (another
    filesystem). Symlinks are refused, as tree_manifest refuses them."""
    dst.mkdir(parents=True)
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_symlink():
            raise ValueError(f"symlink not allowed in an artifact: {path}")
        if path.is_dir():
            target.mkdir()
            continue
        try:
            os.link(path, target)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copy2(path, target)


def sign(model_dir: Path, out_dir: Path, signing: Signing | KeyPair, materials: attestation.Materials,
         invocation: str) -> Path:
    """Links the model into out_dir/model and writes the signature and the signed attestation beside it.
    The files are hashed once, in place and in parallel across files (model-signing's file serialization);
    the attestation's manifest is the one the signature lists."""
    how = as_signing(signing)
    signer = how.model_signer()  # fails here, before anything is written, if the method cannot run
    dataset_doc = _dataset_provenance(how, materials)  # and so does a dataset provenance about another dataset
    target = out_dir / MODEL
    if target.exists():
        shutil.rmtree(target)
    _link_tree(model_dir, target)
    signer.set_hashing_config(_hashing_config()).sign(target, out_dir / SIGNATURE)
    stmt = attestation.statement(signed_manifest(out_dir / SIGNATURE), materials, invocation, dataset_doc)
    how.sign_attestation(stmt, out_dir / ATTESTATION)
    return out_dir


def _dataset_provenance(how: Signing, materials: attestation.Materials) -> dict[str, Any] | None:
    """The dataset's provenance signed with the model's identity, if the materials carry one; it must be
    about the very dataset the model's provenance names."""
    stmt = materials.dataset_statement
    if stmt is None:
        return None
    named = dataset_provenance.read(stmt, "").dataset_digest
    if named != materials.dataset_digest:
        raise ValueError(f"the dataset provenance is about {named}, not the dataset {materials.dataset_digest}")
    return how.sign_document(stmt)


def verify_signature(bundle_dir: Path, trust: Trust | Path) -> str:
    """Checks model.sig over every file in model/; returns the digest it vouches for."""
    model, sig = bundle_dir / MODEL, bundle_dir / SIGNATURE
    for p in (model, sig):
        if not p.exists():
            raise ValueError(f"signed bundle {bundle_dir} lacks {p.name}")
    try:
        as_trust(trust).model_verifier().set_hashing_config(_hashing_config()).verify(model, sig)
    except Exception as e:  # model-signing raises ValueError and library-specific errors alike
        raise ValueError(f"model signature verification failed: {e}") from e
    return _signed_manifest_digest(sig)


def _verify_model_provenance(bundle_dir: Path, trust: Trust) -> attestation.VerifiedAttestation:
    """The model's provenance alone; the dataset provenance it carries is checked by _check_dataset."""
    try:
        return trust.verify_attestation(bundle_dir / ATTESTATION, bundle_dir / SIGNATURE)
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"attestation verification failed: {e}") from e


def _check_dataset(document: dict[str, Any], trust: Trust, bundle_dir: Path) -> dataset_provenance.DatasetProvenance:
    """The carried dataset provenance, once it verifies with trust; ValueError naming what failed."""
    try:
        return dataset_provenance.verify_document(document, trust, bundle_dir / SIGNATURE)
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"the dataset provenance does not verify: {e}") from e


def _verify_attestation(bundle_dir: Path, trust: Trust) -> attestation.VerifiedAttestation:
    """The model's provenance and, when it carries one, the dataset provenance: verified and about its dataset."""
    att = _verify_model_provenance(bundle_dir, trust)
    dataset = dataset_check(att, trust, bundle_dir)
    if dataset.present and not (dataset.verified and dataset.matches_dataset):
        raise ValueError(f"attestation verification failed: {dataset.problem}")
    return att


def dataset_check(att: attestation.VerifiedAttestation | None, trust: Trust, bundle_dir: Path) -> DatasetProvenanceCheck:
    """What the signing gate is told of the dataset provenance: present, verified, about which dataset."""
    if att is None:
        return DatasetProvenanceCheck(present=False, verified=False, problem="the model's provenance did not verify")
    if att.dataset_provenance is None:
        return DatasetProvenanceCheck(present=False, verified=False, problem="the model's provenance carries none")
    try:
        dp = _check_dataset(att.dataset_provenance, trust, bundle_dir)
    except ValueError as e:
        return DatasetProvenanceCheck(present=True, verified=False, problem=str(e))
    matches = dp.dataset_digest == att.dataset_digest
    return DatasetProvenanceCheck(
        present=True, verified=True, document_digest=dp.document_digest, dataset_digest=dp.dataset_digest,
        source_digest=dp.source_digest, matches_dataset=matches,
        problem=None if matches else (f"the dataset provenance is about {dp.dataset_digest}, not the dataset "
                                      f"{att.dataset_digest} the model's provenance names"))


def verify(bundle_dir: Path, trust: Trust | Path) -> Verified:
    """Raises ValueError naming what failed: signature, extra/missing/changed file, or attestation."""
    how = as_trust(trust)
    signed = verify_signature(bundle_dir, how)  # hashes every file in model/ against the signed manifest
    att = _verify_attestation(bundle_dir, how)
    digest = signed  # recomputed by that check: every file, no more and no fewer, hashes to what it lists
    if att.subject_digest != digest:
        raise ValueError(f"attestation is about {att.subject_digest}, not this model {digest}")
    return Verified(model_digest=digest, signed_digest=signed, signer=how.signer(bundle_dir / SIGNATURE),
                    attestation=att)


def evidence(bundle_dir: Path, name: str, trust: Trust | Path) -> SigningEvidence:
    """Checks signature and attestation separately; a failed check is evidence for the gate, not a crash."""
    how = as_trust(trust)
    model = bundle_dir / MODEL
    unverified = "0" * 64
    try:
        signed: str | None = verify_signature(bundle_dir, how)
        signer = how.signer(bundle_dir / SIGNATURE)
    except (ValueError, KeyError, OSError):
        signed, signer = None, "unverified"
    try:  # the model's provenance; the dataset provenance it carries is judged on its own below
        att: attestation.VerifiedAttestation | None = _verify_model_provenance(bundle_dir, how)
    except ValueError:
        att = None
    # Hashed once: a verified signature has just checked every file against its manifest.
    files = signed_manifest(bundle_dir / SIGNATURE) if signed is not None else tree_manifest(model)
    return SigningEvidence(
        subject=Subject(name=name, digest=manifest_digest(files)),
        files=sorted(files),
        formats={f: formats.sniff(model / f) for f in sorted(files)},
        signature=SignatureCheck(method=how.method, verified=signed is not None,
                                 signer=signer, signed_digest=signed or unverified),
        attestation=AttestationCheck(
            verified=att is not None,
            subject_digest=att.subject_digest if att else unverified,
            dataset_digest=att.dataset_digest if att else unverified,
            decision_digests=att.decision_digests if att else [],
        ),
        dataset_provenance=dataset_check(att, how, bundle_dir),
    )
