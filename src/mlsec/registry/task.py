"""The promote stage as a pipeline task: register, promote through the gate, plan the release."""

from __future__ import annotations

import os
from pathlib import Path

from mlsec.config import Settings
from mlsec.evidence import Subject, read_evidence
from mlsec.gates.decision import GateDenied, read_decisions, write_decisions
from mlsec.gates.task import audit_sinks, configured_engine
from mlsec.registry.s3 import client_from_env
from mlsec.registry.store import Registry
from mlsec.serve.deploy import free_port, local_objects, release_objects, render_chart
from mlsec.serve.evidence import DeploymentEvidence, Release
from mlsec.sign.methods import configured_trust
from mlsec.train.evidence import TrainingEvidence


def registry_from_env() -> Registry:
    settings = Settings()
    reg = Registry(client_from_env(), settings.s3_bucket, int(os.environ.get("MLSEC_RETENTION_DAYS", "30")))
    reg.ensure_bucket()
    return reg


def run(signed: Path, training_evidence: Path, decisions: Path, model_name: str, stage: str, author: str,
        decisions_out: Path, release_out: Path, environment: str | None = None,
        promotion_evidence_out: Path | None = None) -> None:
    settings = Settings()
    env = environment or settings.environment  # the same policy environment as the pipeline's other gates
    training = read_evidence(TrainingEvidence, training_evidence)
    history = read_decisions(decisions)
    trust = configured_trust(settings.key_dir)
    reg = registry_from_env()
    record = reg.register(model_name, signed, trust, dataset_digest=training.dataset_digest,
                          metrics=training.metrics, decisions=history, author=author)
    decision = reg.promote(model_name, record.version, stage, trust=trust,
                           engine=configured_engine(settings),
                           environment=env, author=author, audit=audit_sinks(settings),
                           evidence_out=promotion_evidence_out)
    write_decisions(decisions_out, [*history, decision])
    print(decision.summary(), flush=True)
    if not decision.allow:
        raise GateDenied(decision)
    namespace = os.environ.get("MLSEC_NAMESPACE", "mlsec-serving")
    if settings.deploy_target == "local":
        objects = local_objects(model_name, record.version, "127.0.0.1", free_port())
    else:
        image = os.environ.get("MLSEC_IMAGE", "")
        repo, _, digest = image.partition("@")
        objects = release_objects(render_chart(f"{model_name}-{stage}", namespace, {
            "model": {"name": model_name, "ref": record.version, "digest": record.model_digest},
            "image": {"repository": repo, "digest": digest},
            "s3": {"endpoint": settings.s3_endpoint or "", "bucket": settings.s3_bucket},
        }))
    DeploymentEvidence(
        subject=Subject(name=model_name, digest=record.model_digest),
        release=Release(model=model_name, version=record.version, stage=stage,
                        target="local" if settings.deploy_target == "local" else "cluster", namespace=namespace),
        objects=objects,
    ).write(release_out)
