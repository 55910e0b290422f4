"""Components run in the built image (make image) through kfp.local.DockerRunner over podman, as on a cluster.

Run by `make test-containers` (it builds the image first); skipped where podman or the image is missing.
"""

# No `from __future__ import annotations`: kfp reads the components' return annotations as types.

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsec import containers as ct

# Minutes, not seconds: only `make test-containers` (which builds the image first) runs them, never `make test`.
pytestmark = pytest.mark.skipif(not os.environ.get("MLSEC_CONTAINER_TESTS") or shutil.which("podman") is None
                                or not ct.IMAGE_REF_FILE.exists(),
                                reason="container tests: `make test-containers` (needs podman and `make image`)")


@pytest.fixture(scope="module")
def image() -> str:
    return ct.built_image()


@pytest.fixture(scope="module")
def socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ct.podman_socket(tmp_path_factory.mktemp("podman")) as url:
        yield url


@pytest.fixture
def local_docker(socket: str, image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """kfp.local on DockerRunner with the workaround; a pipeline root uid 10001 may write."""
    from kfp import local

    monkeypatch.setenv("DOCKER_HOST", socket)
    root = tmp_path / "root"
    root.mkdir()
    ct.hand_to_task_user(root)
    ct.install({})
    local.init(runner=ct.docker_runner({}, tmp_path), pipeline_root=str(root), raise_on_error=False)
    return root


def _component(image: str, fn: Any) -> Any:
    from kfp import dsl

    return dsl.component(base_image=image, install_kfp_package=False)(fn)


def probe() -> str:
    """What the task sees of itself: uid, whether / is writable, its capability sets."""
    import json
    import os

    try:
        with open("/usr/probe", "w"):
            pass
        root_writable = True
    except OSError:
        root_writable = False
    caps = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"):
            caps[key] = value.strip()
    ro = any(f.split()[1] == "/" and "ro" in f.split()[3].split(",") for f in open("/proc/self/mounts"))
    return json.dumps({"uid": os.getuid(), "gid": os.getgid(), "root_writable": root_writable,
                       "root_mounted_ro": ro, **caps})


def fails() -> str:
    raise SystemExit(3)


def test_component_runs_as_10001_on_a_read_only_root_without_capabilities(local_docker: Path, image: str) -> None:
    task = _component(image, probe)()
    seen = json.loads(task.output)
    assert (seen["uid"], seen["gid"]) == (10001, 10001)
    assert seen["root_writable"] is False and seen["root_mounted_ro"] is True
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(seen[cap], 16) == 0, (cap, seen[cap])
    assert seen["NoNewPrivs"] == "1"


def test_a_failing_component_is_reported_as_failed(local_docker: Path, image: str, tmp_path: Path) -> None:
    """kfp's own runner maps a vanished container to exit code 0 (success), and on podman 4.3 crashes instead."""
    from kfp import local

    local.init(runner=ct.docker_runner({}, tmp_path), pipeline_root=str(local_docker), raise_on_error=True)
    with pytest.raises(RuntimeError, match=r"finished with status \S*FAILURE"):
        _component(image, fails)()
    _component(image, probe)()  # and the next task still runs


def test_run_container_returns_the_exit_code_and_removes_the_container(socket: str, image: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import docker

    monkeypatch.setenv("DOCKER_HOST", socket)
    client = docker.from_env()
    before = {c.id for c in client.containers.list(all=True)}
    code = ct.run_container(client, image, ["sh", "-c", "echo out; exit 7"], {}, labels={"mlsec-test": "exit"},
                            **ct.HARDENED)
    assert code == 7
    assert {c.id for c in client.containers.list(all=True)} == before


# Every native extension the stages load, with the libraries it links (a base without libstdc++ fails here).
NATIVE = ["numpy", "pandas", "scipy", "sklearn", "torch", "pyarrow", "great_expectations", "presidio_analyzer",
          "helm_python", "opa_bindings", "cryptography", "grpc", "kfp", "mlsec.cli"]


def test_the_images_native_dependencies_load(image: str) -> None:
    code = f"import importlib; [importlib.import_module(m) for m in {NATIVE!r}]; print('ok')"
    out = ct.podman("run", "--rm", "--read-only", "--network=none", "--entrypoint", "python", image, "-c", code,
                    check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    ldd = ct.podman("run", "--rm", "--read-only", "--network=none", "--entrypoint", "sh", image, "-c",
                    "find /opt/venv -name '*.so*' -type f -exec ldd {} + 2>/dev/null | grep 'not found' | sort -u",
                    check=False)
    # A vendored library (x.libs/) that ldd cannot place without the loading extension's rpath is not missing.
    missing = [line for line in ldd.stdout.splitlines() if not re.search(r"-[0-9a-f]{8}\.so", line)]
    assert not missing, missing


def test_no_build_secret_or_pip_config_in_the_image(image: str) -> None:
    history = ct.podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    config = json.loads(ct.podman("image", "inspect", image).stdout)[0]
    env = config["Config"].get("Env", [])
    assert "BEGIN CERTIFICATE" not in history and not any(e.startswith(("PIP_CERT", "PIP_CONFIG")) for e in env)
    listing = ct.podman("run", "--rm", "--entrypoint", "sh", image, "-c",
                        "ls -A /run/secrets 2>/dev/null; ls /etc/pip.conf /root/.config/pip 2>/dev/null; id -u").stdout
    assert listing.split() == ["10001"]


def test_image_carries_oci_labels(image: str) -> None:
    labels = json.loads(ct.podman("image", "inspect", image).stdout)[0]["Config"]["Labels"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ct.REPO).stdout.strip()
    assert labels["org.opencontainers.image.title"] == "mlsec"
    assert labels["io.mlsec.torch-variant"] == "cpu"
    assert len(labels["org.opencontainers.image.revision"]) == 40 and head
    assert image.split("@", 1)[1] == json.loads(ct.podman("image", "inspect", image).stdout)[0]["Digest"]


def test_prod_ir_names_the_built_image_by_digest(image: str, tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    subprocess.run([sys.executable, "-m", "mlsec.cli", "compile", "--env", "prod", "--image", image, "-o", str(out)],
                   check=True, capture_output=True)
    executors = next(yaml.safe_load_all(out.read_text()))["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {image}


def _gate_rows(home: Path, containers: bool) -> list[tuple[str, str, list[str]]]:
    args = [sys.executable, "-m", "mlsec.cli", "run", "--home", str(home), "--epochs", "3",
            *(["--containers"] if containers else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSEC_")}
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    log = home / "audit" / "decisions.jsonl"
    return [(e["gate"], e["result"], e["reasons"]) for e in map(json.loads, log.read_text().splitlines())]


def test_the_pipeline_in_containers_decides_as_in_process(tmp_path: Path) -> None:
    in_containers = _gate_rows(tmp_path / "containers", containers=True)
    assert [r[0] for r in in_containers] == ["data", "training", "signing", "promotion", "deployment"]
    assert _gate_rows(tmp_path / "process", containers=False) == in_containers


def test_image_sbom_lists_the_images_packages_and_its_signature_verifies(image: str, tmp_path: Path) -> None:
    from mlsec import imagesig
    from mlsec.gates.attest import AttestationError
    from mlsec.sign import keys

    doc = imagesig.sbom(image, imagesig.image_packages(image))
    text = json.dumps(doc)
    imagesig.validate_sbom(text)
    purls = {c["purl"].split("@")[0] for c in doc["components"]}
    assert {"pkg:pypi/torch", "pkg:pypi/kfp", "pkg:pypi/mlsec", "pkg:deb/debian/python3"} <= purls
    assert doc["metadata"]["component"]["version"] == image.split("@")[1]

    pair = keys.create(tmp_path / "k")
    other = keys.create(tmp_path / "other")
    sbom_bytes = text.encode()
    envelope = json.dumps(imagesig.sign(image, sbom_bytes, pair.private_key)).encode()
    assert imagesig.verify(image, envelope, pair.public_key, sbom_bytes)["subject"][0]["digest"]["sha256"] in image
    with pytest.raises(AttestationError):
        imagesig.verify(image, envelope, other.public_key)
    with pytest.raises(AttestationError, match="not sha256"):
        imagesig.verify(image.split("@")[0] + "@sha256:" + "0" * 64, envelope, pair.public_key)
    with pytest.raises(AttestationError, match="SBOM"):
        imagesig.verify(image, envelope, pair.public_key, sbom_bytes + b" ")
    # What the serve stage hands the deployment gate.
    (tmp_path / "sig.json").write_bytes(envelope)
    assert imagesig.signed_image(image, tmp_path / "sig.json", pair.public_key)["signature_verified"] is True
    assert imagesig.signed_image(image, tmp_path / "sig.json", other.public_key)["signature_verified"] is False
    assert imagesig.signed_image(image, None, pair.public_key)["signature_verified"] is False
