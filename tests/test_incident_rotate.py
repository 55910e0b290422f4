"""`mlsec incident rotate-signing-key` (threat T23) against the real SeaweedFS registry and model server: what
prod serves is verified with the old key, re-signed and re-attested with a new one, and served with the new
key; a tampered version is refused, never re-signed; after its date the old (stolen) key gets nothing in."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mlsec import incident
from mlsec.cli import main
from mlsec.gates.engine import InProcessEngine
from mlsec.incident import rotate
from mlsec.registry.store import Registry, RegistryError
from mlsec.serve.model import SignedModel
from mlsec.sign import keyring, keys
from mlsec.sign import stage as signing
from mlsec.sign.attestation import Materials
from mlsec.sign.keyring import RetiredKey
from mlsec.sign.methods import SigningError, Trust, configured_signing, configured_trust

from conftest import GateKeys, Signed, _authenticated
from registry_support import Approver, promote
from serve_support import GOOD, V1, post, start
from test_registry import approvers, chain  # noqa: F401  (fixtures: prod needs approvals and a trusted signer)


@pytest.fixture
def key_dir(tmp_path: Path, key_pair: keys.KeyPair, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local key directory holding the key the fixture models are signed with: the key about to be rotated."""
    for var in ("MLSEC_SIGNING_KEY", "MLSEC_PUBLIC_KEY", "MLSEC_SIGNING_TRUST", "MLSEC_SIGNING_METHOD"):
        monkeypatch.delenv(var, raising=False)
    d = tmp_path / "keys"
    d.mkdir()
    shutil.copy(key_pair.private_key, d / keys.PRIVATE)
    shutil.copy(key_pair.public_key, d / keys.PUBLIC)
    return d


def _old(key_dir: Path) -> Trust:
    return configured_trust(key_dir)


# Through prod each promotion judges the model again under staging's and prod's policy (~20 s here), so
# make test plays the rotation on dev and `make test-rotation` (MLSEC_ROTATION_PROD=1) through prod.
THROUGH_PROD = pytest.mark.skipif(os.environ.get("MLSEC_ROTATION_PROD") != "1",
                                  reason="through prod: make test-rotation (MLSEC_ROTATION_PROD=1)")


@pytest.mark.parametrize("stages", [("dev",), pytest.param(("dev", "staging", "prod"), marks=THROUGH_PROD)],
                         ids=["dev", "prod"])
def test_rotation_resigns_what_is_served_and_the_server_serves_it_with_the_new_key(
        tmp_path: Path, registry: Registry, signed: Signed, key_pair: keys.KeyPair, key_dir: Path,
        chain: InProcessEngine, gate_keys: GateKeys, approvers: list[Approver],  # noqa: F811
        stages: tuple[str, ...]) -> None:
    version = signed.register(registry, key_pair)
    for stage in stages:
        for a in approvers if stage != "dev" else []:
            registry.approve("credit", version, stage, a.identity, a.key.private_key)
        assert promote(registry, version, stage, key_pair, chain, gate_keys).allow
    log = tmp_path / "incidents.jsonl"
    until = keyring.today() + timedelta(days=30)
    served = tuple(s for s in stages if s != "dev") or stages  # the default is prod and staging
    r = rotate.rotate(registry, key_dir, _old(key_dir), until, log, "oncall", served)
    assert [(v.version, sorted(v.stages), v.status) for v in r.versions] == [(version, sorted(served), "re-signed")]
    new_pub = key_dir / keys.PUBLIC
    assert keys.fingerprint(new_pub) == r.new != r.old == keys.fingerprint(key_pair.public_key)
    # The old private key is gone; the trust file names the new key active and the old one verify-only.
    assert keys.key_fingerprint(keys.load_private(key_dir / keys.PRIVATE).public_key()) == r.new
    trust = configured_trust(key_dir)
    assert [(k.fingerprint, k.verify_until) for k in trust.retired] == [(r.old, until)]
    # Prod is pulled and served with the new key alone: the re-signed set verifies, signature and provenance.
    only_new = Trust("key", public_key=new_pub)
    pulled = tmp_path / "pulled"
    assert registry.pull("credit", stages[-1], pulled, only_new).version == version
    assert signing.verify(pulled, only_new).signer == r.new
    if "prod" in stages:  # the real server over HTTP (its start costs ~20 s on a loaded machine)
        srv = start(tmp_path, pulled, new_pub, ["alice"])
        try:
            assert post(srv.connect(), V1, {"instances": [GOOD]}, srv.keys["alice"])[0] == 200
        finally:
            srv.stop()
    else:  # the server's own verify-then-load, in process
        model = SignedModel("credit", pulled, only_new, expected_digest=registry.record("credit", version).model_digest)
        assert model.load() and model.predict({"instances": [GOOD]})["predictions"]
    # The registry's own facts hold: the version's signed records and its manifest still agree.
    check = registry.verify_version("credit", version, trust).check
    assert check.signature_verified and check.attestation_verified and check.cache_mismatches == []
    # The sign stage now signs with the new key.
    assert configured_signing(key_dir, create_key=False).keys == keys.KeyPair(key_dir / keys.PRIVATE, new_pub)
    # Every action is in the chained incident log; a rerun finds the work done and stores nothing twice.
    actions = [e["action"] for e in incident.verify_log(log)]
    assert actions == ["rotate-signing-key:start", "re-sign", "rotate-signing-key"]
    again = rotate.resign_served(registry, trust, keys.KeyPair(key_dir / keys.PRIVATE, new_pub), log, "oncall", served)
    assert [v.status for v in again] == ["already"]


