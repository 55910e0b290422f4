"""The reference profile as a signed record beside the model, on the real SeaweedFS: the next ingest reads
the one the stage's signed promotion leads to, and nothing an S3 writer put there without a gate key.

The attacker holds the pipeline's S3 credentials (read, write, list) and wants the next dataset compared
to a profile of their choosing, so that their poisoned data looks like "no shift".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsec.digest import canonical_json, sha256_bytes
from mlsec.gates.attest import create_key, load_signer, sign_statement
from mlsec.gates.engine import InProcessEngine
from mlsec.ingest.profile import ReferenceProfile
from mlsec.registry import reference
from mlsec.registry.seaweed import PIPELINE, LocalS3
from mlsec.registry.store import Registry
from mlsec.sign import keys

from conftest import GateKeys, Signed, _authenticated, bucket_env
from registry_support import chain_engine, promote


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, key_pair: keys.KeyPair):  # type: ignore[no-untyped-def]
    e = chain_engine(tmp_path_factory.mktemp("chain"), key_pair.public_key, [])
    yield e
    e.close()


@pytest.fixture
def promoted(registry: Registry, signed: Signed, key_pair: keys.KeyPair, chain: InProcessEngine,
             gate_keys: GateKeys) -> tuple[str, str]:
    """(version, model digest) of the sample's model, promoted to dev."""
    version = signed.register(registry, key_pair)
    assert promote(registry, version, "dev", key_pair, chain, gate_keys).allow
    record = registry.record("credit", version)
    assert record is not None
    return version, record.model_digest


def own_profile(signed: Signed) -> ReferenceProfile:
    profile = signed.trained.profile
    assert profile is not None  # ingest profiled the accepted dataset, and its evidence names that profile
    assert signed.trained.data_evidence.poisoning.profile_sha256 == profile.sha256
    return profile


def test_stored_reference_is_read_back_for_the_stage(registry: Registry, signed: Signed, gate_keys: GateKeys,
                                                     promoted: tuple[str, str]) -> None:
    version, digest = promoted
    profile = own_profile(signed)
    reference.store(registry, "credit", version, digest, signed.trained.data_evidence.subject.digest, profile,
                    gate_keys.signer("dev"))
    got = reference.read(registry, "credit", "dev")
    assert got.used.source == "registry" and got.used.detail == f"credit@{version} (dev)"
    assert got.profile is not None and got.profile.sha256 == profile.sha256 == got.used.sha256


def test_no_promotion_is_no_reference(registry: Registry) -> None:
    got = reference.read(registry, "credit", "dev")
    assert got.profile is None and got.used.source == "none"
    assert "no signed promotion to dev" in got.used.detail


def test_promoted_without_a_reference_says_so(registry: Registry, promoted: tuple[str, str]) -> None:
    got = reference.read(registry, "credit", "dev")
    assert got.profile is None and got.used.detail == f"credit@{promoted[0]} (dev) has no signed reference profile"


def _plant(s3_server: LocalS3, registry: Registry, version: str, body: bytes) -> None:
    """The attacker's write, with the pipeline's credentials and the raw S3 API."""
    writer = _authenticated(s3_server, role=PIPELINE)
    writer.put_object(Bucket=registry.bucket, Key=f"models/credit/{version}/reference/{sha256_bytes(body)}.dsse.json",
                      Body=body)


