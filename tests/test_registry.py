"""Registry on a real SeaweedFS S3 server: immutable, verified from its own copy, gated promotion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from mlsec.digest import sha256_json
from mlsec.gates.attest import AttestationError, sign_decision
from mlsec.gates.audit import AuditLog
from mlsec.gates.engine import InProcessEngine
from mlsec.ingest import provenance
from mlsec.registry.store import Registry, RegistryError
from mlsec.sign import keys
from mlsec.sign import stage as signing

from conftest import GateKeys, Signed, bucket_env
from registry_support import Approver, chain_engine, promote


def _register(registry: Registry, signed: Signed, key_pair: keys.KeyPair, name: str = "credit") -> str:
    return signed.register(registry, key_pair, name)


@pytest.fixture(scope="module")
def approvers(tmp_path_factory: pytest.TempPathFactory) -> list[Approver]:
    return [Approver(who, keys.create(tmp_path_factory.mktemp(who))) for who in ("bob@example.com", "carol@example.com")]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, key_pair: keys.KeyPair, approvers: list[Approver]):  # type: ignore[no-untyped-def]
    e = chain_engine(tmp_path_factory.mktemp("chain"), key_pair.public_key, approvers)
    yield e
    e.close()


def test_register_promote_through_stages_and_pull(tmp_path: Path, registry: Registry, signed: Signed,
                                                  key_pair: keys.KeyPair, chain: InProcessEngine,
                                                  gate_keys: GateKeys, approvers: list[Approver]) -> None:
    """dev → staging → prod, each judged by its own environment: the data, training and signing gates run
    again under staging's and prod's policy from the signed evidence, and prod needs two signed approvals."""
    version = _register(registry, signed, key_pair)
    assert registry.versions("credit") == [version] and registry.models() == ["credit"]
    log = AuditLog(tmp_path / "audit.jsonl")
    for stage in ("dev", "staging", "prod"):
        if stage != "dev":
            for a in approvers:
                registry.approve("credit", version, stage, a.identity, a.key.private_key)
        env = registry.environment_for(stage)
        d = registry.promote("credit", version, stage, trust=key_pair.public_key, engine=chain, environment=env,
                             signer=gate_keys.signer(env), author="alice", audit=log).decision
        assert d.allow, d.deny
        assert d.environment == env == stage and d.stage == stage
        assert registry.alias("credit", stage)[0].version == version
    signed_envs = {(s.decision.gate, s.decision.environment) for s in
                   registry.signed_decisions("credit", version, {registry.record("credit", version).model_digest,
                                                                 signed.trained.data_evidence.subject.digest})}
    assert {("data", "prod"), ("training", "staging"), ("signing", "prod"), ("promotion", "prod")} <= signed_envs
    log.verify()
    record = registry.pull("credit", "prod", tmp_path / "pulled", key_pair.public_key)
    assert signing.verify(tmp_path / "pulled", key_pair.public_key).model_digest == record.model_digest
    # Prod's copy is under COMPLIANCE retention: nobody can delete it, bypass or not.
    key = f"models/credit/{version}/model/model.safetensors"
    assert registry.s3.get_object_retention(Bucket=registry.bucket, Key=key)["Retention"]["Mode"] == "COMPLIANCE"
    head = registry.s3.head_object(Bucket=registry.bucket, Key=key)
    with pytest.raises(ClientError):
        registry.s3.delete_object(Bucket=registry.bucket, Key=key, VersionId=head["VersionId"],
                                  BypassGovernanceRetention=True)
    # Registering the same model again is idempotent, never a second copy.
    assert _register(registry, signed, key_pair) == version


def test_a_later_run_of_the_same_model_registers_its_own_records(tmp_path: Path, registry: Registry, signed: Signed,
                                                                 key_pair: keys.KeyPair, engine: InProcessEngine,
                                                                 gate_keys: GateKeys) -> None:
    """Training is seeded, so a second run yields the same model, signed with a provenance naming that run's
    decisions: the version stays as stored, and the run's evidence and decisions are kept beside the first's."""
    from mlsec.evidence import utcnow
    from mlsec.gates.gate import evaluate
    from mlsec.sign.attestation import Materials

    from conftest import Trained

    version = _register(registry, signed, key_pair)
    t = signed.trained
    data = t.data_evidence.model_copy(update={"created": utcnow()})
    training = t.training_evidence.model_copy(update={"created": utcnow()})
    data_d = evaluate("data", data, environment="dev", engine=engine)
    train_d = evaluate("training", training, environment="dev", engine=engine, decisions=[data_d])
    materials = Materials("data/credit_sample.csv", data.subject.digest,
                          {f"{d.gate}:{d.id}": d.digest for d in (data_d, train_d)}, "test", "local",
                          dataset_statement=provenance.statement(data))
    bundle = signing.sign(t.model_dir, tmp_path / "run2", key_pair, materials, "run-2")
    sign_d = evaluate("signing", signing.evidence(bundle, "credit", key_pair.public_key), environment="dev",
                      engine=engine, decisions=[data_d, train_d])
    dev = gate_keys.signer("dev")
    second = Signed(bundle, [data_d, train_d, sign_d], Trained(t.dataset, data, t.model_dir, training),
                    [sign_decision(data_d, data.subject.name, dev), sign_decision(train_d, "credit", dev),
                     sign_decision(sign_d, "credit", dev)])
    assert second.register(registry, key_pair) == version
    for gate in ("data", "training"):
        assert len(registry._keys(f"models/credit/{version}/evidence/{gate}/")) == 2
    assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow


def test_skipping_a_stage_is_denied_and_alias_untouched(registry: Registry, signed: Signed, key_pair: keys.KeyPair,
                                                        chain: InProcessEngine, gate_keys: GateKeys,
                                                        approvers: list[Approver]) -> None:
    version = _register(registry, signed, key_pair)
    for a in approvers:
        registry.approve("credit", version, "prod", a.identity, a.key.private_key)
    d = promote(registry, version, "prod", key_pair, chain, gate_keys)
    assert not d.allow and any("stages may not be skipped" in r for r in d.deny)
    assert registry.alias("credit", "prod") is None


def test_staging_judges_the_evidence_again_under_its_own_policy(registry: Registry, signed: Signed,
                                                                 key_pair: keys.KeyPair, engine: InProcessEngine,
                                                                 gate_keys: GateKeys) -> None:
    """The dev run's decisions do not carry over: staging's own gates judge the stored evidence, and the
    repo's staging policy trusts no signer yet, so its signing gate denies and so does the promotion."""
    version = _register(registry, signed, key_pair)
    assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
    d = promote(registry, version, "staging", key_pair, engine, gate_keys)
    assert not d.allow
    assert any("signing-gate decision" in r and "not staging" in r for r in d.deny), d.deny
    staging = [s.decision for s in registry.signed_decisions("credit", version, {d.subject or ""})
               if s.decision.environment == "staging" and s.decision.gate == "signing"]
    assert staging and not staging[0].allow and any("allow list" in r for r in staging[0].deny)
    assert registry.alias("credit", "staging") is None


