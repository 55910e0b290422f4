"""Serving: verify before load, validate every request, listen on loopback only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kserve.errors import InvalidInput

from mlsec.serve import auth
from mlsec.serve.deploy import free_port
from mlsec.serve.model import SignedModel
from mlsec.sign import keys

from conftest import Signed, bucket_env

GOOD = {"age": 40, "income": 50000.0, "loan_amount": 10000.0, "credit_history_years": 10,
        "num_late_payments": 0, "debt_to_income": 0.3}


@pytest.fixture(scope="module")
def model(signed: Signed, key_pair: keys.KeyPair) -> SignedModel:
    m = SignedModel("credit", signed.bundle, key_pair.public_key)
    m.load()
    return m


def test_prediction_is_label_and_rounded_probability(model: SignedModel) -> None:
    (p,) = model.predict({"instances": [GOOD]})["predictions"]
    assert set(p) == {"label", "probability"} and p["label"] in (0, 1)
    assert p["probability"] == round(p["probability"], 2)


@pytest.mark.parametrize(("payload", "message"), [
    ({}, "instances"),
    ({"instances": []}, "at least one instance"),
    ({"instances": [[1, 2, 3]]}, "instances\\[0\\] must list 6 values in the order"),
    ({"instances": ["age"]}, "must be an object keyed by feature name or a list in feature order"),
    ({"instances": [{**GOOD, "age": float("nan")}]}, "instances\\[0\\].age must be a finite number"),
    ({"instances": [{**GOOD, "income": "lots"}]}, "income must be a number"),
    ({"instances": [{**GOOD, "income": True}]}, "income must be a number"),
    ({"instances": [{k: v for k, v in GOOD.items() if k != "age"}]}, "missing features \\['age'\\]"),
    ({"instances": [{**GOOD, "ssn": "123-45-6789"}]}, "unknown features \\['ssn'\\]"),
    ({"instances": [GOOD] * 257}, "exceeds the maximum 256"),
    ({"instances": [{**GOOD, "age": 7}]}, "age is outside the data contract range \\[18.0, 120.0\\]"),
])
def test_invalid_input_is_rejected_with_the_field(model: SignedModel, payload: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInput, match=message):
        model.predict(payload)


def test_tampered_model_is_not_loaded(tmp_path: Path, signed: Signed, key_pair: keys.KeyPair) -> None:
    bundle = Path(shutil.copytree(signed.bundle, tmp_path / "b"))
    weights = bundle / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    m = SignedModel("credit", bundle, key_pair.public_key)
    with pytest.raises(ValueError, match="signature verification failed"):
        m.load()
    assert not m.ready


def test_unexpected_digest_is_not_loaded(signed: Signed, key_pair: keys.KeyPair) -> None:
    with pytest.raises(ValueError, match="is not the expected"):
        SignedModel("credit", signed.bundle, key_pair.public_key, expected_digest="0" * 64).load()


def _listening(pid: int) -> set[tuple[str, int]]:
    import psutil

    proc = psutil.Process(pid)
    conns = getattr(proc, "net_connections", None) or proc.connections  # renamed in psutil 6
    return {(c.laddr.ip, c.laddr.port) for c in conns(kind="tcp") if c.status == psutil.CONN_LISTEN}


def test_server_refuses_to_start_on_tampered_bundle(tmp_path: Path, signed: Signed, key_pair: keys.KeyPair) -> None:
    bundle = Path(shutil.copytree(signed.bundle, tmp_path / "b"))
    (bundle / "model" / "config.json").write_text(json.dumps({"hacked": True}))
    auth.create(tmp_path / "keys.json", "c")
    out = subprocess.run([sys.executable, "-m", "mlsec.cli", "serve", "--name", "credit", "--bundle", str(bundle),
                          "--public-key", str(key_pair.public_key), "--port", str(free_port()),
                          "--api-keys", str(tmp_path / "keys.json")], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "signature verification failed" in out.stderr


def test_server_refuses_to_start_without_api_keys(tmp_path: Path, signed: Signed, key_pair: keys.KeyPair) -> None:
    out = subprocess.run([sys.executable, "-m", "mlsec.cli", "serve", "--name", "credit", "--bundle",
                          str(signed.bundle), "--public-key", str(key_pair.public_key), "--port", str(free_port()),
                          "--api-keys", str(tmp_path / "none.json")], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and f"no API keys at {tmp_path / 'none.json'}" in out.stderr
    assert "mlsec keys api-key" in out.stderr  # says how to make one
    (tmp_path / "none.json").write_text("{not json")
    out = subprocess.run([sys.executable, "-m", "mlsec.cli", "serve", "--name", "credit", "--bundle",
                          str(signed.bundle), "--api-keys", str(tmp_path / "none.json")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "cannot read API keys" in out.stderr


def test_server_refuses_to_start_on_unsigned_bundle(tmp_path: Path, signed: Signed, key_pair: keys.KeyPair) -> None:
    bundle = Path(shutil.copytree(signed.bundle, tmp_path / "b"))
    (bundle / "model.sig").unlink()
    auth.create(tmp_path / "keys.json", "c")
    out = subprocess.run([sys.executable, "-m", "mlsec.cli", "serve", "--name", "credit", "--bundle", str(bundle),
                          "--public-key", str(key_pair.public_key), "--port", str(free_port()),
                          "--api-keys", str(tmp_path / "keys.json")], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "lacks model.sig" in out.stderr


def test_server_refuses_to_start_on_revoked_version(tmp_path: Path, s3_server, registry, signed: Signed,  # type: ignore[no-untyped-def]
                                                   key_pair: keys.KeyPair, gate_keys) -> None:
    import os

    version = signed.register(registry, key_pair)
    registry.revoke("credit", version, "poisoned", by="sec", signer=gate_keys.signer("dev"))
    auth.create(tmp_path / "keys.json", "c")
    env = {**os.environ, **bucket_env(s3_server, registry.bucket), "MLSEC_HOME": str(tmp_path),
           "MLSEC_GATE_TRUST_DIR": str(gate_keys.dir)}
    out = subprocess.run([sys.executable, "-m", "mlsec.cli", "serve", "--name", "credit", "--ref", version,
                          "--public-key", str(key_pair.public_key), "--port", str(free_port()),
                          "--api-keys", str(tmp_path / "keys.json")], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0 and f"credit version {version} is revoked" in out.stderr