def test_the_retired_key_never_signs_again(key_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                           key_pair: keys.KeyPair) -> None:
    keyring.retire(keyring.trust_path(key_dir), key_pair.public_key, keys.create(key_dir / "new").public_key,
                   keyring.today() + timedelta(days=30))
    monkeypatch.setenv("MLSEC_SIGNING_KEY", str(key_pair.private_key))
    monkeypatch.setenv("MLSEC_PUBLIC_KEY", str(key_pair.public_key))
    with pytest.raises(SigningError, match="retired"):
        configured_signing(key_dir, create_key=False)
    with pytest.raises(SigningError, match="not the active signing key"):
        configured_trust(key_dir)  # a verifier configured with the retired key as if it were active


def test_tampered_prod_model_is_refused_not_resigned(tmp_path: Path, registry: Registry, signed: Signed,
                                                     key_pair: keys.KeyPair, key_dir: Path, engine: InProcessEngine,
                                                     gate_keys: GateKeys, s3_server: Any) -> None:
    """The attacker swapped the weights in the registry (the pipeline's S3 identity, a newer object version);
    a rotation that re-signed what it found would launder them. It refuses, loudly, and stores nothing."""
    version = signed.register(registry, key_pair)
    assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
    attacker = _authenticated(s3_server, role="pipeline")
    key = f"models/credit/{version}/model/model.safetensors"
    body = bytearray(attacker.get_object(Bucket=registry.bucket, Key=key)["Body"].read())
    body[-1] ^= 1
    attacker.put_object(Bucket=registry.bucket, Key=key, Body=bytes(body))
    log = tmp_path / "incidents.jsonl"
    r = rotate.rotate(registry, key_dir, _old(key_dir), keyring.today() + timedelta(days=1), log, "oncall",
                      stages=("dev",))
    assert [(v.version, v.status) for v in r.versions] == [(version, "REFUSED")]
    assert "not what the old key and its promotion vouch for" in r.versions[0].detail
    assert registry.signature_set("credit", version, Trust("key", public_key=key_dir / keys.PUBLIC)) is None
    assert [e["action"] for e in incident.verify_log(log)][1] == "re-sign-refused"
    with pytest.raises(RegistryError):
        registry.pull("credit", "dev", tmp_path / "pulled", configured_trust(key_dir))


def _signed_by(tmp_path: Path, signed: Signed, signer: keys.KeyPair) -> Path:
    """A swapped model (one weight file changed) signed by signer: what the thief of that key can make."""
    swapped = tmp_path / "swapped"
    shutil.copytree(signed.trained.model_dir, swapped)
    weights = swapped / "model.safetensors"
    body = bytearray(weights.read_bytes())
    body[-1] ^= 1
    weights.write_bytes(bytes(body))
    materials = Materials(dataset_uri="data/credit_sample.csv", dataset_digest=signed.trained.data_evidence.subject.digest,
                          decision_digests={}, code_commit="stolen", image="local")
    return signing.sign(swapped, tmp_path / "forged", signer, materials, "attacker")


def test_T23_thief_with_the_old_key_cannot_launder_a_swap_through_the_rotation(
        tmp_path: Path, registry: Registry, signed: Signed, key_pair: keys.KeyPair, key_dir: Path,
        engine: InProcessEngine, gate_keys: GateKeys, s3_server: Any) -> None:
    """The thief holds the old key and the pipeline's S3 identity: it swaps the weights and writes a signature
    and provenance for them made with the stolen key (newer object versions), hoping the rotation re-signs
    them with the new key. They verify with the old key, but are not the bytes the signed promotion names."""
    version = signed.register(registry, key_pair)
    assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
    forged = _signed_by(tmp_path, signed, key_pair)
    attacker = _authenticated(s3_server, role="pipeline")
    for f in sorted(p for p in forged.rglob("*") if p.is_file()):
        attacker.put_object(Bucket=registry.bucket, Key=f"models/credit/{version}/{f.relative_to(forged).as_posix()}",
                            Body=f.read_bytes())
    log = tmp_path / "incidents.jsonl"
    r = rotate.rotate(registry, key_dir, _old(key_dir), keyring.today() + timedelta(days=1), log, "oncall",
                      stages=("dev",))
    assert [(v.version, v.status) for v in r.versions] == [(version, "REFUSED")], r.versions
    assert "not the" in r.versions[0].detail and "signed promotion names" in r.versions[0].detail
    assert registry.signature_set("credit", version, Trust("key", public_key=key_dir / keys.PUBLIC)) is None


