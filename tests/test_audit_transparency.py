"""The audit log as a transparency log, attacked on a real SeaweedFS by someone who holds the S3
credentials and can write the log file, but not the audit signing key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from pymerkle import InmemoryTree
from securesystemslib.signer import CryptoSigner

from mlsec.cli import main
from mlsec.digest import sha256_json
from mlsec.gates.attest import create_key, load_signer, sign_statement
from mlsec.gates.audit import GENESIS, AuditLog, S3AuditLog
from mlsec.gates.decision import Decision
from mlsec.gates.transparency import Checkpoint, CheckpointStore, Frontier, LogError, leaf_hash
from mlsec.registry.store import Registry

from conftest import bucket_env


def _decision(i: int, allow: bool) -> Decision:
    return Decision(gate="data", environment="dev", allow=allow, deny=[] if allow else [f"reason {i}"],
                    subject=f"{i:064x}", evidence_sha256=f"{i + 1:064x}", policy_sha256="ab" * 32, engine="test")


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> CryptoSigner:
    path = tmp_path_factory.mktemp("audit-key") / "audit.key"
    create_key(path)
    return load_signer(path)


@pytest.fixture(scope="module")
def attacker(tmp_path_factory: pytest.TempPathFactory) -> CryptoSigner:
    path = tmp_path_factory.mktemp("attacker-key") / "audit.key"
    create_key(path)
    return load_signer(path)


def _log(tmp_path: Path, registry: Registry, signer: CryptoSigner, n: int) -> AuditLog:
    log = AuditLog(tmp_path / "decisions.jsonl", CheckpointStore(registry.s3, registry.bucket, retention_days=1),
                   signer, [signer.public_key])
    for i in range(1, n + 1):
        log.append(_decision(i, allow=i % 2 == 1))  # even entries are denies
    return log


def _verifier(log: AuditLog) -> AuditLog:
    """What `audit verify` uses: the trusted public key only, no signer to fall back on."""
    return AuditLog(log.path, log.checkpoints, None, list(log.keys))


def _rewrite(lines: list[str], index: int) -> list[str]:
    """deny -> allow at entry `index` (1-based), every later hash recomputed: the chain verifies again."""
    out, prev = [], GENESIS
    for i, line in enumerate(lines, start=1):
        entry = json.loads(line)
        if i == index:
            entry["result"], entry["reasons"] = "allow", []
        entry["prev_sha256"] = prev
        entry.pop("entry_sha256")
        entry["entry_sha256"] = prev = sha256_json(entry)
        out.append(json.dumps(entry, sort_keys=True))
    return out


def _checkpoint_keys(log: AuditLog) -> list[str]:
    assert log.checkpoints is not None
    return [log.checkpoints.key(log.origin, n) for n in log.checkpoints.sizes(log.origin)]


def test_frontier_roots_are_rfc6962_roots() -> None:
    tree, f = InmemoryTree(), Frontier()
    assert f.root() == tree.get_root()  # the empty tree: SHA-256 of nothing
    for i in range(1, 70):
        data = f"entry {i}".encode()
        tree.append_entry(data)
        f = f.append(leaf_hash(data))
        assert f.root() == tree.get_root(), i
        assert Frontier.from_json(f.size, f.to_json()) == f


def test_honest_log_of_many_appends_verifies(tmp_path: Path, registry: Registry, signer: CryptoSigner) -> None:
    log = _log(tmp_path, registry, signer, 40)
    report = _verifier(log).check()
    assert (report.entries, report.checkpoints, report.anchored) == (40, 40, 40)
    assert _verifier(log).verify() == 40
    # The checkpoint objects are write-once and COMPLIANCE-locked: nobody deletes one.
    key = _checkpoint_keys(log)[-1]
    head = registry.s3.head_object(Bucket=registry.bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError):
        registry.s3.delete_object(Bucket=registry.bucket, Key=key, VersionId=head["VersionId"],
                                  BypassGovernanceRetention=True)


def test_rewritten_entry_with_every_hash_recomputed_is_found(tmp_path: Path, registry: Registry,
                                                             signer: CryptoSigner) -> None:
    log = _log(tmp_path, registry, signer, 8)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(_rewrite(lines, 4)) + "\n")
    AuditLog(tmp_path / "chain-only.jsonl").path.write_text(log.path.read_text())
    assert AuditLog(tmp_path / "chain-only.jsonl").verify() == 8  # the hash chain alone is fooled
    with pytest.raises(LogError, match="entry 4 was modified: the log is inconsistent with the signed checkpoint of size 4"):
        _verifier(log).check()


def test_truncated_emptied_and_deleted_logs_are_refused(tmp_path: Path, registry: Registry,
                                                        signer: CryptoSigner) -> None:
    log = _log(tmp_path, registry, signer, 5)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(LogError, match="log truncated to 3 entries but the signed checkpoint says 5"):
        _verifier(log).check()
    with pytest.raises(LogError, match="shorter .* than after its last append"):  # the writer refuses too
        log.append(_decision(9, True))
    log.path.write_text("")
    with pytest.raises(LogError, match="log emptied: 0 entries but the signed checkpoint says 5"):
        _verifier(log).check()
    log.path.unlink()
    with pytest.raises(LogError, match="was deleted but the signed checkpoint says 5"):
        _verifier(log).check()


def test_a_fresh_log_in_place_of_the_old_cannot_be_checkpointed(tmp_path: Path, registry: Registry,
                                                                signer: CryptoSigner) -> None:
    """The attacker deletes the log and its writer's state: the honest writer starts again at 1, and
    the first checkpoint it signs collides with the one that already exists."""
    log = _log(tmp_path, registry, signer, 3)
    log.path.unlink()
    log.path.with_name(log.path.name + ".tree").unlink()
    with pytest.raises(LogError, match="checkpoint for 1 entries already exists"):
        log.append(_decision(1, True))


def test_deleting_or_overwriting_checkpoints_changes_nothing(tmp_path: Path, registry: Registry,
                                                             signer: CryptoSigner) -> None:
    log = _log(tmp_path, registry, signer, 6)
    for key in _checkpoint_keys(log):  # delete markers on every checkpoint: list_objects sees none
        registry.s3.delete_object(Bucket=registry.bucket, Key=key)
    assert log.checkpoints is not None and log.checkpoints.sizes(log.origin) == []
    log.path.write_text("\n".join(log.path.read_text().splitlines()[:2]) + "\n")
    with pytest.raises(LogError, match="log truncated to 2 entries but the signed checkpoint says 6"):
        _verifier(log).check()


def test_overwritten_checkpoint_is_refused(tmp_path: Path, registry: Registry, signer: CryptoSigner) -> None:
    log = _log(tmp_path, registry, signer, 3)
    key = _checkpoint_keys(log)[-1]
    registry.s3.put_object(Bucket=registry.bucket, Key=key, Body=b'{"payload": "garbage"}')  # a newer version
    with pytest.raises(LogError, match=r"000000000003.json \(version .*\): checkpoint signature invalid"):
        _verifier(log).check()


def test_checkpoint_forged_with_another_key_is_refused(tmp_path: Path, registry: Registry, signer: CryptoSigner,
                                                       attacker: CryptoSigner) -> None:
    """The attacker rewrites entry 2 and signs checkpoints of the rewritten log with a key of their own."""
    log = _log(tmp_path, registry, signer, 3)
    forged = _rewrite(log.path.read_text().splitlines(), 2)
    log.path.write_text("\n".join(forged) + "\n")
    frontier = Frontier().extend(leaf_hash(line.encode()) for line in forged)
    cp = Checkpoint(log.origin, 3, frontier.root(), "2030-01-01T00:00:00+00:00", frontier)
    assert log.checkpoints is not None
    registry.s3.put_object(Bucket=registry.bucket, Key=log.checkpoints.key(log.origin, 3),
                           Body=json.dumps(sign_statement(cp.statement(), attacker)).encode())
    with pytest.raises(LogError, match="checkpoint signature invalid: signature does not verify"):
        _verifier(log).check()


def test_checkpoint_replayed_under_another_size_is_refused(tmp_path: Path, registry: Registry,
                                                           signer: CryptoSigner) -> None:
    log = _log(tmp_path, registry, signer, 4)
    assert log.checkpoints is not None
    genuine = log.checkpoints.get(log.origin, 2)
    registry.s3.put_object(Bucket=registry.bucket, Key=log.checkpoints.key(log.origin, 4), Body=genuine)
    with pytest.raises(LogError, match="holds the checkpoint of size 2, not of its key's size"):
        _verifier(log).check()


def test_writer_that_died_before_saving_its_state_is_caught_up(tmp_path: Path, registry: Registry,
                                                               signer: CryptoSigner) -> None:
    log = _log(tmp_path, registry, signer, 3)
    state = log.path.with_name(log.path.name + ".tree")
    saved = state.read_text()
    log.append(_decision(4, True))
    state.write_text(saved)  # as if the writer of entry 4 died after writing the line
    log.append(_decision(5, True))
    assert _verifier(log).check().anchored == 5


def test_s3_log_checkpoints_across_writers_and_detects_rewrites(registry: Registry, signer: CryptoSigner) -> None:
    import threading

    log = S3AuditLog(registry.s3, registry.bucket, retention_days=1, signer=signer, keys=[signer.public_key])
    threads = [threading.Thread(target=log.append, args=(_decision(i, i % 2 == 1),)) for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    verifier = S3AuditLog(registry.s3, registry.bucket, keys=[signer.public_key], checkpointed=True)
    assert verifier.check().anchored == 6
    # Rewrite entries 4..6 as newer object versions, every hash recomputed.
    keys = [f"audit/entries/{i:012d}.json" for i in range(1, 7)]
    lines = [registry.s3.get_object(Bucket=registry.bucket, Key=k)["Body"].read().decode() for k in keys]
    for key, line in list(zip(keys, _rewrite(lines, 4)))[3:]:
        registry.s3.put_object(Bucket=registry.bucket, Key=key, Body=line.encode())
    with pytest.raises(ValueError, match="000000000004.json: entry was modified after it was written"):
        verifier.check()


def test_s3_log_truncated_or_emptied_by_delete_markers(registry: Registry, signer: CryptoSigner) -> None:
    log = S3AuditLog(registry.s3, registry.bucket, retention_days=1, signer=signer, keys=[signer.public_key])
    for i in range(1, 5):
        log.append(_decision(i, True))
    verifier = S3AuditLog(registry.s3, registry.bucket, keys=[signer.public_key], checkpointed=True)
    for i in (4, 3):
        registry.s3.delete_object(Bucket=registry.bucket, Key=f"audit/entries/{i:012d}.json")
    with pytest.raises(LogError, match="log truncated to 2 entries but the signed checkpoint says 4"):
        verifier.check()
    for i in (2, 1):
        registry.s3.delete_object(Bucket=registry.bucket, Key=f"audit/entries/{i:012d}.json")
    with pytest.raises(LogError, match="log emptied: 0 entries but the signed checkpoint says 4"):
        verifier.check()


# -- the command line --------------------------------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path: Path, registry: Registry, s3_server, monkeypatch: pytest.MonkeyPatch) -> Path:  # type: ignore[no-untyped-def]
    """A local run's setting: S3 configured, the audit key made on first use under MLSEC_KEY_DIR."""
    for k, v in {**bucket_env(s3_server, registry.bucket), "MLSEC_HOME": str(tmp_path / "home"),
                 "MLSEC_DEPLOY_TARGET": "local", "MLSEC_AUDIT_LOG": str(tmp_path / "decisions.jsonl")}.items():
        monkeypatch.setenv(k, v)
    for k in ("MLSEC_GATE_KEY", "MLSEC_GATE_TRUST_DIR", "MLSEC_KEY_DIR"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path / "decisions.jsonl"


def test_cli_audit_verify_names_what_is_wrong(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlsec.config import Settings
    from mlsec.gates.task import audit_sinks

    sink = audit_sinks(Settings())
    for i in range(1, 6):
        sink.append(_decision(i, allow=i != 3))
    assert main(["audit", "verify"]) == 0
    assert "5 entries, chain intact, consistent with 5 signed checkpoints" in capsys.readouterr().out
    lines = cli_env.read_text().splitlines()
    cli_env.write_text("\n".join(_rewrite(lines, 3)) + "\n")
    assert main(["audit", "verify", "--log", str(cli_env)]) == 1
    assert "entry 3 was modified" in capsys.readouterr().err
    cli_env.write_text("\n".join(lines[:4]) + "\n")
    assert main(["audit", "verify"]) == 1
    assert "log truncated to 4 entries but the signed checkpoint says 5" in capsys.readouterr().err
    cli_env.write_text("")
    assert main(["audit", "verify"]) == 1
    assert "log emptied" in capsys.readouterr().err


def test_cli_refuses_checkpoints_signed_by_an_untrusted_key(cli_env: Path, registry: Registry, signer: CryptoSigner,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Checkpoints count only under the audit key the verifier trusts (its key dir's gates/audit.pub)."""
    from mlsec.config import Settings
    from mlsec.gates.attest import gate_trust

    log = AuditLog(cli_env, CheckpointStore(registry.s3, registry.bucket, retention_days=1), signer)
    log.append(_decision(1, True))
    create_key(Settings().key_dir / "gates" / "audit.key")  # the key this verifier trusts: not the writer's
    assert gate_trust(Settings().key_dir).for_env("audit")
    assert main(["audit", "verify"]) == 1
    assert "checkpoint signature invalid" in capsys.readouterr().err