@pytest.mark.parametrize("forgery", ["unsigned", "attacker_key", "other_environment_key", "other_model"])
def test_a_planted_reference_is_not_believed(forgery: str, tmp_path: Path, s3_server: LocalS3, registry: Registry,
                                             signed: Signed, gate_keys: GateKeys,
                                             promoted: tuple[str, str]) -> None:
    version, digest = promoted
    # The attacker's profile: the poisoned label rate would look like no shift at all against it.
    fake = own_profile(signed).model_copy(update={"label_rate": 0.02})
    stmt = reference.statement("credit", digest, signed.trained.data_evidence.subject.digest, fake)
    if forgery == "unsigned":
        body = canonical_json({"payloadType": "application/vnd.in-toto+json", "payload": "", "signatures": []})
    elif forgery == "attacker_key":
        create_key(tmp_path / "attacker.key")
        body = canonical_json(sign_statement(stmt, load_signer(tmp_path / "attacker.key")))
    elif forgery == "other_environment_key":  # a gate key, but not one dev trusts
        body = canonical_json(sign_statement(stmt, gate_keys.signer("prod")))
    else:  # a genuine record, signed by dev's key, about another model
        other = reference.statement("churn", digest, signed.trained.data_evidence.subject.digest, fake)
        body = canonical_json(sign_statement(other, gate_keys.signer("dev")))
    _plant(s3_server, registry, version, body)
    got = reference.read(registry, "credit", "dev")
    assert got.profile is None and got.used.source == "none"
    assert "has no signed reference profile; none verifies" in got.used.detail


def test_the_evidence_names_the_profile_by_digest_and_is_small(signed: Signed) -> None:
    """The data gate's input carries the profile's digest, not the profile (≈ 55 KB of a 56 KB input before)."""
    data = signed.trained.data_evidence
    body = reference.encode(own_profile(signed))
    assert data.poisoning.profile_sha256 == sha256_bytes(body)
    assert len(canonical_json(data.model_dump(mode="json"))) < 8_000 < len(body)