def test_a_planted_set_under_the_new_key_is_reported(tmp_path: Path, registry: Registry, signed: Signed,
                                                     key_pair: keys.KeyPair, key_dir: Path, engine: InProcessEngine,
                                                     gate_keys: GateKeys, s3_server: Any) -> None:
    """Someone with S3 write access stores a set under the new key's hint first: the rotation says so."""
    version = signed.register(registry, key_pair)
    assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
    new = keys.ensure(key_dir / rotate.NEXT_DIR)  # the key the rotation will make (a rerun reuses it)
    hint = keyring.key_hint(keys.load_public(new.public_key))
    prefix = f"models/credit/{version}/signatures/{hint}/"
    attacker = _authenticated(s3_server, role="pipeline")
    for name in (signing.SIGNATURE, signing.ATTESTATION):
        attacker.put_object(Bucket=registry.bucket, Key=prefix + name, Body=(signed.bundle / name).read_bytes())
    r = rotate.rotate(registry, key_dir, _old(key_dir), keyring.today(), tmp_path / "log.jsonl", "oncall",
                      stages=("dev",))
    assert [v.status for v in r.versions] == ["REFUSED"] and "does not verify" in r.versions[0].detail


def _rotated_trust(new: keys.KeyPair, old: keys.KeyPair, days_left: int) -> Trust:
    until = keyring.today() + timedelta(days=days_left)
    return Trust("key", public_key=new.public_key,
                 retired=(RetiredKey(keys.fingerprint(old.public_key), old.public_key, until),))


def test_T23_stolen_old_key_gets_no_model_loaded_after_its_date(tmp_path: Path, signed: Signed,
                                                                key_pair: keys.KeyPair,
                                                                other_key_pair: keys.KeyPair) -> None:
    """The thief holds the old (rotated-out) key only; the day after its verify-only date, a model it signed
    is refused by the server's load and by verification, while one re-signed with the new key loads."""
    forged = _signed_by(tmp_path, signed, key_pair)
    trust = _rotated_trust(other_key_pair, key_pair, days_left=-1)
    model = SignedModel("credit", forged, trust)
    with pytest.raises(Exception, match="retired key .* only until"):
        model.load()
    assert not model.ready


def test_retired_key_verifies_up_to_and_including_its_date(tmp_path: Path, signed: Signed, key_pair: keys.KeyPair,
                                                          other_key_pair: keys.KeyPair) -> None:
    """The boundary: the last valid day verifies, the day after does not; the active key always does."""
    assert signing.verify(signed.bundle, _rotated_trust(other_key_pair, key_pair, days_left=0)).signer == \
        keys.fingerprint(key_pair.public_key)
    with pytest.raises(ValueError, match="retired key"):
        signing.verify(signed.bundle, _rotated_trust(other_key_pair, key_pair, days_left=-1))
    day = keyring.today()
    r = RetiredKey("sha256:x", key_pair.public_key, day)
    assert keyring.trusted_on(r, day) and not keyring.trusted_on(r, day + timedelta(days=1))


def test_cli_rotates_prints_no_private_key_and_the_pipeline_pulls_with_the_new_key(
        tmp_path: Path, registry: Registry, signed: Signed, key_pair: keys.KeyPair, key_dir: Path,
        engine: InProcessEngine, gate_keys: GateKeys, s3_server: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import bucket_env

    version = signed.register(registry, key_pair)
    assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
    for k, v in {**bucket_env(s3_server, registry.bucket), "MLSEC_KEY_DIR": str(key_dir), "MLSEC_ENV": "dev",
                 "MLSEC_HOME": str(tmp_path / "home"), "MLSEC_GATE_TRUST_DIR": str(gate_keys.dir)}.items():
        monkeypatch.setenv(k, v)
    assert main(["incident", "rotate-signing-key", "--stage", "dev", "--by", "oncall"]) == 0
    out = capsys.readouterr().out
    assert f"{version} (dev): re-signed" in out and "Secret mlsec-signing-key" in out and "PRIVATE" not in out
    assert key_pair.private_key.read_text() not in out and (key_dir / keys.PRIVATE).read_text() not in out
    assert main(["registry", "pull", "credit", "dev", "-o", str(tmp_path / "pulled")]) == 0
    assert signing.verify(tmp_path / "pulled", key_dir / keys.PUBLIC).model_digest.startswith(version)
    entries = incident.verify_log(incident.incident_log(tmp_path / "home"))
    assert [e["action"] for e in entries][-1] == "rotate-signing-key" and entries[-1]["by"] == "oncall"


def test_cli_refuses_a_bad_date(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["incident", "rotate-signing-key", "--old-key-valid-until", "next tuesday"])
    assert "next tuesday" in capsys.readouterr().err


def test_the_old_key_verifies_for_90_days_at_most(tmp_path: Path, key_pair: keys.KeyPair, registry: Registry) -> None:
    old = Trust("key", public_key=key_pair.public_key)
    with pytest.raises(ValueError, match="more than 90 days away"):
        rotate.rotate(registry, tmp_path, old, keyring.today() + timedelta(days=91), tmp_path / "log", "ops")
    assert not (tmp_path / rotate.NEXT_DIR).exists() and not (tmp_path / "log").exists()  # refused before acting
