"""The cluster path: gates query an OPA server over HTTP (opa-python-client) and deny when it fails."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mlsec.config import policy_dir
from mlsec.gates.engine import HttpEngine, InProcessEngine, PolicyError
from mlsec.gates.gate import evaluate
from mlsec.gates.task import run_gate

from conftest import Trained
from opa_data_api import DataApiServer


def test_http_decision_equals_in_process(engine: InProcessEngine, trained: Trained) -> None:
    with DataApiServer(policy_dir()) as server:
        remote = HttpEngine(server.url, timeout_s=2)
        for gate, ev in (("data", trained.data_evidence), ("training", trained.training_evidence)):
            a = evaluate(gate, ev, environment="prod", engine=remote)
            b = evaluate(gate, ev, environment="prod", engine=engine)
            assert (a.allow, a.deny, a.warn) == (b.allow, b.deny, b.warn)
            assert a.engine == "opa-http"
            # The server reports the bundle it serves: the same digest the in-process engine records.
            assert a.policy_sha256 == b.policy_sha256 == engine.policy_sha256


def test_server_without_mlsec_bundle_is_refused(trained: Trained) -> None:
    with DataApiServer(policy_dir(), as_bundle=False) as server:
        with pytest.raises(PolicyError, match="exactly one bundle from `mlsec policy bundle`"):
            HttpEngine(server.url, timeout_s=2)


def test_server_with_two_mlsec_bundles_is_refused(trained: Trained) -> None:
    with DataApiServer(policy_dir()) as server:
        other = {"manifest": {"revision": "x", "metadata": {"mlsec_policy_sha256": "0" * 64}}}
        server.engine.opa.add_data({"bundles": {"other.tar.gz": other, "junk": 1}}, "system")
        with pytest.raises(PolicyError, match="found: 0000"):
            HttpEngine(server.url, timeout_s=2)


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    return f"http://127.0.0.1:{port}"


def test_server_down_at_start_is_a_recorded_deny(tmp_path: Path, trained: Trained,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSEC_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("MLSEC_OPA_URL", _dead_url())
    trained.data_evidence.write(tmp_path / "ev.json")
    assert run_gate("data", tmp_path / "ev.json", None, tmp_path / "d.json", tmp_path / "ds.json", "dev") == "deny"
    reasons = json.loads((tmp_path / "d.json").read_text())["deny"]
    assert "policy engine unavailable" in reasons[0] and "ConnectionError" in reasons[0]
    assert '"result": "deny"' in (tmp_path / "audit.jsonl").read_text()


def test_server_gone_mid_run_denies(trained: Trained) -> None:
    with DataApiServer(policy_dir()) as server:
        remote = HttpEngine(server.url, timeout_s=0.5)
    d = evaluate("data", trained.data_evidence, environment="dev", engine=remote)
    assert not d.allow and "ConnectionError" in d.deny[0]


def test_slow_server_denies_on_timeout(trained: Trained) -> None:
    with DataApiServer(policy_dir(), delay_s=1.0) as server:
        d = evaluate("data", trained.data_evidence, environment="dev", engine=HttpEngine(server.url, timeout_s=0.2))
    assert not d.allow and "Timeout" in d.deny[0]


def test_undefined_decision_on_server_denies(tmp_path: Path, trained: Trained) -> None:
    (tmp_path / "empty.rego").write_text("package mlsec.gates.other\nx := 1\n")
    with DataApiServer(tmp_path) as server:
        d = evaluate("data", trained.data_evidence, environment="dev", engine=HttpEngine(server.url, timeout_s=2))
    assert not d.allow and "no result" in d.deny[0]


def test_gate_task_uses_server_when_configured(tmp_path: Path, trained: Trained,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSEC_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    trained.data_evidence.write(tmp_path / "ev.json")
    with DataApiServer(policy_dir()) as server:
        monkeypatch.setenv("MLSEC_OPA_URL", server.url)
        assert run_gate("data", tmp_path / "ev.json", None, tmp_path / "d.json", tmp_path / "ds.json", "dev") == "allow"
    assert '"engine": "opa-http"' in (tmp_path / "d.json").read_text()


def test_bad_url_is_refused() -> None:
    with pytest.raises(PolicyError, match="not an http"):
        HttpEngine("ftp://opa", timeout_s=1)