def test_promote_stores_the_profile_a_signed_data_decision_judged(registry: Registry, signed: Signed,
                                                                  gate_keys: GateKeys, promoted: tuple[str, str],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    version, digest = promoted
    data, genuine = signed.trained.data_evidence, reference.encode(own_profile(signed))
    forged = reference.encode(own_profile(signed).model_copy(update={"label_rate": 0.02}))
    dev = gate_keys.signer("dev")
    # Evidence that no signed decision judged (here: renamed to the forged profile's digest) is not believed.
    renamed = data.model_copy(update={"poisoning": data.poisoning.model_copy(
        update={"profile_sha256": sha256_bytes(forged)})})
    assert reference.store_accepted(registry, "credit", version, digest, renamed, forged, signed.attested, dev) is None
    # The judged evidence with a profile file other than the one it names: refused, loudly.
    assert reference.store_accepted(registry, "credit", version, digest, data, forged, signed.attested, dev) is None
    assert f"REFUSED, none stored: the profile file ({len(forged)} bytes, sha256 {sha256_bytes(forged)})" in caplog.text
    assert reference.store_accepted(registry, "credit", version, digest, data, None, signed.attested, dev) is None
    assert reference.read(registry, "credit", "dev").profile is None
    assert reference.store_accepted(registry, "credit", version, digest, data, genuine, signed.attested, dev) is not None
    got = reference.read(registry, "credit", "dev").profile
    assert got is not None and got.sha256 == own_profile(signed).sha256


def test_ingest_asks_the_registry_then_falls_back_to_the_shipped_reference(
        monkeypatch: pytest.MonkeyPatch, s3_server: LocalS3, registry: Registry, signed: Signed,
        gate_keys: GateKeys, promoted: tuple[str, str]) -> None:
    for k, v in bucket_env(s3_server, registry.bucket).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLSEC_GATE_TRUST_DIR", str(gate_keys.dir))
    version, digest = promoted
    fallback = reference.for_ingest("credit", "dev")
    assert fallback.used.source == "shipped"
    assert fallback.used.detail == f"credit_reference.json (credit@{version} (dev) has no signed reference profile)"
    reference.store_accepted(registry, "credit", version, digest, signed.trained.data_evidence,
                             reference.encode(own_profile(signed)), signed.attested, gate_keys.signer("dev"))
    got = reference.for_ingest("credit", "dev")
    assert got.used.source == "registry" and got.profile is not None
    assert got.profile.sha256 == own_profile(signed).sha256


@pytest.mark.parametrize("swapped", [False, True], ids=["untampered", "profile_swapped"])
def test_promote_task_stores_only_the_profile_file_the_data_gate_judged(
        swapped: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        s3_server: LocalS3, registry: Registry, signed: Signed, key_pair: keys.KeyPair, gate_keys: GateKeys) -> None:
    """The promote task, as the pipeline runs it, on a profile artifact that the pipeline's S3 identity wrote
    to the artifact store: an attacker holding that identity overwrites it with a profile against which their
    next, poisoned dataset looks clean (its label rate). The promotion goes through, the forgery is refused and
    never becomes the next ingest's reference; untampered, it is stored and the next ingest screens against it."""
    from mlsec.gates.attest import read_history, write_history
    from mlsec.ingest import task as ingest_task
    from mlsec.ingest.evidence import DataEvidence
    from mlsec.registry import task
    from registry_support import chain_policies

    for k, v in {**bucket_env(s3_server, registry.bucket), "MLSEC_PUBLIC_KEY": str(key_pair.public_key),
                 "MLSEC_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "MLSEC_ENV": "dev",
                 "MLSEC_GATE_TRUST_DIR": str(gate_keys.dir), "MLSEC_KEY_DIR": str(gate_keys.dir.parent),
                 "MLSEC_GATE_KEY": str(gate_keys.dir / "dev.key"), "MLSEC_DEPLOY_TARGET": "local",
                 "MLSEC_POLICY_DIR": str(chain_policies(tmp_path, key_pair.public_key, []))}.items():
        monkeypatch.setenv(k, v)
    signed.trained.training_evidence.write(tmp_path / "train.json")
    signed.trained.data_evidence.write(tmp_path / "data.json")
    write_history(tmp_path / "history.json", signed.attested)
    pipeline = _authenticated(s3_server, role=PIPELINE)
    artifact = {"Bucket": registry.bucket, "Key": "artifacts/mlsec-secure-pipeline-1/ingest/profile"}
    pipeline.put_object(**artifact, Body=reference.encode(own_profile(signed)))  # the ingest task's upload
    forged = own_profile(signed).model_copy(update={"label_rate": 0.02})
    if swapped:
        pipeline.put_object(**artifact, Body=reference.encode(forged))
    (tmp_path / "profile").write_bytes(pipeline.get_object(**artifact)["Body"].read())  # the promote task's download
    task.run(signed.bundle, tmp_path / "train.json", tmp_path / "data.json", tmp_path / "history.json", "credit",
             "dev", "alice", tmp_path / "out.json", tmp_path / "release.json", environment="dev",
             promotion_evidence_out=tmp_path / "promotion.json", profile=tmp_path / "profile")
    promotion = read_history(tmp_path / "out.json", gate_keys.trust)[-1].decision
    assert promotion.gate == "promotion" and promotion.allow  # the promotion stands either way
    version = promotion.subject[:16]
    # The next ingest for the model, as the pipeline's ingest task runs it.
    ingest_task.run("", "", tmp_path / "next" / "dataset", tmp_path / "next" / "evidence.json", "credit", "dev",
                    tmp_path / "next" / "profile")
    used = DataEvidence.model_validate_json((tmp_path / "next" / "evidence.json").read_bytes()).poisoning.reference
    assert used is not None
    if swapped:
        assert "REFUSED, none stored" in caplog.text
        assert used.source == "shipped" and used.sha256 != forged.sha256
        assert f"credit@{version} (dev) has no signed reference profile" in used.detail
    else:
        assert used.source == "registry" and used.detail == f"credit@{version} (dev)"
        assert used.sha256 == own_profile(signed).sha256
    # The next ingest's own profile artifact is what its evidence names.
    written = (tmp_path / "next" / "profile").read_bytes()
    assert sha256_bytes(written) == DataEvidence.model_validate_json(
        (tmp_path / "next" / "evidence.json").read_bytes()).poisoning.profile_sha256
