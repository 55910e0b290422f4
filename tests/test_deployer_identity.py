"""The deployer identity reaches the serve task alone (issue 14, item 6).

kfp-kubernetes 2.17.3 has no per-task service account (its KubernetesExecutorConfig proto has no such field) and
KFP's run-level service account applies to every task, so the serve task carries the deployer's identity as the
token Secret of account mlsec-deployer, mounted into it alone; the chart's deployer Role names that account only.
tests/test_compile.py::test_only_the_serve_task_holds_the_deployer_token checks the compiled IR (no other task
holds the token in any form); these check the release side: no binding gives pipeline-runner anything, and a
release (values file or --set) cannot bind the Role to an account every task or pod runs as.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsec.serve.deploy import environment_values, render_chart

REPO = Path(__file__).resolve().parents[1]
DEPLOYER = {"kind": "ServiceAccount", "name": "mlsec-deployer", "namespace": "kubeflow"}


def test_kfp_kubernetes_has_no_per_task_service_account() -> None:
    """The reason for the token Secret; when a kfp-kubernetes release adds the field, this fails: use it instead."""
    from kfp.kubernetes import kubernetes_executor_config_pb2 as pb

    fields = {f.name for f in pb.KubernetesExecutorConfig.DESCRIPTOR.fields}
    assert "security_context" in fields and not {f for f in fields if "service_account" in f}


def _bindings(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_pipeline_runner_is_bound_to_nothing(env: str) -> None:
    manifests = [d for f in sorted((REPO / "manifests").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    rendered = render_chart("credit-" + env, "mlsec-serving", environment_values(env))
    bindings = _bindings(rendered + manifests)
    deployer = [b for b in bindings if b["roleRef"]["name"].endswith("-deployer")]
    assert [b["subjects"] for b in deployer] == [[DEPLOYER]]
    for binding in bindings:
        for subject in binding["subjects"]:
            assert subject.get("name") != "pipeline-runner", binding["metadata"]["name"]
            # A Group of the namespace's service accounts would include pipeline-runner.
            assert not (subject["kind"] == "Group" and subject["name"].startswith("system:serviceaccounts")), subject


@pytest.mark.parametrize("account", ["pipeline-runner", "default", ""])
def test_a_release_cannot_bind_the_deployer_role_to_every_task(account: str) -> None:
    """`helm upgrade --set deployer.serviceAccount=pipeline-runner` would let every task of every pipeline patch
    the serving workload: the chart's values schema refuses it (Helm checks it on install and on render)."""
    values = copy.deepcopy(environment_values("prod"))
    values["deployer"] = {"serviceAccount": account, "namespace": "kubeflow"}
    with pytest.raises(Exception, match="deployer/serviceAccount"):
        render_chart("credit-prod", "mlsec-serving", values)
