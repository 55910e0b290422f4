"""The gate as a pipeline task: evidence file + decision history in, verdict out, deny stops the run."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from securesystemslib.signer import CryptoSigner

from mlsec.config import Settings, policy_dir
from mlsec.gates.attest import (AttestationError, gate_key_path, gate_signer, gate_trust, read_history, sign_decision,
                                write_history)
from mlsec.gates.audit import AuditLog, AuditLogs, AuditSink, S3AuditLog
from mlsec.gates.decision import Decision
from mlsec.gates.engine import PolicyEngine, PolicyError, PolicyInput, default_engine
from mlsec.gates.gate import evaluate

log = logging.getLogger(__name__)


class _BrokenEngine:
    """Stands in when no engine could be built, so that failure is itself a recorded deny."""

    name = "unavailable"
    policy_sha256 = None

    def __init__(self, error: Exception) -> None:
        self.error = error

    def decide(self, gate: str, policy_input: PolicyInput) -> object:
        if isinstance(self.error, AttestationError):
            raise PolicyError(f"earlier decisions cannot be trusted: {self.error}")
        raise PolicyError(f"policy engine unavailable: {self.error}")


def configured_engine(settings: Settings) -> PolicyEngine:
    """The engine every gate uses here; one that cannot be built still yields a recorded deny."""
    try:
        return default_engine(policy_dir(), settings.opa_url, settings.opa_timeout_s)
    except (PolicyError, OSError) as e:
        return _BrokenEngine(e)


def configured_signer(settings: Settings, environment: str) -> CryptoSigner:
    """The key this process signs the environment's decisions (or, for "audit", checkpoints) with; made
    on first use only in a local run."""
    return gate_signer(environment, settings.key_dir, create=settings.deploy_target == "local")


def audit_sinks(settings: Settings) -> AuditSink:
    """The local log always; in a cluster, where every task is its own pod, the shared S3 log too.
    Wherever S3 is configured (a local run's SeaweedFS, the cluster's bucket) each log also publishes a
    checkpoint signed with the audit key after every append."""
    cluster = settings.deploy_target == "cluster"
    if not (settings.s3_endpoint or cluster):
        return AuditLogs([AuditLog(settings.audit_log)])
    from mlsec.gates.transparency import CheckpointStore
    from mlsec.registry.s3 import client_from_env

    # The audit writer's own credential (it reaches <bucket>/audit/ only) where one is configured: gate tasks
    # hold nothing else of S3. Without it, the ambient credentials (a user's own S3 and keys).
    s3 = client_from_env(os.environ.get("MLSEC_AUDIT_S3_CREDENTIALS_DIR") or None)
    signer = configured_signer(settings, "audit")
    trusted = gate_trust(settings.key_dir).for_env("audit")
    if cluster:  # a pod's own file starts empty in every pod: only the shared log can be checkpointed
        return AuditLogs([AuditLog(settings.audit_log), S3AuditLog(s3, settings.s3_bucket, signer=signer, keys=trusted)])
    return AuditLogs([AuditLog(settings.audit_log, CheckpointStore(s3, settings.s3_bucket), signer, trusted)])


def admission_token(decision: Decision, doc: dict[str, object], key: Path) -> str:
    """For an allowing deployment decision about a cluster release: the token (mlsec.admission, signed with the
    same gate key as the decision) by which the cluster's admission policy (manifests/admission.yaml) admits
    exactly the objects judged. Empty for any other decision."""
    from mlsec.admission import admissible, mint

    release, objects = doc.get("release"), doc.get("objects")
    if not (decision.gate == "deployment" and decision.allow and isinstance(release, dict)
            and release.get("target") == "cluster" and isinstance(objects, list)):
        return ""
    return mint(admissible(objects), decision.environment, decision.id, key)


def run_gate(gate: str, evidence_file: Path, history_file: Path | None, decision_file: Path,
             decisions_file: Path, environment: str | None = None, admission_file: Path | None = None) -> str:
    """Judges one stage's evidence. The history is believed only as far as it verifies: a forged or
    unsigned earlier decision is itself a recorded deny, and the new decision is signed as a VSA."""
    settings = Settings()
    env = environment or settings.environment
    signer = configured_signer(settings, env)
    try:
        doc = json.loads(evidence_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        doc = {"unreadable": str(e)}  # fails schema validation below: a deny that says why
    try:
        history = read_history(history_file, gate_trust(settings.key_dir)) if history_file else []
        engine = configured_engine(settings)
    except AttestationError as e:
        engine, history = _BrokenEngine(e), []
    decision = evaluate(gate, doc, environment=env, engine=engine, decisions=[s.decision for s in history],
                        audit=audit_sinks(settings))
    name = doc.get("subject", {}).get("name") if isinstance(doc.get("subject"), dict) else None
    signed = sign_decision(decision, str(name or "unknown"), signer)
    decision_file.parent.mkdir(parents=True, exist_ok=True)
    decision_file.write_text(decision.model_dump_json(indent=2))
    write_history(decisions_file, [*history, signed])
    if admission_file is not None:
        admission_file.write_text(admission_token(decision, doc, gate_key_path(env, settings.key_dir)))
    for w in decision.warn:
        log.warning("[%s] warning: %s", gate, w)
    print(decision.summary(), flush=True)
    return decision.result


def halt(decision_file: Path) -> None:
    """The Else branch of every gate: the run ends here, naming the reasons."""
    decision = Decision.model_validate_json(decision_file.read_text())
    raise SystemExit(f"pipeline stopped by the {decision.gate} gate: " + "; ".join(decision.deny))
