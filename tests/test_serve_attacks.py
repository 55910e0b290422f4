"""Attacks on the serve task (threat T08): the release it is handed is a pipeline artifact, which anyone who
can write the pipeline's artifact store can change after the deployment gate judged it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlsec.digest import sha256_json
from mlsec.gates.attest import create_key, load_signer, sign_decision, write_history
from mlsec.gates.decision import Decision
from mlsec.serve import task

from conftest import GateKeys

DIGEST = "072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed"


def _release(image: str) -> dict[str, Any]:
    pod = {"automountServiceAccountToken": False, "containers": [{"name": "server", "image": image}]}
    return {"kind": "mlsec.evidence.deployment/v1", "subject": {"name": "credit", "digest": DIGEST},
            "release": {"model": "credit", "version": DIGEST[:16], "stage": "prod", "target": "cluster",
                        "namespace": "serving"},
            "objects": [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "server", "namespace": "serving"},
                         "spec": {"template": {"spec": pod}}}]}


def _allowed(doc: dict[str, Any]) -> Decision:
    return Decision(gate="deployment", environment="prod", allow=True, deny=[], subject=DIGEST,
                    evidence_sha256=sha256_json(doc), policy_sha256=None, engine="opa")


def test_T08_release_changed_after_the_deployment_gate_is_not_applied(tmp_path: Path, gate_keys: GateKeys,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate allowed one release (signed prod decision); the attacker rewrites the release artifact to run
    their image, then forges a decision for it with a key of their own. The serve task applies neither."""
    monkeypatch.setenv("MLSEC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLSEC_GATE_TRUST_DIR", str(gate_keys.dir))
    good = _release("ghcr.io/mlsec/mlsec@sha256:" + "ab" * 32)
    evil = _release("registry.example/evil@sha256:" + "cd" * 32)
    release, decisions, out = tmp_path / "release.json", tmp_path / "decisions.json", tmp_path / "endpoint.json"
    write_history(decisions, [sign_decision(_allowed(good), "credit", gate_keys.signer("prod"))])
    release.write_text(json.dumps(evil))
    with pytest.raises(RuntimeError, match="no allowing deployment decision for exactly these objects"):
        task.run(release, decisions, out)
    create_key(tmp_path / "attacker.key")
    write_history(decisions, [sign_decision(_allowed(evil), "credit", load_signer(tmp_path / "attacker.key"))])
    with pytest.raises(RuntimeError, match="deployment decision cannot be trusted"):
        task.run(release, decisions, out)
    assert not out.exists()
