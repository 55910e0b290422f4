"""Gates fail closed: anything that cannot be judged is a deny with the reason, recorded in the audit log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlsec.config import policy_dir
from mlsec.digest import canonical_json
from mlsec.gates.audit import AuditLog
from mlsec.gates.engine import InProcessEngine, PolicyError, PolicyInput
from mlsec.gates.gate import evaluate
from mlsec.gates.task import run_gate

from conftest import Trained


def test_good_evidence_allows(engine: InProcessEngine, trained: Trained) -> None:
    d = evaluate("data", trained.data_evidence, environment="dev", engine=engine)
    assert d.allow and d.deny == []
    assert d.subject == trained.data_evidence.subject.digest
    assert d.policy_sha256 == engine.policy_sha256


def test_missing_field_denies_naming_it(engine: InProcessEngine, trained: Trained) -> None:
    doc = trained.data_evidence.model_dump(mode="json")
    del doc["contract"]
    d = evaluate("data", doc, environment="dev", engine=engine)
    assert not d.allow
    assert any("'contract'" in r and "Field required" in r for r in d.deny)


def test_wrong_type_denies_naming_it(engine: InProcessEngine, trained: Trained) -> None:
    doc = trained.training_evidence.model_dump(mode="json")
    doc["metrics"]["accuracy"] = "very high"
    d = evaluate("training", doc, environment="dev", engine=engine)
    assert not d.allow and any("metrics.accuracy" in r for r in d.deny)


def test_unknown_gate_denies(engine: InProcessEngine, trained: Trained) -> None:
    d = evaluate("fast-track", trained.data_evidence.model_dump(mode="json"), environment="dev", engine=engine)
    assert not d.allow and "unknown gate 'fast-track'" in d.deny[0]


def test_unknown_environment_denies(engine: InProcessEngine, trained: Trained) -> None:
    d = evaluate("data", trained.data_evidence, environment="moon", engine=engine)
    assert not d.allow and any('no data policy for environment "moon"' in r for r in d.deny)


class _Raising:
    name, policy_sha256 = "broken", None

    def decide(self, gate: str, policy_input: PolicyInput) -> object:
        raise PolicyError("engine exploded")


class _Returning:
    name, policy_sha256 = "odd", None

    def __init__(self, value: object) -> None:
        self.value = value

    def decide(self, gate: str, policy_input: PolicyInput) -> object:
        return self.value


class _Recording(_Returning):
    def decide(self, gate: str, policy_input: PolicyInput) -> object:
        self.policy_input = policy_input
        return self.value


def test_policies_see_earlier_decisions_as_their_facts(engine: InProcessEngine, trained: Trained) -> None:
    first = evaluate("data", trained.data_evidence, environment="dev", engine=engine)
    recorder = _Recording({"allow": True, "deny": [], "warn": []})
    evaluate("training", trained.training_evidence, environment="dev", engine=recorder, decisions=[first])
    assert recorder.policy_input.doc["decisions"] == [{
        "gate": "data", "environment": "dev", "allow": True,
        "subject": trained.data_evidence.subject.digest, "policy_sha256": engine.policy_sha256,
    }]
    # The in-process engine's bytes are exactly the document's canonical JSON.
    assert recorder.policy_input.json == canonical_json(recorder.policy_input.doc)


def test_evidence_from_a_file_reaches_the_policy_normalised(engine: InProcessEngine, trained: Trained) -> None:
    """Evidence read from JSON is validated, and the policy judges the validated form, not the raw text."""
    raw = json.loads(trained.training_evidence.model_dump_json())
    raw["created"] = raw["created"].replace("Z", "+00:00")
    recorder = _Recording({"allow": True, "deny": [], "warn": []})
    evaluate("training", raw, environment="dev", engine=recorder)
    assert recorder.policy_input.doc["evidence"] == trained.training_evidence.model_dump(mode="json")
    assert recorder.policy_input.json == canonical_json(recorder.policy_input.doc)


def test_engine_error_denies(trained: Trained) -> None:
    d = evaluate("data", trained.data_evidence, environment="dev", engine=_Raising())
    assert not d.allow and d.deny == ["engine exploded"]


@pytest.mark.parametrize("value", [None, True, {"allow": "yes"}, {"allow": True, "deny": [1]}, [1, 2],
                                   {"allow": True, "deny": ""}, {"allow": False, "deny": "no"}])
def test_malformed_decision_denies(trained: Trained, value: object) -> None:
    d = evaluate("data", trained.data_evidence, environment="dev", engine=_Returning(value))
    assert not d.allow and d.deny


def test_allow_with_reasons_is_a_deny(trained: Trained) -> None:
    d = evaluate("data", trained.data_evidence, environment="dev",
                 engine=_Returning({"allow": True, "deny": ["but no"], "warn": []}))
    assert not d.allow and d.deny == ["but no"]


def test_policy_without_a_decision_denies(tmp_path: Path, trained: Trained) -> None:
    (tmp_path / "data.rego").write_text("package mlsec.gates.data\n\nallow := true\n")
    d = evaluate("data", trained.data_evidence, environment="dev", engine=InProcessEngine(tmp_path))
    assert not d.allow and "data.mlsec.gates.data.decision is undefined" in d.deny[0]


def test_policy_syntax_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "policies"
    shutil.copytree(policy_dir(), broken)
    (broken / "training.rego").write_text((broken / "training.rego").read_text() + "\ndeny contains msg if {\n")
    with pytest.raises(PolicyError, match=r"training.rego:\d+"):
        InProcessEngine(broken)


def test_gate_task_with_broken_policies_denies_and_audits(tmp_path: Path, trained: Trained,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "policies"
    shutil.copytree(policy_dir(), broken)
    (broken / "data.rego").write_text("package mlsec.gates.data\ndecision := {")
    monkeypatch.setenv("MLSEC_POLICY_DIR", str(broken))
    monkeypatch.setenv("MLSEC_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    trained.data_evidence.write(tmp_path / "evidence.json")
    result = run_gate("data", tmp_path / "evidence.json", None, tmp_path / "d.json", tmp_path / "ds.json", "dev")
    assert result == "deny"
    decision = json.loads((tmp_path / "d.json").read_text())
    assert "policy engine unavailable" in decision["deny"][0] and "data.rego" in decision["deny"][0]
    assert AuditLog(tmp_path / "audit.jsonl").verify() == 1


def test_gate_task_with_unreadable_evidence_denies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSEC_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    (tmp_path / "evidence.json").write_text("{not json")
    assert run_gate("data", tmp_path / "evidence.json", None, tmp_path / "d.json", tmp_path / "ds.json") == "deny"


def test_audit_log_chain_detects_edit_and_truncation(tmp_path: Path, engine: InProcessEngine,
                                                     trained: Trained) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for env in ("dev", "staging", "prod"):
        evaluate("data", trained.data_evidence, environment=env, engine=engine, audit=log)
    assert log.verify() == 3
    lines = log.path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["result"] = "allow" if entry["result"] == "deny" else "deny"
    log.path.write_text("\n".join([lines[0], json.dumps(entry, sort_keys=True), lines[2]]) + "\n")
    with pytest.raises(ValueError, match=":2: entry was modified"):
        log.verify()
    log.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(ValueError, match=":2: chain broken"):
        log.verify()