def test_objects_are_encrypted_and_locked(registry: Registry, signed: Signed, key_pair: keys.KeyPair) -> None:
    version = _register(registry, signed, key_pair)
    key = f"models/credit/{version}/model/model.safetensors"
    head = registry.s3.head_object(Bucket=registry.bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256" and head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError):
        registry.s3.delete_object(Bucket=registry.bucket, Key=key, VersionId=head["VersionId"])
    with pytest.raises(RegistryError, match="immutable"):
        registry._put_once(key, b"replacement")


def _overwrite(registry: Registry, key: str, body: bytes) -> None:
    """What an attacker with write access can still do under versioning: put a newer object version."""
    registry.s3.put_object(Bucket=registry.bucket, Key=key, Body=body)


def test_tampered_registry_copy_is_refused(tmp_path: Path, registry: Registry, signed: Signed, key_pair: keys.KeyPair,
                                           engine: InProcessEngine, gate_keys: GateKeys) -> None:
    version = _register(registry, signed, key_pair)
    key = f"models/credit/{version}/model/model.safetensors"
    _overwrite(registry, key, registry.s3.get_object(Bucket=registry.bucket, Key=key)["Body"].read()[:-1] + b"\x00")
    with pytest.raises(RegistryError, match="signature verification failed"):
        registry.pull("credit", version, tmp_path / "p", key_pair.public_key)
    assert not (tmp_path / "p").exists()
    d = promote(registry, version, "dev", key_pair, engine, gate_keys)
    assert not d.allow and any("failed signature_verified" in r for r in d.deny)
    assert registry.alias("credit", "dev") is None


def test_files_outside_the_signed_set_are_never_fetched(tmp_path: Path, registry: Registry, signed: Signed,
                                                        key_pair: keys.KeyPair) -> None:
    version = _register(registry, signed, key_pair)
    _overwrite(registry, f"models/credit/{version}/model/backdoor.py", b"import os")
    registry.pull("credit", version, tmp_path / "p", key_pair.public_key)
    assert not (tmp_path / "p" / "model" / "backdoor.py").exists()


def test_wrong_public_key_is_refused(tmp_path: Path, registry: Registry, signed: Signed, key_pair: keys.KeyPair,
                                     other_key_pair: keys.KeyPair, engine: InProcessEngine, gate_keys: GateKeys) -> None:
    version = _register(registry, signed, key_pair)
    with pytest.raises(RegistryError, match="signature verification failed"):
        registry.pull("credit", version, tmp_path / "p", other_key_pair.public_key)
    d = promote(registry, version, "dev", other_key_pair, engine, gate_keys)
    assert not d.allow and any("failed signature_verified" in r for r in d.deny)


def test_unsigned_or_tampered_bundle_is_never_registered(tmp_path: Path, registry: Registry, signed: Signed,
                                                         key_pair: keys.KeyPair) -> None:
    import shutil

    bad = Path(shutil.copytree(signed.bundle, tmp_path / "bad"))
    (bad / "model" / "config.json").write_text("{}")
    from dataclasses import replace

    with pytest.raises(ValueError, match="Signature mismatch"):
        replace(signed, bundle=bad).register(registry, key_pair)
    assert registry.versions("credit") == []


def test_decisions_must_be_attested_and_signed(registry: Registry, signed: Signed, key_pair: keys.KeyPair,
                                               engine: InProcessEngine, gate_keys: GateKeys,
                                               tmp_path: Path) -> None:
    from dataclasses import replace

    from mlsec.gates.attest import create_key, load_signer
    from mlsec.gates.gate import evaluate

    other = evaluate("data", signed.trained.data_evidence, environment="dev", engine=engine)
    not_in_provenance = sign_decision(other, "credit", gate_keys.signer("dev"))
    with pytest.raises(RegistryError, match="not covered by the signed attestation"):
        replace(signed, attested=[not_in_provenance, *signed.attested[1:]]).register(registry, key_pair)
    create_key(tmp_path / "rogue.key")
    resigned = sign_decision(signed.decisions[0], "credit", load_signer(tmp_path / "rogue.key"))
    with pytest.raises(AttestationError, match="does not verify"):
        replace(signed, attested=[resigned, *signed.attested[1:]]).register(registry, key_pair)


def test_revoked_version_cannot_be_promoted_or_pulled(tmp_path: Path, registry: Registry, signed: Signed,
                                                      key_pair: keys.KeyPair, engine: InProcessEngine,
                                                      gate_keys: GateKeys) -> None:
    version = _register(registry, signed, key_pair)
    registry.revoke("credit", version, "poisoned dataset", by="security", signer=gate_keys.signer("dev"))
    d = promote(registry, version, "dev", key_pair, engine, gate_keys)
    assert not d.allow and f"version {version} is revoked" in d.deny
    with pytest.raises(RegistryError, match="revoked"):
        registry.pull("credit", version, tmp_path / "p", key_pair.public_key)


def test_concurrent_alias_move_cannot_win_silently(registry: Registry, signed: Signed, key_pair: keys.KeyPair,
                                                   engine: InProcessEngine, gate_keys: GateKeys) -> None:
    version = _register(registry, signed, key_pair)
    assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
    record = registry.record("credit", version)
    stale = registry.alias("credit", "dev")
    first = promote(registry, version, "dev", key_pair, engine, gate_keys)  # someone else moves the alias meanwhile
    assert first.allow
    with pytest.raises(RegistryError, match="moved by someone else"):
        registry._move_alias("credit", "dev", record, first, stale)
    with pytest.raises(RegistryError, match="moved by someone else"):
        registry._move_alias("credit", "dev", record, first, None)  # "create" when it already exists


def test_s3_audit_log_chains_across_writers_and_detects_tampering(registry: Registry, signed: Signed) -> None:
    import json
    import threading

    from mlsec.gates.audit import S3AuditLog

    log = S3AuditLog(registry.s3, registry.bucket, retention_days=1)
    threads = [threading.Thread(target=lambda d=d: log.append(d)) for d in signed.decisions * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.verify() == 6  # six concurrent writers, one unbroken chain
    key = "audit/entries/000000000003.json"
    entry = json.loads(registry.s3.get_object(Bucket=registry.bucket, Key=key)["Body"].read())
    entry["result"] = "deny"
    _overwrite(registry, key, json.dumps(entry).encode())  # a newer object version on top of the locked one
    with pytest.raises(ValueError, match="000000000003.json: entry was modified"):
        log.verify()
    head = registry.s3.head_object(Bucket=registry.bucket, Key="audit/entries/000000000001.json")
    with pytest.raises(ClientError):
        registry.s3.delete_object(Bucket=registry.bucket, Key="audit/entries/000000000001.json",
                                  VersionId=head["VersionId"])


def test_gate_in_cluster_mode_also_logs_to_s3(tmp_path: Path, registry: Registry, s3_server, signed: Signed,
                                              gate_keys: GateKeys,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from mlsec.gates.audit import S3AuditLog
    from mlsec.gates.task import run_gate

    for k, v in {**bucket_env(s3_server, registry.bucket), "MLSEC_DEPLOY_TARGET": "cluster",
                 "MLSEC_GATE_KEY": str(gate_keys.dir / "dev.key"), "MLSEC_GATE_TRUST_DIR": str(gate_keys.dir),
                 "MLSEC_AUDIT_LOG": str(tmp_path / "local.jsonl")}.items():
        monkeypatch.setenv(k, v)
    signed.trained.data_evidence.write(tmp_path / "ev.json")
    assert run_gate("data", tmp_path / "ev.json", None, tmp_path / "d.json", tmp_path / "ds.json", "dev") == "allow"
    assert S3AuditLog(registry.s3, registry.bucket).verify() == 1


def _second_model(tmp_path: Path, signed: Signed, key_pair: keys.KeyPair, engine: InProcessEngine,
                  gate_keys: GateKeys) -> Signed:
    """Another signed model from the same data (a different decision threshold), through the real gates."""
    import json
    import shutil

    from mlsec.digest import tree_digest
    from mlsec.evidence import Subject
    from mlsec.gates.gate import evaluate
    from mlsec.sign.attestation import Materials

    from conftest import Trained

    t = signed.trained
    model = Path(shutil.copytree(t.model_dir, tmp_path / "model2"))
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "threshold": 0.6}))
    training = t.training_evidence.model_copy(update={"subject": Subject(name="credit", digest=tree_digest(model))})
    data_d = signed.decisions[0]
    train_d = evaluate("training", training, environment="dev", engine=engine, decisions=[data_d])
    materials = Materials("data/credit_sample.csv", t.data_evidence.subject.digest,
                          {"data": data_d.digest, "training": train_d.digest}, "test", "local",
                          dataset_statement=provenance.statement(t.data_evidence))
    bundle = signing.sign(model, tmp_path / "signed2", key_pair, materials, "run2")
    sign_d = evaluate("signing", signing.evidence(bundle, "credit", key_pair.public_key), environment="dev",
                      engine=engine, decisions=[data_d, train_d])
    dev = gate_keys.signer("dev")
    return Signed(bundle, [data_d, train_d, sign_d], Trained(t.dataset, t.data_evidence, model, training),
                  [signed.attested[0], sign_decision(train_d, "credit", dev), sign_decision(sign_d, "credit", dev)])


