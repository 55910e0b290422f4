"""Incident response played end to end (docs/incident-response.md): a stolen key sweeping the model is
flagged, the operator blocks it with `mlsec incident block-client`, the running server refuses it from the
next request, and the incident log holds what was done; a bad version is revoked and its aliases go back to
the last good version through the promotion gate."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mlsec import incident
from mlsec.cli import main
from mlsec.gates.engine import InProcessEngine
from mlsec.registry.store import Registry, RegistryError
from mlsec.sign import keys

from conftest import GateKeys, Signed
from registry_support import promote
from serve_support import GOOD, V1, Running, post, start
from test_registry import _second_model

CLIENTS = ["alice", "thief"]


@pytest.fixture
def srv(tmp_path: Path, signed: Signed, key_pair: keys.KeyPair) -> Iterator[Running]:
    running = start(tmp_path, signed.bundle, key_pair.public_key, CLIENTS, rate="1000/second",
                    blocklist=str(tmp_path / "blocklist.json"))
    yield running
    running.stop()


def _block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str) -> None:
    monkeypatch.setenv("MLSEC_HOME", str(tmp_path / "home"))
    assert main(["incident", "block-client", client, "--reason", "stolen key", "--by", "oncall",
                 "--blocklist", str(tmp_path / "blocklist.json")]) == 0


def _refused_soon(srv: Running, key: str) -> int:
    deadline, status = time.monotonic() + 5, 0
    while time.monotonic() < deadline:
        status, _ = post(srv.connect(), V1, {"instances": [GOOD]}, key)
        if status == 403:
            break
        time.sleep(0.05)
    return status


def test_blocked_client_is_refused_by_the_running_server(srv: Running, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert post(srv.connect(), V1, {"instances": [GOOD]}, srv.keys["thief"])[0] == 200
    pid = srv.proc.pid
    _block(tmp_path, monkeypatch, "thief")
    assert _refused_soon(srv, srv.keys["thief"]) == 403
    assert post(srv.connect(), V1, {"instances": [GOOD]}, srv.keys["alice"])[0] == 200
    assert srv.proc.pid == pid and srv.proc.poll() is None  # no restart
    assert srv.wait_audit(client="thief", status=403)


def test_extraction_tabletop_sweep_flag_block_audit(srv: Running, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Sweep (the thief's move), flag (the monitor), block (the operator), audit trail (both logs)."""
    rows = np.random.default_rng(5).uniform([18, 0, 0, 0, 0, 0], [120, 5e6, 5e6, 100, 200, 1], size=(150, 6))
    conn = srv.connect()
    for batch in np.array_split(rows, 3):
        status, _ = post(conn, V1, {"instances": [dict(zip(srv.features, map(float, r))) for r in batch]},
                         srv.keys["thief"])
        assert status in (200, 429)
    # Detect: the request log names the flagged client (what the on-call reads from the log pipeline).
    flagged = srv.wait_audit(client="thief")
    assert any("input-space sweep" in (e.get("flagged") or "") for e in flagged), flagged[-3:]
    # Contain: block the client the log names.
    _block(tmp_path, monkeypatch, "thief")
    assert _refused_soon(srv, srv.keys["thief"]) == 403
    assert post(srv.connect(), V1, {"instances": [GOOD]}, srv.keys["alice"])[0] == 200
    # Learn: the incident log holds the action, chained; an edit to it is found.
    log_path = incident.incident_log(tmp_path / "home")
    (entry,) = incident.verify_log(log_path)
    assert entry["action"] == "block-client" and entry["client"] == "thief" and entry["by"] == "oncall"
    assert srv.wait_audit(client="thief", decision="blocked", status=403)


def test_incident_log_edit_is_found(tmp_path: Path) -> None:
    path = tmp_path / "incidents.jsonl"
    incident.record(path, "block-client", client="a")
    incident.record(path, "block-client", client="b")
    assert len(incident.verify_log(path)) == 2
    path.write_text(path.read_text().replace('"client": "a"', '"client": "z"'))
    with pytest.raises(ValueError, match="chain broken"):
        incident.verify_log(path)


def test_unreadable_blocklist_keeps_the_last_one(tmp_path: Path) -> None:
    path = tmp_path / "blocklist.json"
    incident.block(path, "thief", "stolen", "oncall")
    watch = incident.Blocklist(path)
    assert watch.blocked("thief") and not watch.blocked("alice")
    path.write_text("{not json")
    assert watch.blocked("thief")
    path.write_text(json.dumps({"blocked": {}}))
    assert not watch.blocked("thief")


def test_revoke_model_moves_the_alias_back_through_the_promotion_gate(
        tmp_path: Path, registry: Registry, signed: Signed, key_pair: keys.KeyPair, engine: InProcessEngine,
        gate_keys: GateKeys) -> None:
    v1 = signed.register(registry, key_pair)
    v2 = _second_model(tmp_path, signed, key_pair, engine, gate_keys).register(registry, key_pair)
    assert promote(registry, v1, "dev", key_pair, engine, gate_keys).allow
    assert promote(registry, v2, "dev", key_pair, engine, gate_keys).allow
    moves = incident.revoke_model(
        registry, "credit", v2, "backdoor found", "oncall", gate_keys.signer("dev"),
        lambda stage: dict(trust=key_pair.public_key, engine=engine, environment="dev",
                           signer=gate_keys.signer("dev"), author="oncall"))
    assert [(m.stage, m.to, m.allowed) for m in moves] == [("dev", v1, True)]
    assert registry.resolve("credit", "dev")[0] == v1 and registry.is_revoked("credit", v2)
    with pytest.raises(RegistryError, match="revoked"):
        registry.pull("credit", v2, tmp_path / "pulled", key_pair.public_key)
