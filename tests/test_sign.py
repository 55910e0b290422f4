"""Sign: model-signing over every file plus a DSSE-signed SLSA provenance; any change is refused."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.sign import keys, stage
from mlsec.sign.attestation import Materials

from conftest import Signed


@pytest.fixture
def bundle(tmp_path: Path, signed: Signed) -> Path:
    return Path(shutil.copytree(signed.bundle, tmp_path / "bundle"))


def test_private_key_is_0600(key_pair: keys.KeyPair) -> None:
    assert stat.S_IMODE(key_pair.private_key.stat().st_mode) == 0o600
    assert keys.fingerprint(key_pair.public_key).startswith("sha256:")


def test_create_refuses_to_replace_a_key(key_pair: keys.KeyPair) -> None:
    with pytest.raises(FileExistsError):
        keys.create(key_pair.private_key.parent)


def test_signed_bundle_verifies(bundle: Path, key_pair: keys.KeyPair, signed: Signed) -> None:
    v = stage.verify(bundle, key_pair.public_key)
    assert v.model_digest == v.signed_digest == signed.trained.training_evidence.subject.digest
    assert v.attestation.dataset_digest == signed.trained.data_evidence.subject.digest
    assert set(v.attestation.decision_digests) == {d.digest for d in signed.decisions[:2]}


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda b: _flip_byte(b / "model" / "model.safetensors"), "Signature mismatch"),
    (lambda b: (b / "model" / "extra.bin").write_bytes(b"x"), "Extra files"),
    (lambda b: (b / "model" / "config.json").unlink(), "Missing files"),
    (lambda b: (b / "model" / ".gitignore").write_text("*"), "Extra files"),
])
def test_changed_model_is_refused(bundle: Path, key_pair: keys.KeyPair, tamper, message: str) -> None:  # type: ignore[no-untyped-def]
    tamper(bundle)
    with pytest.raises(ValueError, match=message):
        stage.verify(bundle, key_pair.public_key)


def test_wrong_public_key_is_refused(bundle: Path, other_key_pair: keys.KeyPair) -> None:
    with pytest.raises(ValueError, match="signature verification failed"):
        stage.verify(bundle, other_key_pair.public_key)


def test_signature_from_another_model_is_refused(tmp_path: Path, bundle: Path, key_pair: keys.KeyPair) -> None:
    other_model = tmp_path / "other"
    shutil.copytree(bundle / "model", other_model)
    (other_model / "config.json").write_text("{}")
    materials = Materials("d", "a" * 64, {}, "c", "i")
    other = stage.sign(other_model, tmp_path / "other-bundle", key_pair, materials, "x")
    shutil.copy(other / stage.SIGNATURE, bundle / stage.SIGNATURE)
    with pytest.raises(ValueError, match="Signature mismatch"):
        stage.verify(bundle, key_pair.public_key)


def test_tampered_attestation_is_refused(bundle: Path, key_pair: keys.KeyPair) -> None:
    import base64

    env = json.loads((bundle / stage.ATTESTATION).read_text())
    stmt = json.loads(base64.b64decode(env["payload"]))
    stmt["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"] = "b" * 64
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    (bundle / stage.ATTESTATION).write_text(json.dumps(env))
    with pytest.raises(ValueError, match="attestation signature does not verify"):
        stage.verify(bundle, key_pair.public_key)


def test_model_changed_after_signing_is_denied_by_the_signing_gate(
        bundle: Path, key_pair: keys.KeyPair, engine: InProcessEngine, signed: Signed) -> None:
    _flip_byte(bundle / "model" / "model.safetensors")
    ev = stage.evidence(bundle, "credit", key_pair.public_key)
    d = evaluate("signing", ev, environment="dev", engine=engine, decisions=signed.decisions[:2])
    assert not d.allow
    assert "model signature did not verify" in d.deny
    assert any("attestation is about" in r for r in d.deny)


def _write_formats(d: Path) -> None:
    import pickle

    import torch
    from safetensors.torch import save_file

    (d / "a.json").write_text('{"x": 1}')
    (d / "null.json").write_text("null")
    (d / "p.json").write_bytes(pickle.dumps({"x": 1}, protocol=4))
    torch.save({"w": torch.zeros(2)}, d / "t.pt")
    save_file({"w": torch.zeros(2)}, str(d / "m.safetensors"))
    (d / "short.safetensors").write_bytes((10_000).to_bytes(8, "little") + b"{}")  # header longer than the file
    header = b'{"a":1}'.ljust(640)  # a header length whose first bytes read like a pickle's (80 02)
    (d / "640.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    (d / "empty").write_bytes(b"")
    (d / "p0").write_bytes(pickle.dumps({"x": 1}, protocol=0))


def test_formats_are_read_from_bytes_not_names(tmp_path: Path) -> None:
    from mlsec.sign.formats import sniff

    _write_formats(tmp_path)
    assert {f.name: sniff(f) for f in tmp_path.iterdir()} == {
        "a.json": "json", "null.json": "json", "p.json": "pickle", "t.pt": "zip", "m.safetensors": "safetensors",
        "short.safetensors": "unknown", "empty": "unknown", "p0": "unknown", "640.safetensors": "safetensors"}


def test_pickle_disguised_as_json_is_denied_by_the_signing_gate(
        tmp_path: Path, signed: Signed, key_pair: keys.KeyPair, engine: InProcessEngine) -> None:
    import pickle

    model = Path(shutil.copytree(signed.trained.model_dir, tmp_path / "model"))
    (model / "tokenizer.json").write_bytes(pickle.dumps({"vocab": ["a"]}, protocol=4))
    bundle = stage.sign(model, tmp_path / "bundle", key_pair, Materials("d", "a" * 64, {}, "c", "i"), "x")
    ev = stage.evidence(bundle, "credit", key_pair.public_key)
    assert ev.signature.verified and ev.formats["tokenizer.json"] == "pickle"  # signed, and still refused
    d = evaluate("signing", ev, environment="dev", engine=engine, decisions=signed.decisions[:2])
    assert not d.allow
    assert 'file "tokenizer.json" is pickle, not an allowed model format (safetensors, json)' in d.deny