def test_rollback_goes_back_only_to_a_version_the_stage_ran(tmp_path: Path, registry: Registry, signed: Signed,
                                                            key_pair: keys.KeyPair, engine: InProcessEngine,
                                                            chain: InProcessEngine, gate_keys: GateKeys) -> None:
    v1 = _register(registry, signed, key_pair)
    second = _second_model(tmp_path, signed, key_pair, engine, gate_keys)
    v2 = _register(registry, second, key_pair)
    assert v1 != v2
    assert promote(registry, v1, "dev", key_pair, engine, gate_keys).allow
    assert promote(registry, v2, "dev", key_pair, engine, gate_keys).allow
    assert [s.decision.subject[:16] for s in registry.promotions("credit", "dev")] == [v1, v2]
    d = registry.rollback("credit", "dev", v1, trust=key_pair.public_key, engine=engine, environment="dev",
                          signer=gate_keys.signer("dev"), author="alice").decision
    assert d.allow and f"rollback of dev to version {v1}" in d.warn
    assert registry.resolve("credit", "dev")[0] == v1 == registry.alias("credit", "dev")[0].version
    # staging never ran v2: "rolling back" to it is just a skipped stage in disguise.
    denied = registry.rollback("credit", "staging", v2, trust=key_pair.public_key, engine=chain,
                               environment="staging", signer=gate_keys.signer("staging"), author="alice").decision
    assert not denied.allow and any("never pointed at it" in r for r in denied.deny)


