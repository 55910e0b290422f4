"""The pipeline compiles to KFP IR with the cluster hardening in place."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from mlsec.cli import main


@pytest.fixture(scope="module")
def ir(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    out = tmp_path_factory.mktemp("ir") / "pipeline.yaml"
    assert main(["compile", "-o", str(out)]) == 0
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_train_requests_a_gpu(ir: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, executors = ir
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "1"
    train = executors["exec-train"]
    assert train["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}


def test_every_task_runs_as_non_root(ir: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, executors = ir
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    for name, ex in executors.items():
        assert ex["securityContext"] == {"runAsUser": "10001", "runAsGroup": "10001", "runAsNonRoot": True}, name


def test_s3_credentials_come_from_a_secret(ir: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, executors = ir
    for name in ("exec-promote", "exec-serve"):
        (secret,) = executors[name]["secretAsEnv"]
        assert secret["secretName"] == "mlsec-s3"
        assert {k["envVar"] for k in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    # Ingest parses untrusted files: it holds only the read-only data identity, never the writer's.
    assert "secretAsEnv" not in executors["exec-ingest"]
    ingest_mounts = {v["secretName"]: v for v in executors["exec-ingest"]["secretAsVolume"]}
    assert "mlsec-s3-data" in ingest_mounts
    # and the registry reader of the signed reference (mlsec.registry.seaweed.reference_actions), it alone
    assert ingest_mounts["mlsec-s3-reference"]["mountPath"] == "/etc/mlsec/s3-reference"
    assert not [e for e, ex in executors.items() if e != "exec-ingest" and "mlsec-s3-reference" in str(ex)]
    assert ingest_mounts["mlsec-pii-token"]["optional"] is True  # only contracts that tokenize need the key
    assert not [e for e, ex in executors.items() if e != "exec-ingest" and "mlsec-pii-token" in str(ex)]
    # Gates hold no registry credential, only the audit writer's (it reaches <bucket>/audit/ alone).
    assert "secretAsEnv" not in executors["exec-gate"]
    gate_mounts = {v["secretName"]: v["mountPath"] for v in executors["exec-gate"]["secretAsVolume"]}
    assert gate_mounts["mlsec-s3-audit"] == "/etc/mlsec/s3-audit"
    promote_mounts = {v["secretName"] for v in executors["exec-promote"]["secretAsVolume"]}
    assert "mlsec-s3-audit" in promote_mounts
    assert executors["exec-sign"]["secretAsVolume"][0]["secretName"] == "mlsec-signing-key"


def test_no_secret_values_in_the_ir(ir: tuple[dict[str, Any], dict[str, Any]]) -> None:
    text = yaml.safe_dump(ir)
    assert "AWS_SECRET_ACCESS_KEY: " not in text and "BEGIN" not in text


def test_every_gate_has_an_else_that_halts(ir: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = ir
    text = yaml.safe_dump(spec)
    for gate in ("data", "training", "signing", "deployment"):
        assert f"{gate}-denied" in text and f"{gate}-allowed" in text
    assert text.count("comp-halt") >= 4


def test_pip_check_passes() -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


PINNED = "registry.example/mlsec@sha256:" + "ab" * 32


def _executors(path: Any) -> dict[str, Any]:
    spec = next(yaml.safe_load_all(path.read_text()))
    return spec["deploymentSpec"]["executors"]  # type: ignore[no-any-return]


def test_image_digest_reaches_every_task(tmp_path: Any) -> None:
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--env", "prod", "--image", PINNED, "-o", str(out)]) == 0
    executors = _executors(out)
    assert len(executors) >= 12
    assert {ex["container"]["image"] for ex in executors.values()} == {PINNED}


@pytest.mark.parametrize("env", ["staging", "prod"])
@pytest.mark.parametrize("image", ["ghcr.io/mlsec/mlsec:0.1.0", "registry.example/mlsec",
                                   "registry.example/mlsec@sha256:" + "ab" * 31,
                                   "registry.example/mlsec@sha256:" + "AB" * 32])
def test_staging_and_prod_refuse_an_image_not_pinned_by_digest(tmp_path: Any, env: str, image: str) -> None:
    from pipelines.compile import ImageNotPinned, compile_pipeline

    with pytest.raises(ImageNotPinned, match="digest"):
        compile_pipeline(tmp_path / "p.yaml", env, image)
    assert not (tmp_path / "p.yaml").exists()


def test_dev_accepts_a_tag(tmp_path: Any) -> None:
    from pipelines.compile import compile_pipeline

    assert compile_pipeline(tmp_path / "p.yaml", "dev", "localhost/mlsec:cpu") == "localhost/mlsec:cpu"


def test_every_task_has_requests_and_limits_and_train_is_sized_apart(
        ir: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = ir
    executors = spec["deploymentSpec"]["executors"]
    keys = ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit")
    for name, ex in executors.items():
        res = ex["container"].get("resources", {})
        assert all(res.get(k) for k in keys), name
        assert res["cpuRequest"] <= res["cpuLimit"] and res["memoryRequest"] <= res["memoryLimit"], name
    train = executors["exec-train"]["container"]["resources"]
    light = executors["exec-gate"]["container"]["resources"]
    assert train["memoryLimit"] > light["memoryLimit"] and train["cpuLimit"] > light["cpuLimit"]


def test_only_the_serve_task_holds_the_deployer_token(ir: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, executors = ir
    from mlsec.serve.deploy import DEPLOYER_TOKEN_DIR

    # In any form (volume, env, anything kfp-kubernetes may add): the deployer's identity is the serve task's alone.
    holders = {name for name, ex in executors.items() if "mlsec-deployer-token" in yaml.safe_dump(ex)}
    assert holders == {"exec-serve"}
    (mount,) = [v for v in executors["exec-serve"]["secretAsVolume"] if v["secretName"] == "mlsec-deployer-token"]
    assert mount["mountPath"] == DEPLOYER_TOKEN_DIR and not mount.get("optional")  # no token, no apply



def test_tasks_that_verify_model_signatures_read_the_signing_trust_file(ir: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """After a key rotation the retired key verifies until its date in the pipeline too: the trust file
    (ConfigMap mlsec-signing-trust, absent before the first rotation) lies where MLSEC_SIGNING_TRUST says."""
    from pathlib import Path

    from components._platform import SIGNING_TRUST_DIR

    config = yaml.safe_load((Path(__file__).parents[1] / "manifests" / "config.yaml").read_text())
    assert Path(config["data"]["MLSEC_SIGNING_TRUST"]).parent == Path(SIGNING_TRUST_DIR)
    _, executors = ir
    verifiers = {name for name, ex in executors.items()
                 if any(v["secretName"] in ("mlsec-signing-pub", "mlsec-signing-key") for v in ex.get("secretAsVolume", []))}
    assert {"exec-sign", "exec-promote", "exec-serve"} <= verifiers
    for name in verifiers:
        (mount,) = [v for v in executors[name].get("configMapAsVolume", []) if v["configMapName"] == "mlsec-signing-trust"]
        assert mount["mountPath"] == SIGNING_TRUST_DIR and mount["optional"], name
