"""Everything we would apply to a cluster: schema-valid for Kubernetes, lint-clean, and allowed by the
deployment policy. (No cluster here: this is the offline half of the cluster path.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlsec.config import chart_dir
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.serve.deploy import render_chart

REPO = Path(__file__).resolve().parents[1]
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
DIGEST = "sha256:" + "ab" * 32


def _plain() -> list[dict[str, Any]]:
    return [d for f in sorted((REPO / "manifests").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def _chart() -> list[dict[str, Any]]:
    return render_chart("credit-prod", "mlsec-serving", {"image": {"digest": DIGEST}, "model": {"digest": "ab" * 32},
                                                         "opa": {"enabled": True, "image": {"digest": DIGEST}}})


def _evidence(objects: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    return {"kind": "mlsec.evidence.deployment/v1", "subject": {"name": "credit", "digest": "ab" * 32},
            "release": {"model": "credit", "version": "abababababababab", "stage": "prod", "target": "cluster",
                        "namespace": namespace},
            "objects": objects}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("source", [_plain, _chart], ids=["manifests", "chart"])
def test_objects_are_schema_valid(source, version: str) -> None:  # type: ignore[no-untyped-def]
    for obj in source():
        kubernetes_validate.validate(obj, version, strict=True)


def test_chart_lints_strictly() -> None:
    import helm_python as helm

    result = helm.lint(str(chart_dir()), {}, strict=True, kube_version="1.30.0")
    assert result["errors"] == [], result


def test_chart_renders_hardened_objects(engine: InProcessEngine) -> None:
    objects = _chart()
    assert {o["kind"] for o in objects} >= {"Deployment", "NetworkPolicy", "Service", "ServiceAccount"}
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"} == {"credit-prod-server", "credit-prod-opa"}
    d = evaluate("deployment", _evidence(objects, "mlsec-serving"), environment="prod", engine=engine)
    assert d.allow, d.deny


@pytest.mark.parametrize("namespace", ["mlsec-system"])
def test_plain_manifests_pass_the_deployment_policy(engine: InProcessEngine, namespace: str) -> None:
    objects = [o for o in _plain() if o["metadata"].get("namespace") == namespace]
    d = evaluate("deployment", _evidence(objects, namespace), environment="prod", engine=engine)
    assert d.allow, d.deny


def test_namespaces_enforce_restricted_pod_security() -> None:
    for ns in (o for o in _plain() if o["kind"] == "Namespace"):
        labels = ns["metadata"]["labels"]
        assert all(labels[f"pod-security.kubernetes.io/{m}"] == "restricted" for m in ("enforce", "audit", "warn"))


def test_a_weakened_chart_is_denied(engine: InProcessEngine) -> None:
    objects = _chart()
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    objects = [o for o in objects if o["kind"] != "NetworkPolicy"]
    d = evaluate("deployment", _evidence(objects, "mlsec-serving"), environment="prod", engine=engine)
    assert not d.allow
    assert any("readOnlyRootFilesystem" in r for r in d.deny) and any("NetworkPolicy" in r for r in d.deny)