def test_s3_down_mid_promotion_leaves_alias_and_retry_succeeds(tmp_path: Path, signed: Signed, key_pair: keys.KeyPair,
                                                              engine: InProcessEngine, gate_keys: GateKeys,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from mlsec.registry import store
    from mlsec.registry.seaweed import LocalS3

    from conftest import _authenticated

    with LocalS3(tmp_path / "s3") as server:
        registry = Registry(_authenticated(server), "flaky", retention_days=1, gates=gate_keys.trust,
                            stage_envs={"dev": "dev"})
        registry.ensure_bucket()
        version = _register(registry, signed, key_pair)
        real_evaluate = store.evaluate

        def evaluate_then_crash(*args, **kwargs):  # type: ignore[no-untyped-def]
            decision = real_evaluate(*args, **kwargs)
            server.stop()  # the store dies after the gate allowed, before the alias moved
            return decision

        monkeypatch.setattr(store, "evaluate", evaluate_then_crash)
        with pytest.raises(Exception):
            promote(registry, version, "dev", key_pair, engine, gate_keys)
        monkeypatch.setattr(store, "evaluate", real_evaluate)
        server.start()
        assert registry.alias("credit", "dev") is None
        assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
        assert registry.alias("credit", "dev")[0].version == version


def test_deployments_are_recorded(tmp_path: Path, registry: Registry, signed: Signed, key_pair: keys.KeyPair) -> None:
    version = _register(registry, signed, key_pair)
    registry.record_deployment("credit", version, {"target": "local", "url": "http://127.0.0.1:1"})
    assert registry.deployments("credit", version)[0]["target"] == "local"
    registry.pull("credit", version, tmp_path / "pulled", key_pair.public_key)  # the record is not a model file


def test_removed_file_and_foreign_attestation_are_refused(tmp_path: Path, registry: Registry, signed: Signed,
                                                          key_pair: keys.KeyPair, engine: InProcessEngine,
                                                          gate_keys: GateKeys) -> None:
    version = _register(registry, signed, key_pair)
    # A delete without a version id leaves the locked data in place but hides it: the file is gone for readers.
    registry.s3.delete_object(Bucket=registry.bucket, Key=f"models/credit/{version}/model/config.json")
    with pytest.raises(RegistryError, match="cannot download its signed files"):
        registry.pull("credit", version, tmp_path / "p", key_pair.public_key)

    second = _second_model(tmp_path, signed, key_pair, engine, gate_keys)
    v2 = _register(registry, second, key_pair)
    # A validly signed attestation, but about the first model.
    _overwrite(registry, f"models/credit/{v2}/provenance.dsse.json", (signed.bundle / "provenance.dsse.json").read_bytes())
    d = promote(registry, v2, "dev", key_pair, engine, gate_keys)
    assert not d.allow and any("failed attestation_verified" in r for r in d.deny)


def test_foreign_attestation_is_caught_by_signature_checks(tmp_path: Path, signed: Signed, key_pair: keys.KeyPair,
                                                           engine: InProcessEngine, gate_keys: GateKeys) -> None:
    import shutil

    second = _second_model(tmp_path, signed, key_pair, engine, gate_keys)
    bundle = Path(shutil.copytree(second.bundle, tmp_path / "mixed"))
    shutil.copy(signed.bundle / "provenance.dsse.json", bundle / "provenance.dsse.json")
    with pytest.raises(ValueError, match="attestation is about"):
        signing.verify(bundle, key_pair.public_key)
    ev = signing.evidence(bundle, "credit", key_pair.public_key)
    assert ev.signature.verified and ev.attestation.verified  # each is genuine on its own...
    from mlsec.gates.gate import evaluate

    d = evaluate("signing", ev, environment="dev", engine=engine, decisions=second.decisions[:2])
    assert not d.allow and any("attestation is about" in r for r in d.deny)  # ...but not about this model


def test_promote_task_judges_in_the_pipeline_environment(tmp_path: Path, registry: Registry, s3_server,  # type: ignore[no-untyped-def]
                                                         signed: Signed, key_pair: keys.KeyPair, gate_keys: GateKeys,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A run under prod asking for the dev stage is judged by prod's policy, which does not govern dev."""
    from mlsec.gates.attest import read_history, write_history
    from mlsec.gates.decision import GateDenied
    from mlsec.registry import task

    for k, v in {**bucket_env(s3_server, registry.bucket), "MLSEC_PUBLIC_KEY": str(key_pair.public_key),
                 "MLSEC_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "MLSEC_ENV": "dev",
                 "MLSEC_GATE_TRUST_DIR": str(gate_keys.dir), "MLSEC_KEY_DIR": str(gate_keys.dir.parent)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLSEC_GATE_KEY", str(gate_keys.dir / "prod.key"))
    signed.trained.training_evidence.write(tmp_path / "train.json")
    signed.trained.data_evidence.write(tmp_path / "data.json")
    write_history(tmp_path / "history.json", signed.attested)
    with pytest.raises(GateDenied, match="stage dev is not governed by the prod environment"):
        task.run(signed.bundle, tmp_path / "train.json", tmp_path / "data.json", tmp_path / "history.json", "credit",
                 "dev", "alice", tmp_path / "out.json", tmp_path / "release.json", environment="prod",
                 promotion_evidence_out=tmp_path / "promotion.json")
    decision = read_history(tmp_path / "out.json", gate_keys.trust)[-1].decision
    assert decision.environment == "prod" and decision.gate == "promotion"
    # The run keeps exactly what the gate judged (so `mlsec policy replay` can judge it again).
    assert sha256_json(json.loads((tmp_path / "promotion.json").read_text())) == decision.evidence_sha256


def test_local_registry_data_is_locked_while_served_and_released_on_failure(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from mlsec.registry.seaweed import LocalS3

    def broken(self: LocalS3) -> None:
        raise TimeoutError("no answer")

    with monkeypatch.context() as m:
        m.setattr(LocalS3, "_wait_ready", broken)
        with pytest.raises(TimeoutError):
            LocalS3(tmp_path).start()
    with LocalS3(tmp_path) as first:  # the failed start released the data directory
        with pytest.raises(RuntimeError, match="in use by another mlsec process"):
            LocalS3(tmp_path).start()
        assert first._proc is not None and first._proc.poll() is None  # the refused start touched nothing
