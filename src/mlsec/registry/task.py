"""The promote stage as a pipeline task: register, promote through the gate, plan the release."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlsec.config import Settings
from mlsec.config import policy_dir
from mlsec.evidence import Subject, read_evidence
from mlsec.gates.attest import gate_trust, read_history, write_history
from mlsec.gates.decision import GateDenied
from mlsec.gates.task import audit_sinks, configured_engine, configured_signer
from mlsec.ingest.evidence import DataEvidence
from mlsec.registry import reference
from mlsec.registry.s3 import client_from_env
from mlsec.registry.stages import governing_environments
from mlsec.registry.store import Registry
from mlsec.serve.deploy import free_port, local_objects, release_objects, render_release
from mlsec.serve.evidence import DeploymentEvidence, ImageSignature, Release
from mlsec.sign.methods import configured_trust
from mlsec.train.evidence import TrainingEvidence


def registry_from_env() -> Registry:
    settings = Settings()
    reg = Registry(client_from_env(), settings.s3_bucket, int(os.environ.get("MLSEC_RETENTION_DAYS", "30")),
                   gates=gate_trust(settings.key_dir), stage_envs=governing_environments(policy_dir()))
    reg.ensure_bucket(create=False)  # run-time identities verify the bucket; only its setup creates it
    return reg


def run(signed: Path, training_evidence: Path, data_evidence: Path, decisions: Path, model_name: str, stage: str,
        author: str, decisions_out: Path, release_out: Path, environment: str | None = None,
        promotion_evidence_out: Path | None = None, profile: Path | None = None) -> None:
    """profile: ingest's profile artifact, stored as the next ingest's reference if the data evidence that a
    signed data decision judged names its bytes (mlsec.registry.reference.store_accepted)."""
    settings = Settings()
    env = environment or settings.environment  # the same policy environment as the pipeline's other gates
    history = read_history(decisions, gate_trust(settings.key_dir))  # only decisions a trusted gate key signed
    trust = configured_trust(settings.key_dir)
    reg = registry_from_env()
    data = read_evidence(DataEvidence, data_evidence)
    record = reg.register(model_name, signed, trust, evidence={
        "data": data, "training": read_evidence(TrainingEvidence, training_evidence)}, decisions=history, author=author)
    promotion = reg.promote(model_name, record.version, stage, trust=trust, engine=configured_engine(settings),
                            environment=env, signer=configured_signer(settings, env),
                            author=author, audit=audit_sinks(settings), evidence_out=promotion_evidence_out)
    write_history(decisions_out, [*history, promotion])
    decision = promotion.decision
    print(decision.summary(), flush=True)
    if not decision.allow:
        raise GateDenied(decision)
    # The accepted dataset's profile, signed beside the model: the next ingest's reference (issue 12).
    reference.store_accepted(reg, model_name, record.version, record.model_digest, data,
                             reference.read_profile(profile) if profile is not None else None, history,
                             configured_signer(settings, env))
    namespace = os.environ.get("MLSEC_NAMESPACE", "mlsec-serving")
    images: list[ImageSignature] = []
    if settings.deploy_target == "local":
        objects = local_objects(model_name, record.version, "127.0.0.1", free_port())
    else:
        objects = cluster_release(model_name, record.version, record.model_digest, stage, env, namespace, settings)
        images = image_signatures(settings)
    DeploymentEvidence(
        images=images,
        subject=Subject(name=model_name, digest=record.model_digest),
        release=Release(model=model_name, version=record.version, stage=stage,
                        target="local" if settings.deploy_target == "local" else "cluster", namespace=namespace),
        objects=objects,
    ).write(release_out)


def cluster_release(model_name: str, version: str, model_digest: str, stage: str, env: str, namespace: str,
                    settings: Settings) -> list[dict[str, Any]]:
    """The objects the serve task applies: the chart with the environment's values file (what the platform team
    installed the release with), then this model version and the image the pipeline runs in."""
    repo, _, digest = os.environ.get("MLSEC_IMAGE", "").partition("@")
    return release_objects(render_release(f"{model_name}-{stage}", namespace, env, {
        "model": {"name": model_name, "ref": version, "digest": model_digest},
        "image": {"repository": repo, "digest": digest},
        "s3": {"endpoint": settings.s3_endpoint or "", "bucket": settings.s3_bucket},
    }))


IMAGE_SIGNATURE = "/etc/mlsec/image/image.sig.json"  # ConfigMap mlsec-image-signature, mounted by the pipeline


def image_signatures(settings: Settings) -> list[ImageSignature]:
    """The image the release runs (MLSEC_IMAGE), with its signature checked against the model signing key;
    an image not pinned by digest has nothing to check (the deployment gate refuses it anyway)."""
    from mlsec.imagesig import signed_image
    from mlsec.sign import keys

    image = os.environ.get("MLSEC_IMAGE", "")
    if "@sha256:" not in image:
        return []
    signature = Path(os.environ.get("MLSEC_IMAGE_SIGNATURE") or IMAGE_SIGNATURE)
    checked = signed_image(image, signature if signature.exists() else None, keys.public_key(settings.key_dir))
    return [ImageSignature(**checked)]
