"""Everything we would apply to a cluster: schema-valid for Kubernetes, lint-clean, and allowed by the
deployment policy. (No cluster here: this is the offline half of the cluster path.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlsec.config import chart_dir
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.decision import Decision
from mlsec.gates.gate import evaluate
from mlsec.serve.deploy import render_chart

REPO = Path(__file__).resolve().parents[1]
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
DIGEST = "sha256:" + "ab" * 32


def _plain() -> list[dict[str, Any]]:
    return [d for f in sorted((REPO / "manifests").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


VALUES = ["values.yaml", "values-dev.yaml", "values-staging.yaml", "values-prod.yaml"]
CRD_KINDS = {"InferenceService", "ConstraintTemplate", "MlsecGateAllowed"}  # kubernetes-validate ships core schemas only


def _render(values_file: str) -> list[dict[str, Any]]:
    values = yaml.safe_load((chart_dir() / values_file).read_text()) if values_file != "values.yaml" else {}
    values = {**values, "image": {"digest": DIGEST}, "model": {**values.get("model", {}), "digest": "ab" * 32},
              "opa": {"enabled": True, "image": {"digest": DIGEST}}}
    return render_chart("credit-prod", "mlsec-serving", values)


def _chart() -> list[dict[str, Any]]:
    return _render("values.yaml")


def _evidence(objects: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    return {"kind": "mlsec.evidence.deployment/v1", "subject": {"name": "credit", "digest": "ab" * 32},
            "release": {"model": "credit", "version": "abababababababab", "stage": "prod", "target": "cluster",
                        "namespace": namespace},
            "objects": objects, "images": [{"digest": d, "signature_verified": True} for d in _image_digests(objects)]}


def _image_digests(objects: list[dict[str, Any]]) -> set[str]:
    """Every image digest the objects run: the tests here judge the objects with their images' signatures verified
    (the image-signature rules have their own Rego tests)."""
    return set(re.findall(r'"image": "[^"@]+@(sha256:[0-9a-f]{64})"', json.dumps(objects)))


def _deploy(engine: InProcessEngine, objects: list[dict[str, Any]], namespace: str = "mlsec-serving") -> Decision:
    """The prod deployment gate on these objects, for a model whose promotion was allowed."""
    promoted = Decision(gate="promotion", environment="prod", allow=True, deny=[], subject="ab" * 32,
                        evidence_sha256=None, policy_sha256=engine.policy_sha256, engine=engine.name)
    return evaluate("deployment", _evidence(objects, namespace), environment="prod", engine=engine,
                    decisions=[promoted])


def _sources() -> list[tuple[str, Any]]:
    return [("manifests", _plain), *((v, lambda v=v: _render(v)) for v in VALUES)]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "source"), _sources(), ids=[n for n, _ in _sources()])
def test_objects_are_schema_valid(name: str, source, version: str) -> None:  # type: ignore[no-untyped-def]
    for obj in source():
        if obj["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("values_file", VALUES)
def test_every_values_file_passes_the_deployment_policy(engine: InProcessEngine, values_file: str) -> None:
    objects = [o for o in _render(values_file) if o["metadata"].get("namespace", "mlsec-serving") == "mlsec-serving"]
    d = _deploy(engine, objects)
    assert d.allow, d.deny


def _checkov() -> str:
    path = os.environ.get("MLSEC_CHECKOV") or str(REPO / ".venv-checkov" / "bin" / "checkov")
    if not Path(path).exists():
        pytest.fail("checkov is not installed: `make test` creates .venv-checkov (or set MLSEC_CHECKOV)")
    return path


@pytest.mark.parametrize("target", ["Dockerfile", "manifests", *VALUES])
def test_checkov_finds_nothing(tmp_path: Path, target: str) -> None:
    framework = "dockerfile" if target == "Dockerfile" else "kubernetes"
    if target == "Dockerfile":
        args = ["-f", str(REPO / "Dockerfile")]
    elif target == "manifests":
        args = ["-d", str(REPO / "manifests")]
    else:
        rendered = tmp_path / "rendered.yaml"
        rendered.write_text(yaml.safe_dump_all(_render(target)))
        args = ["-f", str(rendered)]
    out = subprocess.run([_checkov(), *args, "--framework", framework, "--quiet", "--compact", "-o", "json"],
                         capture_output=True, text=True, timeout=300)
    report = json.loads(out.stdout)
    for r in report if isinstance(report, list) else [report]:
        failed = r.get("results", {}).get("failed_checks", [])
        assert not failed, [(f["check_id"], f["resource"]) for f in failed]
        assert r.get("summary", {}).get("passed", 0) > 0


def test_chart_lints_strictly() -> None:
    import helm_python as helm

    result = helm.lint(str(chart_dir()), {}, strict=True, kube_version="1.30.0")
    assert result["errors"] == [], result


def test_chart_renders_hardened_objects(engine: InProcessEngine) -> None:
    objects = _chart()
    assert {o["kind"] for o in objects} >= {"Deployment", "NetworkPolicy", "Service", "ServiceAccount"}
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"} == {"credit-prod-server", "credit-prod-opa"}
    d = _deploy(engine, objects)
    assert d.allow, d.deny


@pytest.mark.parametrize("namespace", ["mlsec-system"])
def test_plain_manifests_pass_the_deployment_policy(engine: InProcessEngine, namespace: str) -> None:
    objects = [o for o in _plain() if o["metadata"].get("namespace") == namespace]
    d = _deploy(engine, objects, namespace)
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
    d = _deploy(engine, objects)
    assert not d.allow
    assert any("readOnlyRootFilesystem" in r for r in d.deny) and any("NetworkPolicy" in r for r in d.deny)


@pytest.mark.parametrize("kserve", [False, True])
def test_release_applies_only_what_the_deployer_role_may_patch(engine: InProcessEngine, kserve: bool) -> None:
    from mlsec.serve.deploy import release_objects

    rendered = render_chart("credit-prod", "mlsec-serving", {"image": {"digest": DIGEST}, "kserve": {"enabled": kserve}})
    release = release_objects(rendered)
    assert {o["kind"] for o in release} == {"InferenceService" if kserve else "Deployment", "NetworkPolicy"}
    (role,) = [o for o in rendered if o["kind"] == "Role"]
    allowed = {(r["resources"][0], name) for r in role["rules"] for name in r["resourceNames"]}
    assert all(r["verbs"] == ["get", "patch"] for r in role["rules"])  # no create, delete, list or wildcard
    plural = {"Deployment": "deployments", "InferenceService": "inferenceservices", "NetworkPolicy": "networkpolicies"}
    assert {(plural[o["kind"]], o["metadata"]["name"]) for o in release} == allowed
    d = _deploy(engine, release)
    assert d.allow, d.deny


@pytest.mark.parametrize("name", ["manifests", "values.yaml"])
def test_opa_activates_only_signed_bundles(name: str) -> None:
    """The cluster's OPA is started so that it refuses a bundle not signed with the policy key, with the
    algorithm `mlsec policy bundle --signing-key` signs with, and the key mounted where the flag points."""
    from mlsec.gates.bundle import ALGORITHM

    objects = _plain() if name == "manifests" else _render(name)
    opa = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("opa"))
    pod = opa["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    key_flag = next(a for a in args if a.startswith("--verification-key="))
    assert f"--signing-alg={ALGORITHM}" in args and "--skip-verify" not in args
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    key_path = Path(key_flag.split("=", 1)[1])
    mount = next(n for n, p in mounts.items() if key_path.parent == Path(p))
    assert volumes[mount]["secret"]["secretName"] == "mlsec-policy-bundle-key"


def _secret_names(objects: list[dict[str, Any]]) -> set[str]:
    """Every Secret a workload mounts or reads env from."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "secretName" in node:
                found.add(node["secretName"])
            if isinstance(node.get("secretKeyRef"), dict):
                found.add(node["secretKeyRef"]["name"])
            if isinstance(node.get("secretRef"), dict):
                found.add(node["secretRef"]["name"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(objects)
    return found


@pytest.mark.parametrize("values_file", VALUES)
def test_the_serving_workload_holds_only_the_read_only_s3_identity(values_file: str) -> None:
    served = [o for o in _render(values_file) if o["kind"] in {"Deployment", "InferenceService"}
              and not o["metadata"]["name"].endswith("opa")]
    assert served
    s3 = {n for n in _secret_names(served) if n.startswith("mlsec-s3")}
    assert s3 == {"mlsec-s3-reader"}


def test_the_pipeline_holds_the_writer_identity_and_the_admin_key_is_mounted_nowhere() -> None:
    from components import _platform

    source = Path(_platform.__file__).read_text()
    assert '"mlsec-s3"' in source and "mlsec-s3-reader" not in source and "mlsec-s3-admin" not in source
    rendered = [o for v in VALUES for o in _render(v)]
    assert not {"mlsec-s3", "mlsec-s3-admin"} & _secret_names(rendered + _plain())
    kind_up = (REPO / "deploy" / "kind-up.sh").read_text()
    assert "s3_secret kubeflow mlsec-s3 " in kind_up and "s3_secret mlsec-serving mlsec-s3-reader " in kind_up
    assert not [line for line in kind_up.splitlines() if "mlsec-serving" in line and "mlsec-s3 " in line
                and "delete" not in line]


def test_seaweedfs_serves_only_s3_with_one_identity_per_role() -> None:
    from mlsec.registry.seaweed import ACTIONS, audit_actions, reference_actions

    weed = next(o for o in _plain() if o["kind"] == "Deployment" and o["metadata"]["name"] == "seaweedfs")
    args = weed["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "-disableHttp" in args and "-webdav=false" in args and "-s3.port.iceberg=0" in args
    kind_up = (REPO / "deploy" / "kind-up.sh").read_text()
    for role, actions in ACTIONS.items():
        assert f'"name":"{role}"' in kind_up
        bucket = "$DATA_BUCKET" if role == "data" else "$BUCKET"  # ingest reads datasets, nothing of the registry
        scoped = actions if role == "admin" else [f"{a}:{bucket}" for a in actions]
        assert json.dumps(scoped, separators=(",", ":")) in kind_up, role
    audit = audit_actions("$BUCKET")  # the audit writer is scoped to a key prefix, not a whole bucket
    assert '"name":"audit"' in kind_up and json.dumps(audit, separators=(",", ":")) in kind_up
    ref = reference_actions("$BUCKET")  # ingest's reader of the signed reference, prefix-scoped likewise
    assert '"name":"reference"' in kind_up and json.dumps(ref, separators=(",", ":")) in kind_up
    assert "s3_secret kubeflow mlsec-s3-reference " in kind_up


def _role_allows(rules: list[dict[str, Any]], obj: dict[str, Any], verb: str) -> bool:
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    resource = {"Deployment": "deployments", "NetworkPolicy": "networkpolicies",
                "InferenceService": "inferenceservices"}[obj["kind"]]
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               and obj["metadata"]["name"] in r.get("resourceNames", [obj["metadata"]["name"]]) for r in rules)


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_serve_stage_applies_what_the_environments_release_installed(env: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The serve task's objects against `helm template -f values-<env>.yaml` of the same release: the same
    workload kind, and every applied object is one the release's deployer Role lets the task patch."""
    from mlsec.config import Settings
    from mlsec.registry.task import cluster_release
    from mlsec.serve.deploy import APPLIED_KINDS, environment_values

    monkeypatch.setenv("MLSEC_IMAGE", "registry.example/mlsec@" + DIGEST)
    applied = cluster_release("credit", "abababababababab", "ab" * 32, env, env, "mlsec-serving", Settings())
    installed = render_chart("credit-" + env, "mlsec-serving", environment_values(env))
    workloads = {"Deployment", "InferenceService"}
    assert {o["kind"] for o in applied} & workloads == {o["kind"] for o in installed} & workloads
    assert len([o for o in applied if o["kind"] in workloads]) == 1
    (role,) = [o for o in installed if o["kind"] == "Role" and o["metadata"]["name"].endswith("-deployer")]
    for obj in applied:
        assert obj["kind"] in APPLIED_KINDS
        assert _role_allows(role["rules"], obj, "patch"), (env, obj["kind"], obj["metadata"]["name"])
    # What differs per environment reaches the applied workload: replicas in dev, the rate limit in prod.
    workload = next(o for o in applied if o["kind"] in workloads)
    text = json.dumps(workload)
    if env == "dev":
        assert workload["spec"]["replicas"] == 1
    if env == "prod":
        assert "20/second" in text and "50/second" not in text


# --- admission: the cluster admits only what the deployment gate allowed (manifests/admission.yaml) -------------
@pytest.fixture(scope="module")
def admission(tmp_path_factory: pytest.TempPathFactory) -> Any:
    template = next(d for d in yaml.safe_load_all((REPO / "manifests" / "admission.yaml").read_text())
                    if d["kind"] == "ConstraintTemplate")
    root = tmp_path_factory.mktemp("admission")
    (root / "admission.rego").write_text(template["spec"]["targets"][0]["rego"])
    engine = InProcessEngine(root)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def gate_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    from mlsec.gates.attest import create_key

    root = tmp_path_factory.mktemp("gatekey")
    create_key(root / "prod.key")
    create_key(root / "other.key")
    return root / "prod.key", (root / "prod.pub").read_text(), root / "other.key"


def _admit(engine: InProcessEngine, obj: dict[str, Any], public_pem: str, env: str = "prod") -> list[str]:
    review = {"review": {"object": obj}, "parameters": {"environment": env, "gatePublicKeys": [public_pem]}}
    found = engine.opa.eval_document_json("mlsecgateallowed.violation", json.dumps(review).encode())
    return sorted(v["msg"] for v in found)


def _allowed_objects() -> list[dict[str, Any]]:
    from mlsec.serve.deploy import release_objects, render_release

    return release_objects(render_release("credit-prod", "mlsec-serving", "prod", {"image": {"digest": DIGEST}}))


def test_admission_admits_exactly_the_allowed_objects(admission: InProcessEngine,
                                                      gate_keys: tuple[Path, str, Path]) -> None:
    from mlsec.admission import mint, stamp

    private, public, other = gate_keys
    objects = _allowed_objects()
    assert {o["kind"] for o in objects} == {"InferenceService", "NetworkPolicy"}
    stamped = stamp(objects, mint(objects, "prod", "d-1", private))
    for obj in stamped:
        assert _admit(admission, obj, public) == [], obj["kind"]

    workload = next(o for o in stamped if o["kind"] == "InferenceService")
    container = workload["spec"]["predictor"]["containers"][0]
    changed = {
        "image": {**container, "image": "registry.example/evil@sha256:" + "cd" * 32},
        "args": {**container, "args": [*container.get("args", []), "--digest", "0" * 64]},
        "command": {**container, "command": ["sh", "-c", "id"]},
    }
    for what, c in changed.items():
        bad = {**workload, "spec": {**workload["spec"], "predictor": {**workload["spec"]["predictor"],
                                                                      "containers": [c]}}}
        assert _admit(admission, bad, public) == [f"InferenceService/{workload['metadata']['name']} differs from "
                                                  "the objects the deployment gate allowed"], what
    netpol = next(o for o in stamped if o["kind"] == "NetworkPolicy" and o["spec"].get("egress"))
    opened = {**netpol, "spec": {**netpol["spec"], "egress": [*netpol["spec"]["egress"], {}]}}
    assert "differs from the objects" in _admit(admission, opened, public)[0]


def test_admission_refuses_missing_forged_expired_or_foreign_tokens(admission: InProcessEngine,
                                                                    gate_keys: tuple[Path, str, Path]) -> None:
    import jwt
    from cryptography.hazmat.primitives import serialization

    from mlsec.admission import claims, mint, stamp

    private, public, other = gate_keys
    objects = _allowed_objects()
    obj = objects[0]
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)

    def signed(c: dict[str, Any]) -> dict[str, Any]:
        return stamp([obj], jwt.encode(c, key, algorithm="EdDSA"))[0]  # type: ignore[arg-type]

    assert "no admission token" in _admit(admission, obj, public)[0]
    assert "does not verify" in _admit(admission, stamp([obj], mint(objects, "prod", "d", other))[0], public)[0]
    assert "does not verify" in _admit(admission, stamp([obj], "e30.e30.")[0], public)[0]
    assert "expired" in _admit(admission, signed(claims(objects, "prod", "d", 60, now=time.time() - 120)), public)[0]
    assert _admit(admission, signed(claims(objects, "prod", "d", 60, now=time.time() - 30)), public) == []
    assert "not prod" in _admit(admission, signed(claims(objects, "staging", "d", 60)), public)[0]
    assert "did not allow" in _admit(admission, signed({**claims(objects, "prod", "d", 60), "allow": False}), public)[0]
    assert "not a deployment-gate" in _admit(admission, signed({**claims(objects, "prod", "d", 60), "gate": "data"}),
                                             public)[0]
    # A token for other objects does not admit this one.
    assert "differs" in _admit(admission, stamp([obj], mint(objects[1:], "prod", "d", private))[0], public)[0]


def test_the_gate_issues_and_the_serve_task_carries_the_admission_token(admission: InProcessEngine,
                                                                        gate_keys: tuple[Path, str, Path]) -> None:
    """The pipeline's own path: the deployment gate task mints the token for what it allowed, the serve task
    stamps it on exactly those objects, and the cluster's policy admits each; objects changed after the gate,
    or a release without a token, are refused by the serve task before anything is applied."""
    from mlsec.gates.decision import Decision
    from mlsec.gates.task import admission_token
    from mlsec.serve.task import admitted_objects

    private, public, _ = gate_keys
    objects = _allowed_objects()
    doc: dict[str, Any] = {"release": {"target": "cluster"}, "objects": objects}

    def decision(gate: str = "deployment", allow: bool = True) -> Decision:
        return Decision(gate=gate, environment="prod", allow=allow, deny=[] if allow else ["no"],
                        subject="sha256:" + "0" * 64, evidence_sha256="1" * 64, policy_sha256=None, engine="opa")

    token = admission_token(decision(), doc, private)
    for obj in admitted_objects(objects, token):
        assert _admit(admission, obj, public) == [], obj["kind"]
    assert admission_token(decision(allow=False), doc, private) == ""
    assert admission_token(decision(gate="promotion"), doc, private) == ""
    assert admission_token(decision(), {**doc, "release": {"target": "local"}}, private) == ""
    with pytest.raises(RuntimeError, match="no admission token"):
        admitted_objects(objects, "")
    swapped = [dict(o) for o in objects]
    workload = next(o for o in swapped if o["kind"] == "InferenceService")
    predictor = workload["spec"]["predictor"]
    evil = {**predictor["containers"][0], "image": "registry.example/evil@sha256:" + "cd" * 32}
    workload["spec"] = {**workload["spec"], "predictor": {**predictor, "containers": [evil]}}
    with pytest.raises(RuntimeError, match="names other objects"):
        admitted_objects(swapped, token)


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_deployer_role_is_bound_to_the_serve_tasks_account_alone(env: str) -> None:
    from mlsec.serve.deploy import environment_values

    rendered = render_chart("credit-" + env, "mlsec-serving", environment_values(env))
    bindings = [o for o in rendered if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and o["roleRef"]["name"].endswith("-deployer")]
    assert len(bindings) == 1
    assert bindings[0]["subjects"] == [{"kind": "ServiceAccount", "name": "mlsec-deployer", "namespace": "kubeflow"}]
    account = next(o for o in _plain() if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "mlsec-deployer")
    assert account["metadata"]["namespace"] == "kubeflow" and account["automountServiceAccountToken"] is False


def test_kind_up_dry_run_prints_every_step_and_generates_no_secret() -> None:
    out = subprocess.run(["bash", str(REPO / "deploy" / "kind-up.sh"), "--dry-run"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    steps = out.stdout.splitlines()
    assert all(s.startswith("+ ") for s in steps[:-3]), [s for s in steps[:-3] if not s.startswith("+ ")]
    text = out.stdout
    for step in ("kind create cluster --config kind-config.yaml", "projectcalico", "docker push localhost:5001/mlsec:",
                 "kubectl apply -f manifests/deployer.yaml", "gatekeeper", "mlsec.imagesig sign", "helm upgrade"):
        assert step in text, step
    import kfp

    assert f"ref={kfp.__version__}" in text.replace("\\", "")  # the KFP backend of the SDK's own release
    assert "BEGIN" not in text and "MLSEC" not in text.replace("MLSEC_", "")  # no key or access key generated
    assert shutil.which("shellcheck"), "shellcheck is missing (make test installs it from Debian)"
    check = subprocess.run(["shellcheck", "deploy/kind-up.sh", "containers/base-image.sh"], cwd=REPO,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_kind_config_enforces_pod_security_and_a_networkpolicy_cni() -> None:
    cfg = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert cfg["networking"]["disableDefaultCNI"] is True  # kindnet ignores NetworkPolicy; kind-up installs Calico
    admission = yaml.safe_load((REPO / "deploy" / "pod-security.yaml").read_text())
    pss = admission["plugins"][0]["configuration"]
    assert pss["defaults"]["enforce"] in ("baseline", "restricted")
    assert not {"mlsec-system", "mlsec-serving", "kubeflow"} & set(pss["exemptions"]["namespaces"])
    mount = cfg["nodes"][0]["extraMounts"][0]
    assert (REPO / mount["hostPath"]).resolve() == (REPO / "deploy" / "pod-security.yaml").resolve()
    assert "admission-control-config-file: " + mount["containerPath"] in cfg["nodes"][0]["kubeadmConfigPatches"][0]
