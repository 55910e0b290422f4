"""Review attacks on key rotation (T23) and the reference profile by digest (issue 12), played with what the
attacker holds: the pipeline's S3 credentials and the raw S3 API against the real SeaweedFS."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from mlsec.gates.engine import InProcessEngine
from mlsec.registry import reference
from mlsec.registry.seaweed import LocalS3
from mlsec.registry.store import Registry, RegistryError
from mlsec.sign import keys

from conftest import GateKeys, Signed, _authenticated
from registry_support import promote
from test_incident_rotate import key_dir as key_dir  # the fixture: the key about to be rotated
from test_registry_attacks import promoted as promoted  # the fixture: the sample's model in dev

# 200 KB, under the 1 MiB envelope cap: Python's json parser recurses once per opener and gives up with
# RecursionError, which is no ValueError. Raw, or as the payload of an envelope-shaped document.
DEEP = b"[" * 200_000
DEEP_PAYLOAD = json.dumps({"payloadType": "application/vnd.in-toto+json",
                           "payload": base64.b64encode(DEEP).decode(), "signatures": []}).encode()


@pytest.fixture
def attacker(s3_server: LocalS3) -> Any:
    """The pipeline's identity: read, write and list, as every pipeline pod holds it."""
    return _authenticated(s3_server, role="pipeline")


@pytest.mark.parametrize("body", [DEEP, DEEP_PAYLOAD], ids=["raw", "payload"])
def test_T07_deeply_nested_records_planted_beside_signed_ones_are_ignored_not_fatal(
        tmp_path: Path, registry: Registry, attacker: Any, promoted: str, key_pair: keys.KeyPair,
        engine: InProcessEngine, gate_keys: GateKeys, signed: Signed, body: bytes) -> None:
    """A forged record must be ignored like any other unsigned one. A JSON nesting bomb raised RecursionError
    out of the envelope parser: one object under promotions/ took down head() (no stage resolves, the server
    cannot pull, no promotion moves), one under attestations/ every verification of the version, and one under
    reference/ knocked out the genuine signed reference (the next ingest fell back to the shipped one)."""
    record = registry.record("credit", promoted)
    assert record is not None
    reference.store(registry, "credit", promoted, record.model_digest, signed.trained.data_evidence.subject.digest,
                    signed.trained.profile, gate_keys.signer("dev"))  # type: ignore[arg-type]
    for key in (f"promotions/credit/dev/99999999T000000000000Z-{'f' * 32}.dsse.json",
                f"models/credit/{promoted}/attestations/{'0' * 32}.dsse.json",
                f"models/credit/{promoted}/reference/{'0' * 64}.dsse.json"):
        attacker.put_object(Bucket=registry.bucket, Key=key, Body=body)
    assert registry.resolve("credit", "dev") == (promoted, record.model_digest)
    assert registry.pull("credit", "dev", tmp_path / "pulled", key_pair.public_key).version == promoted
    assert promote(registry, promoted, "dev", key_pair, engine, gate_keys).allow
    got = reference.read(registry, "credit", "dev")
    assert got.used.source == "registry" and got.profile is not None


def test_T23_a_set_planted_under_the_active_keys_hint_only_blocks_with_a_named_error(
        tmp_path: Path, registry: Registry, attacker: Any, promoted: str, key_pair: keys.KeyPair) -> None:
    """signatures/<active key hint>/ is where a rotation's re-signed set lies, and the pipeline can write there
    first. What it plants is verified like any signature (this one is a nesting bomb, which escaped the
    fetch as RecursionError): the pull is refused with a RegistryError, nothing is installed."""
    from mlsec.sign.keyring import key_hint

    hint = key_hint(keys.load_public(key_pair.public_key))
    for name in ("provenance.dsse.json", "model.sig"):
        attacker.put_object(Bucket=registry.bucket, Key=f"models/credit/{promoted}/signatures/{hint}/{name}", Body=DEEP)
    with pytest.raises(RegistryError, match="not a model-signing signature"):
        registry.pull("credit", "dev", tmp_path / "pulled", key_pair.public_key)
    assert not (tmp_path / "pulled").exists()
    assert not registry.verify_version("credit", promoted, key_pair.public_key).check.signature_verified


