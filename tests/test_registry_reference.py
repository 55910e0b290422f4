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
    profile = signed.trained.data_evidence.poisoning.profile
    assert profile is not None  # ingest put the accepted dataset's profile into its evidence
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


def test_promote_stores_the_profile_a_signed_data_decision_judged(registry: Registry, signed: Signed,
                                                                  gate_keys: GateKeys,
                                                                  promoted: tuple[str, str]) -> None:
    version, digest = promoted
    data = signed.trained.data_evidence
    # Evidence that no signed decision judged (here: its profile rewritten) is not stored.
    assert data.poisoning.profile is not None
    forged = data.model_copy(update={"poisoning": data.poisoning.model_copy(
        update={"profile": data.poisoning.profile.model_copy(update={"label_rate": 0.02})})})
    assert reference.store_accepted(registry, "credit", version, digest, forged, signed.attested,
                                    gate_keys.signer("dev")) is None
    assert reference.read(registry, "credit", "dev").profile is None
    assert reference.store_accepted(registry, "credit", version, digest, data, signed.attested,
                                    gate_keys.signer("dev")) is not None
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
    reference.store_accepted(registry, "credit", version, digest, signed.trained.data_evidence, signed.attested,
                             gate_keys.signer("dev"))
    got = reference.for_ingest("credit", "dev")
    assert got.used.source == "registry" and got.profile is not None
    assert got.profile.sha256 == own_profile(signed).sha256
