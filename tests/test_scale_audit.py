"""Incremental audit verification (issue 17): from the newest checkpoint this verifier checked before, only
what came after is read, and it must extend that signed tree to every newer signed checkpoint. The tests
play the rewrites, truncations and forged witnesses it must still refuse."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from mlsec.gates.attest import create_key, load_signer
from mlsec.gates.audit import AuditLog
from mlsec.gates.transparency import CheckpointStore, LogError, Witness
from mlsec.registry.store import Registry

from test_audit_transparency import _decision, _rewrite
from test_audit_transparency import cli_env as cli_env  # the fixture


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> CryptoSigner:
    path = tmp_path_factory.mktemp("audit-key") / "audit.key"
    create_key(path)
    return load_signer(path)


@dataclass
class Chain:
    writer: AuditLog
    verifier: AuditLog  # holds only the public key
    witness: Witness


@pytest.fixture
def chain(tmp_path: Path, registry: Registry, signer: CryptoSigner) -> Chain:
    store = CheckpointStore(registry.s3, registry.bucket, retention_days=1)
    writer = AuditLog(tmp_path / "decisions.jsonl", store, signer, [signer.public_key])
    return Chain(writer, AuditLog(writer.path, store, None, [signer.public_key]),
                 Witness(tmp_path / "state" / "witness.json"))


def _append(log: AuditLog, start: int, n: int) -> None:
    for i in range(start, start + n):
        log.append(_decision(i, allow=i % 2 == 1))


def test_incremental_verify_reads_only_what_came_after_the_witness(chain: Chain) -> None:
    writer, verifier, witness = chain.writer, chain.verifier, chain.witness
    _append(writer, 1, 6)
    assert verifier.check(witness).entries == 6  # full, and remembered
    _append(writer, 7, 3)
    report = verifier.check(witness, incremental=True)
    assert (report.entries, report.checkpoints, report.anchored) == (9, 3, 9)  # 3 new checkpoints, not 9
    assert json.loads(witness.path.read_text())["checkpoint"]  # moved on to size 9
    assert verifier.check(witness, incremental=True).checkpoints == 0
    _append(writer, 10, 1)
    assert verifier.check(witness, incremental=True).entries == verifier.check().entries == 10


def test_incremental_verify_refuses_rewrites_and_truncations_after_the_witness(chain: Chain) -> None:
    writer, verifier, witness = chain.writer, chain.verifier, chain.witness
    _append(writer, 1, 4)
    verifier.check(witness)
    _append(writer, 5, 4)
    lines = writer.path.read_text().splitlines()
    writer.path.write_text("\n".join(_rewrite(lines, 6)) + "\n")  # every later hash recomputed
    with pytest.raises(LogError, match="entry 6 was modified"):
        verifier.check(witness, incremental=True)
    writer.path.write_text("\n".join(lines[:6]) + "\n")
    with pytest.raises(LogError, match="log truncated to 6 entries but the signed checkpoint says 8"):
        verifier.check(witness, incremental=True)
    writer.path.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(LogError, match="log truncated to .* bytes but 4 entries signed"):
        verifier.check(witness, incremental=True)
    writer.path.write_text("\n".join(_rewrite(lines, 2)) + "\n")  # before the witness: the full verify's job
    with pytest.raises(LogError, match="entry 2 was modified"):
        verifier.check(witness)


def test_forged_witness_is_refused_and_a_stale_one_costs_only_time(chain: Chain, tmp_path: Path, registry: Registry) -> None:
    writer, verifier, witness = chain.writer, chain.verifier, chain.witness
    _append(writer, 1, 3)
    verifier.check(witness)
    stale = witness.path.read_text()
    _append(writer, 4, 3)
    verifier.check(witness, incremental=True)
    witness.path.write_text(stale)  # an older genuine witness: everything after it is checked again
    assert verifier.check(witness, incremental=True).checkpoints == 3
    other = tmp_path / "other.key"
    create_key(other)
    forger = AuditLog(tmp_path / "forged.jsonl", CheckpointStore(registry.s3, registry.bucket, retention_days=1),
                      load_signer(other), log_id=writer.origin + "-forged")
    forger.append(_decision(1, allow=True))
    body = registry.s3.get_object(Bucket=registry.bucket, Key=forger.checkpoints.key(forger.origin, 1))["Body"].read()
    doc = json.loads(stale)
    witness.path.write_text(json.dumps({**doc, "checkpoint": body.decode()}))
    with pytest.raises(LogError, match="checkpoint signature invalid"):
        verifier.check(witness, incremental=True)


def test_cli_incremental_verify(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlsec.cli import main
    from mlsec.config import Settings
    from mlsec.gates.task import audit_sinks

    sink = audit_sinks(Settings())
    for i in range(1, 4):
        sink.append(_decision(i, allow=True))
    assert main(["audit", "verify", "--incremental"]) == 0  # no witness yet: everything, then remembered
    assert "3 entries, chain intact, consistent with 3 signed checkpoints" in capsys.readouterr().out
    for i in range(4, 6):
        sink.append(_decision(i, allow=True))
    assert main(["audit", "verify", "--incremental"]) == 0
    assert "5 entries, chain intact, consistent with 2 signed checkpoints" in capsys.readouterr().out
    sink.append(_decision(6, allow=False))
    lines = cli_env.read_text().splitlines()
    cli_env.write_text("\n".join(_rewrite(lines, 6)) + "\n")
    assert main(["audit", "verify", "--incremental"]) == 1
    assert "entry 6 was modified" in capsys.readouterr().err