def test_T23_rotation_does_not_launder_a_provenance_the_stolen_key_rewrote(
        tmp_path: Path, registry: Registry, attacker: Any, promoted: str, key_pair: keys.KeyPair,
        key_dir: Path) -> None:
    """The thief holds the old model key and the pipeline's S3 identity. The model bytes are pinned by the
    gate-signed promotion, but the provenance's facts (dataset, decisions, dataset provenance) were vouched
    for only by the stolen key: a newer object version of provenance.dsse.json, signed with it, claiming
    another dataset, verified with the old key, and the rotation re-signed it with the new key, so the lie
    outlived the old key's window. The registry wrote the set once (conditional create): a second stored
    version of it is tampering, and the version is REFUSED, not re-signed."""
    from datetime import timedelta

    from mlsec.incident import rotate
    from mlsec.sign import keyring
    from mlsec.sign.attestation import open_signed
    from mlsec.sign.methods import Signing, configured_trust

    key = f"models/credit/{promoted}/provenance.dsse.json"
    stmt = open_signed(attacker.get_object(Bucket=registry.bucket, Key=key)["Body"].read(),
                       keys.load_public(key_pair.public_key))
    build = stmt["predicate"]["buildDefinition"]
    build.get("internalParameters", {}).pop("datasetProvenance", None)
    build["resolvedDependencies"] = [d for d in build["resolvedDependencies"]
                                     if d.get("annotations", {}).get("role") != "dataset-provenance"]
    for d in build["resolvedDependencies"]:
        if d.get("annotations", {}).get("role") == "dataset":
            d["digest"]["sha256"] = "e" * 64
    attacker.put_object(Bucket=registry.bucket, Key=key,
                        Body=json.dumps(Signing("key", key_pair).sign_document(stmt)).encode())
    assert registry.verify_version("credit", promoted, key_pair.public_key).dataset_digest == "e" * 64  # believed

    r = rotate.rotate(registry, key_dir, configured_trust(key_dir), keyring.today() + timedelta(days=1),
                      tmp_path / "incidents.jsonl", "oncall", ("dev",))
    assert [(v.version, v.status) for v in r.versions] == [(promoted, "REFUSED")]
    assert "provenance.dsse.json" in r.versions[0].detail
    assert not attacker.list_objects_v2(Bucket=registry.bucket, Prefix=f"models/credit/{promoted}/signatures/").get("Contents")


def test_T01_a_profile_artifact_swapped_for_a_huge_file_is_refused_unread(
        tmp_path: Path, signed: Signed, registry: Registry, gate_keys: GateKeys,
        caplog: pytest.LogCaptureFixture) -> None:
    """Whoever can write the KFP artifact swaps ingest's profile for a 1 TiB (sparse) file: promote read it
    whole (read_bytes) before hashing it, after the promotion was signed, and ran out of memory instead of
    refusing it. Now at most one byte past the cap is read and the file is refused, naming the cap."""
    huge = tmp_path / "profile"
    with huge.open("wb") as f:
        f.truncate(1 << 40)
    body = reference.read_profile(huge)
    assert len(body) == reference.MAX_PROFILE_BYTES + 1
    record_digest = "0" * 64  # never reached: the file is refused before anything is signed or stored
    assert reference.store_accepted(registry, "credit", "0" * 16, record_digest, signed.trained.data_evidence, body,
                                    signed.attested, gate_keys.signer("dev")) is None
    assert f"REFUSED, none stored: the profile file is over {reference.MAX_PROFILE_BYTES} bytes" in caplog.text
    genuine = tmp_path / "genuine"
    genuine.write_bytes(reference.encode(signed.trained.profile))  # type: ignore[arg-type]
    assert reference.judged_profile(reference.read_profile(genuine), signed.trained.data_evidence,
                                    signed.attested).sha256 == signed.trained.data_evidence.poisoning.profile_sha256


def test_T07_an_oversized_record_planted_in_the_registry_is_read_only_to_the_limit(
        registry: Registry, attacker: Any, promoted: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records are read whole into memory: a multi-gigabyte object planted under promotions/ with the pipeline's
    S3 key would exhaust the reader (ingest, promote, the server). At most one byte past the limit is read;
    the truncated body does not parse, so it is ignored like any forgery."""
    from mlsec.registry import store

    monkeypatch.setattr(store, "RECORD_LIMIT", 64 * 1024)  # the real limit (16 MiB) scaled down
    key = f"promotions/credit/dev/99999999T000000000000Z-{'e' * 32}.dsse.json"
    attacker.put_object(Bucket=registry.bucket, Key=key, Body=b'{"payload": "' + b"A" * 1_000_000 + b'"}')
    got = registry._get(key)  # noqa: SLF001
    assert got is not None and len(got[0]) == 64 * 1024 + 1
    assert registry.resolve("credit", "dev")[0] == promoted
