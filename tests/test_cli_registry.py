"""`mlsec registry ...` against the real SeaweedFS server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlsec.cli import main
from mlsec.registry.seaweed import LocalS3
from mlsec.registry.store import Registry
from mlsec.sign import keys

from conftest import Signed


@pytest.fixture
def cli_env(s3_server: LocalS3, registry: Registry, key_pair: keys.KeyPair, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Registry:
    for k, v in {**s3_server.env, "MLSEC_S3_BUCKET": registry.bucket, "MLSEC_PUBLIC_KEY": str(key_pair.public_key),
                 "MLSEC_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "MLSEC_ENV": "dev"}.items():
        monkeypatch.setenv(k, v)
    return registry


def test_registry_commands(cli_env: Registry, signed: Signed, key_pair: keys.KeyPair, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    t = signed.trained
    version = cli_env.register("credit", signed.bundle, key_pair.public_key, dataset_digest=t.data_evidence.subject.digest,
                               metrics=t.training_evidence.metrics, decisions=signed.decisions, author="alice").version
    assert main(["registry", "promote", "credit", version, "--stage", "dev", "--author", "alice"]) == 0
    assert "[promotion] ALLOW" in capsys.readouterr().out
    assert main(["registry", "promote", "credit", version, "--stage", "prod", "--author", "alice",
                 "--approve", "bob"]) == 1
    assert "stages may not be skipped" in capsys.readouterr().out

    assert main(["registry", "list"]) == 0
    assert f"credit\t{version}\tdev" in capsys.readouterr().out
    assert main(["registry", "show", "credit", "dev"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == version and shown["stages"] == ["dev"] and len(shown["promotions"]) == 2

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
