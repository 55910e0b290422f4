"""Attacks on the registry by someone holding the pipeline's S3 credentials (the raw S3 API), played against
the real SeaweedFS. Named after the threat they play: T07 registry compromise, T10 decisions altered."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mlsec.cli import main
from mlsec.gates.engine import InProcessEngine
from mlsec.registry.seaweed import LocalS3
from mlsec.registry.store import Registry, RegistryError
from mlsec.sign import keys

from conftest import GateKeys, Signed, _authenticated, bucket_env
from registry_support import Approver, chain_engine, promote


@pytest.fixture
def attacker(s3_server: LocalS3) -> Any:
    """The pipeline's identity: read, write and list, as every pipeline pod holds it."""
    return _authenticated(s3_server, role="pipeline")


def _put(s3: Any, bucket: str, key: str, body: bytes | str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def promoted(registry: Registry, signed: Signed, key_pair: keys.KeyPair, engine: InProcessEngine,
             gate_keys: GateKeys) -> str:
    version = signed.register(registry, key_pair)
    assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
    return version


def test_T07_forged_manifest_is_denied_naming_the_field(tmp_path: Path, registry: Registry, attacker: Any,
                                                        promoted: str, key_pair: keys.KeyPair, engine: InProcessEngine,
                                                        gate_keys: GateKeys, signed: Signed) -> None:
    key = f"models/credit/{promoted}/manifest.json"
    doc = json.loads(attacker.get_object(Bucket=registry.bucket, Key=key)["Body"].read())
    real_accuracy = doc["metrics"]["accuracy"]
    doc["metrics"]["accuracy"] = doc["metrics"]["auc"] = 0.99
    doc["signer"] = "sha256:" + "e" * 64
    for d in doc["decisions"]:
        d["environment"] = "prod"
    _put(attacker, registry.bucket, key, json.dumps(doc))  # a newer version: object lock keeps the old one only
    d = registry.promote("credit", promoted, "dev", trust=key_pair.public_key, engine=engine, environment="dev",
                         signer=gate_keys.signer("dev"), author="alice", evidence_out=tmp_path / "ev.json").decision
    assert not d.allow
    for field in ("metrics", "signer", "decisions"):
        assert f'registry manifest field "{field}" of version {promoted} disagrees with the signed records' in d.deny
    judged = json.loads((tmp_path / "ev.json").read_text())
    assert judged["metrics"]["accuracy"] == real_accuracy  # the gate saw the signed evidence, not the forgery
    assert judged["registry"]["signer"] == keys.fingerprint(key_pair.public_key)


def _alias(version: str, decision_id: str, digest: str = "0" * 64) -> str:
    return json.dumps({"version": version, "model_digest": digest, "decision_id": decision_id,
                       "moved_at": "2026-01-01T00:00:00Z", "previous": None})


def test_T07_handwritten_alias_is_refused_by_pull_and_serve(tmp_path: Path, registry: Registry, attacker: Any,
                                                            signed: Signed, key_pair: keys.KeyPair, s3_server: LocalS3,
                                                            gate_keys: GateKeys, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    version = signed.register(registry, key_pair)  # registered, never promoted to prod
    digest = registry.record("credit", version).model_digest
    _put(attacker, registry.bucket, "aliases/credit/prod.json", _alias(version, "no-such-decision", digest))
    with pytest.raises(RegistryError, match="credit:prod has no verified promotion"):
        registry.pull("credit", "prod", tmp_path / "pulled", key_pair.public_key)
    assert not (tmp_path / "pulled").exists()

    from mlsec.serve import auth

    auth.create(tmp_path / "keys.json", "c")
    for k, v in {**bucket_env(s3_server, registry.bucket), "MLSEC_HOME": str(tmp_path / "home"),
                 "MLSEC_GATE_TRUST_DIR": str(gate_keys.dir)}.items():
        monkeypatch.setenv(k, v)
    assert main(["serve", "--name", "credit", "--ref", "prod", "--public-key", str(key_pair.public_key),
                 "--api-keys", str(tmp_path / "keys.json"), "--port", "1"]) == 2
    assert "credit:prod has no verified promotion" in capsys.readouterr().err
    assert not (tmp_path / "home" / "serving").exists()


def test_T07_replayed_or_rewritten_alias_is_refused(tmp_path: Path, registry: Registry, attacker: Any, signed: Signed,
                                                    key_pair: keys.KeyPair, engine: InProcessEngine,
                                                    gate_keys: GateKeys) -> None:
    from test_registry import _second_model

    v1 = signed.register(registry, key_pair)
    assert promote(registry, v1, "dev", key_pair, engine, gate_keys).allow
    old = attacker.get_object(Bucket=registry.bucket, Key="aliases/credit/dev.json")["Body"].read()
    v2 = _second_model(tmp_path, signed, key_pair, engine, gate_keys).register(registry, key_pair)
    assert promote(registry, v2, "dev", key_pair, engine, gate_keys).allow
    _put(attacker, registry.bucket, "aliases/credit/dev.json", old)  # v1's genuine alias, replayed
    with pytest.raises(RegistryError, match="rewritten or replayed"):
        registry.pull("credit", "dev", tmp_path / "p", key_pair.public_key)
    # Erasing every version of the alias erases nothing that counts: the signed promotions still say v2.
    for v in attacker.list_object_versions(Bucket=registry.bucket, Prefix="aliases/")["Versions"]:
        attacker.delete_object(Bucket=registry.bucket, Key=v["Key"], VersionId=v["VersionId"])
    assert registry.pull("credit", "dev", tmp_path / "p", key_pair.public_key).version == v2
    # The promotion records themselves cannot be removed with these credentials.
    v = attacker.list_object_versions(Bucket=registry.bucket, Prefix="promotions/")["Versions"][0]
    with pytest.raises(ClientError):
        attacker.delete_object(Bucket=registry.bucket, Key=v["Key"], VersionId=v["VersionId"],
                               BypassGovernanceRetention=True)


def test_T07_revocation_survives_delete_and_overwrite(tmp_path: Path, registry: Registry, attacker: Any,
                                                      promoted: str, key_pair: keys.KeyPair, engine: InProcessEngine,
                                                      gate_keys: GateKeys) -> None:
    registry.revoke("credit", promoted, "poisoned dataset", by="security", signer=gate_keys.signer("dev"))
    key = f"revocations/credit/{promoted}.json"
    attacker.delete_object(Bucket=registry.bucket, Key=key)  # a delete marker hides it from plain reads
    _put(attacker, registry.bucket, key, "{}")  # and a newer, empty object on top
    version_id = attacker.list_object_versions(Bucket=registry.bucket, Prefix=key)["Versions"][-1]["VersionId"]
    with pytest.raises(ClientError):
        attacker.delete_object(Bucket=registry.bucket, Key=key, VersionId=version_id)  # COMPLIANCE-locked
    assert "poisoned dataset (by security)" in (registry.revocation("credit", promoted) or "")
    with pytest.raises(RegistryError, match="is revoked"):
        registry.pull("credit", promoted, tmp_path / "p", key_pair.public_key)
    with pytest.raises(RegistryError, match="is revoked"):
        registry.pull("credit", "dev", tmp_path / "p", key_pair.public_key)
    d = promote(registry, promoted, "dev", key_pair, engine, gate_keys)
    assert not d.allow and f"version {promoted} is revoked" in d.deny


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A directory standing for the rest of the file system: nothing may appear in it."""
    d = tmp_path / "home-of-someone"
    d.mkdir()
    yield d
    assert _files_under(d) == set()


@pytest.mark.parametrize("ref", ["../../../../tmp/x", "/some/home", "prod/../dev", "0123456789abcdef/.."])
def test_T07_refs_naming_paths_are_refused(tmp_path: Path, registry: Registry, key_pair: keys.KeyPair, ref: str) -> None:
    with pytest.raises(ValueError, match="is not valid"):
        registry.pull("credit", ref, tmp_path / "p", key_pair.public_key)


def test_T07_alias_naming_a_path_writes_nothing(tmp_path: Path, registry: Registry, attacker: Any, promoted: str,
                                                key_pair: keys.KeyPair, outside: Path) -> None:
    _put(attacker, registry.bucket, "aliases/credit/dev.json", _alias(str(outside), "x"))
    with pytest.raises(RegistryError, match="rewritten or replayed"):
        registry.pull("credit", "dev", tmp_path / "p", key_pair.public_key)
    assert not (tmp_path / "p").exists()


def test_T07_manifest_listing_unsigned_files_is_refused(tmp_path: Path, registry: Registry, attacker: Any,
                                                        promoted: str, key_pair: keys.KeyPair) -> None:
    prefix = f"models/credit/{promoted}/"
    doc = json.loads(attacker.get_object(Bucket=registry.bucket, Key=prefix + "manifest.json")["Body"].read())
    doc["files"][".ssh/authorized_keys"] = "0" * 64
    _put(attacker, registry.bucket, prefix + "manifest.json", json.dumps(doc))
    _put(attacker, registry.bucket, prefix + ".ssh/authorized_keys", "ssh-ed25519 AAAA attacker")
    with pytest.raises(RegistryError, match=r"outside the signed set: \['.ssh/authorized_keys'\]"):
        registry.pull("credit", "dev", tmp_path / "p", key_pair.public_key)
    assert not (tmp_path / "p").exists() and not list(tmp_path.rglob("authorized_keys"))


def test_T07_signature_naming_parent_paths_is_refused_before_download(tmp_path: Path, registry: Registry,
                                                                      attacker: Any, promoted: str,
                                                                      key_pair: keys.KeyPair) -> None:
    key = f"models/credit/{promoted}/model.sig"
    sig = json.loads(attacker.get_object(Bucket=registry.bucket, Key=key)["Body"].read())
    stmt = json.loads(base64.b64decode(sig["dsseEnvelope"]["payload"]))
    stmt["predicate"]["resources"].append({"name": "../../../evil", "digest": "0" * 64, "algorithm": "sha256"})
    sig["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    _put(attacker, registry.bucket, key, json.dumps(sig))
    with pytest.raises(RegistryError, match="would leave the bundle directory"):
        registry.pull("credit", promoted, tmp_path / "p", key_pair.public_key)
    assert not list(Path("/tmp").glob("evil")) and not (tmp_path / "p").exists()


def test_T07_unsigned_forged_and_self_approvals_do_not_count(tmp_path: Path, registry: Registry, attacker: Any,
                                                             signed: Signed, key_pair: keys.KeyPair,
                                                             gate_keys: GateKeys) -> None:
    people = {who: keys.create(tmp_path / who) for who in ("bob", "carol", "mallory")}
    listed = [Approver(f"{who}@example.com", pair) for who, pair in people.items()]
    chain = chain_engine(tmp_path, key_pair.public_key, listed)
    try:
        version = signed.register(registry, key_pair)
        for stage in ("dev", "staging"):
            assert promote(registry, version, stage, key_pair, chain, gate_keys).allow
        prefix = f"models/credit/{version}/approvals/prod/"
        registry.approve("credit", version, "prod", "bob@example.com", people["bob"].private_key)
        registry.approve("credit", version, "prod", "BOB@Example.com", people["bob"].private_key)  # bob again
        registry.approve("credit", version, "prod", "carol@example.com", people["mallory"].private_key)  # not hers
        registry.approve("credit", version, "prod", "mallory@example.com", people["mallory"].private_key)  # promoter
        _put(attacker, registry.bucket, prefix + "unsigned.json",
             json.dumps({"approver": "carol@example.com", "stage": "prod"}))
        d = promote(registry, version, "prod", key_pair, chain, gate_keys, author="Mallory@example.com")
        assert not d.allow
        assert 'prod needs 2 signed approvals from its approvers other than the promoter "mallory@example.com", has 1' \
            in d.deny
        registry.approve("credit", version, "prod", "carol@example.com", people["carol"].private_key)
        assert promote(registry, version, "prod", key_pair, chain, gate_keys, author="mallory@example.com").allow
    finally:
        chain.close()


def test_T10_forged_decision_in_a_history_is_a_recorded_deny(tmp_path: Path, signed: Signed, gate_keys: GateKeys,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A data-gate deny turned into an allow in the artifact store: the training gate refuses the history."""
    from mlsec.gates.attest import decision_statement, unverified_decision, write_history
    from mlsec.gates.task import run_gate

    for k, v in {"MLSEC_GATE_TRUST_DIR": str(gate_keys.dir), "MLSEC_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
                 "MLSEC_HOME": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    write_history(tmp_path / "history.json", signed.attested[:1])
    envelopes = json.loads((tmp_path / "history.json").read_text())
    stmt = json.loads(base64.b64decode(envelopes[0]["payload"]))
    # Vouch for another dataset, every field of the statement rewritten to agree: only the signature is left.
    forged = unverified_decision(envelopes[0]).model_copy(update={"subject": "f" * 64})
    stmt = decision_statement(forged, stmt["subject"][0]["name"])
    envelopes[0]["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    (tmp_path / "history.json").write_text(json.dumps(envelopes))
    signed.trained.training_evidence.write(tmp_path / "ev.json")
    result = run_gate("training", tmp_path / "ev.json", tmp_path / "history.json", tmp_path / "d.json",
                      tmp_path / "ds.json", "dev")
    assert result == "deny"
    (entry,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert entry["result"] == "deny" and "earlier decisions cannot be trusted" in entry["reasons"][0]
