"""The gate as a pipeline task: evidence file + decision history in, verdict out, deny stops the run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mlsec.config import Settings, policy_dir
from mlsec.gates.audit import AuditLog, AuditLogs, AuditSink, S3AuditLog
from mlsec.gates.decision import Decision, read_decisions, write_decisions
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
        raise PolicyError(f"policy engine unavailable: {self.error}")


def configured_engine(settings: Settings) -> PolicyEngine:
    """The engine every gate uses here; one that cannot be built still yields a recorded deny."""
    try:
        return default_engine(policy_dir(), settings.opa_url, settings.opa_timeout_s)
    except (PolicyError, OSError) as e:
        return _BrokenEngine(e)


def audit_sinks(settings: Settings) -> AuditSink:
    """The local log always; in a cluster, where every task is its own pod, the shared S3 log too."""
    sinks: list[AuditSink] = [AuditLog(settings.audit_log)]
    if settings.deploy_target == "cluster":
        from mlsec.registry.s3 import client_from_env

        sinks.append(S3AuditLog(client_from_env(), settings.s3_bucket))
    return AuditLogs(sinks)


def run_gate(gate: str, evidence_file: Path, history_file: Path | None, decision_file: Path,
             decisions_file: Path, environment: str | None = None) -> str:
    settings = Settings()
    env = environment or settings.environment
    history: list[Decision] = read_decisions(history_file) if history_file else []
    try:
        doc = json.loads(evidence_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        doc = {"unreadable": str(e)}  # fails schema validation below: a deny that says why
    decision = evaluate(gate, doc, environment=env, engine=configured_engine(settings), decisions=history,
                        audit=audit_sinks(settings))
    decision_file.parent.mkdir(parents=True, exist_ok=True)
    decision_file.write_text(decision.model_dump_json(indent=2))
    write_decisions(decisions_file, [*history, decision])
    for w in decision.warn:
        log.warning("[%s] warning: %s", gate, w)
    print(decision.summary(), flush=True)
    return decision.result


def halt(decision_file: Path) -> None:
    """The Else branch of every gate: the run ends here, naming the reasons."""
    decision = Decision.model_validate_json(decision_file.read_text())
    raise SystemExit(f"pipeline stopped by the {decision.gate} gate: " + "; ".join(decision.deny))
