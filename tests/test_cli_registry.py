"""`mlsec registry ...` against the real SeaweedFS server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlsec.cli import main
from mlsec.registry.seaweed import LocalS3
from mlsec.registry.store import Registry
from mlsec.sign import keys

from conftest import GateKeys, Signed, bucket_env


@pytest.fixture
def cli_env(s3_server: LocalS3, registry: Registry, key_pair: keys.KeyPair, tmp_path: Path, gate_keys: GateKeys,
            monkeypatch: pytest.MonkeyPatch) -> Registry:
    for k, v in {**bucket_env(s3_server, registry.bucket), "MLSEC_PUBLIC_KEY": str(key_pair.public_key),
                 "MLSEC_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "MLSEC_ENV": "dev",
                 "MLSEC_GATE_TRUST_DIR": str(gate_keys.dir)}.items():
        monkeypatch.setenv(k, v)
    return registry


def test_registry_commands(cli_env: Registry, signed: Signed, key_pair: keys.KeyPair, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    version = signed.register(cli_env, key_pair)
    assert main(["registry", "promote", "credit", version, "--stage", "dev", "--author", "alice"]) == 0
    assert "[promotion] ALLOW" in capsys.readouterr().out
    # No --env: the prod stage is judged by prod's policy (dev's would ask for one approval only).
    assert main(["registry", "promote", "credit", version, "--stage", "prod", "--author", "alice"]) == 1
    out = capsys.readouterr().out
    assert "stages may not be skipped" in out and "prod needs 2 signed approvals" in out
    assert main(["registry", "promote", "credit", version, "--stage", "prod", "--env", "dev"]) == 1
    assert "stage prod is not governed by the dev environment" in capsys.readouterr().out

    assert main(["registry", "list"]) == 0
    assert f"credit\t{version}\tdev" in capsys.readouterr().out
    assert main(["registry", "show", "credit", "dev"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == version and shown["stages"] == ["dev"] and len(shown["promotions"]) == 3

    assert main(["registry", "pull", "credit", "dev", "-o", str(tmp_path / "pulled")]) == 0
    assert "verified" in capsys.readouterr().out and (tmp_path / "pulled" / "model.sig").exists()

    assert main(["registry", "inventory", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["stages"] == ["dev"] and row["gates_passed"] == ["data", "promotion", "signing", "training"]
    assert row["signer"] == keys.fingerprint(key_pair.public_key) and not row["revoked"]

    assert main(["registry", "revoke", "credit", version, "--reason", "leaked training data", "--by", "sec"]) == 0
    capsys.readouterr()
    assert main(["registry", "pull", "credit", version, "-o", str(tmp_path / "again")]) == 2
    assert "revoked" in capsys.readouterr().err
    assert main(["registry", "rollback", "credit", "--stage", "dev", "--to", version, "--author", "alice"]) == 1
    assert f"version {version} is revoked" in capsys.readouterr().out


def test_without_an_endpoint_the_local_registry_is_used(signed: Signed, key_pair: keys.KeyPair, tmp_path: Path,
                                                        gate_keys: GateKeys, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """After `make demo`, `mlsec registry list` shows what the demo registered, with no setup."""
    from mlsec.registry.seaweed import local_registry
    from mlsec.registry.task import registry_from_env

    for k in ("MLSEC_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLSEC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLSEC_GATE_TRUST_DIR", str(gate_keys.dir))
    with local_registry(tmp_path / "home" / "s3"):
        version = signed.register(registry_from_env(), key_pair)
    with LocalS3(tmp_path / "home" / "s3"):  # as while a run holds it: a second server would corrupt its data
        assert main(["registry", "list"]) == 2
        assert "in use by another mlsec process" in capsys.readouterr().err
    assert main(["registry", "list"]) == 0
    out = capsys.readouterr()
    assert f"credit\t{version}\t-" in out.out and "using the local registry" in out.err
    assert main(["registry", "list"]) == 0  # the server it started has stopped and released the data


def test_unreachable_registry_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from mlsec.serve.deploy import free_port

    for k, v in {"MLSEC_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}", "MLSEC_S3_MAX_ATTEMPTS": "1",
                 "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}.items():
        monkeypatch.setenv(k, v)
    assert main(["registry", "list"]) == 2
    assert "mlsec: error: S3 registry: Could not connect" in capsys.readouterr().err
