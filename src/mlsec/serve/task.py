"""The serve stage as a pipeline task: deploy exactly the objects the deployment gate allowed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlsec.config import Settings
from mlsec.digest import sha256_json
from mlsec.gates.attest import AttestationError, GateTrust, gate_trust, read_history
from mlsec.gates.decision import Decision
from mlsec.registry.task import registry_from_env
from mlsec.serve.deploy import apply, start_local
from mlsec.serve.evidence import DeploymentEvidence


def admitted_objects(objects: list[dict[str, Any]], token: str) -> list[dict[str, Any]]:
    """The objects carrying the deployment gate's admission token, which must name exactly these: the cluster
    admits nothing else (manifests/admission.yaml), so a mismatch is refused here, before half a release lands."""
    from mlsec.admission import admissible, digests, named_objects, stamp

    if not token:
        raise RuntimeError("refusing to deploy: the deployment gate issued no admission token, and the cluster "
                           "admits no serving object without one")
    if named_objects(token) != digests(admissible(objects)):
        raise RuntimeError("refusing to deploy: the admission token names other objects than the release holds")
    return stamp(objects, token)


def allowed_release(decisions: Path, doc: dict[str, Any], trust: GateTrust) -> Decision:
    """The last decision handed on: signed by a trusted gate key, the deployment gate's, an allow, and about
    exactly this release (its evidence digest); a release changed after the gate is refused here."""
    try:
        last = read_history(decisions, trust)[-1].decision
    except (AttestationError, IndexError) as e:
        raise RuntimeError(f"refusing to deploy: the deployment decision cannot be trusted: {e}") from e
    if last.gate != "deployment" or not last.allow or last.evidence_sha256 != sha256_json(doc):
        raise RuntimeError("refusing to deploy: no allowing deployment decision for exactly these objects")
    return last


def run(release: Path, decisions: Path, endpoint_out: Path, admission: Path | None = None) -> None:
    settings = Settings()
    doc = json.loads(release.read_text())
    plan = DeploymentEvidence.model_validate(doc)
    allowed_release(decisions, doc, gate_trust(settings.key_dir))
    r = plan.release
    if r.target == "local":
        (server,) = plan.objects
        handle = start_local(r.model, r.version, server["bind"], int(server["port"]),
                             settings.home / "serve" / f"{r.model}.log", digest=plan.subject.digest)
        result = {"url": handle.url, "pid": handle.pid, "model": r.model, "version": r.version,
                  "log": str(handle.log)}
    else:
        token = admission.read_text().strip() if admission is not None and admission.exists() else ""
        result = {"applied": apply(admitted_objects(plan.objects, token), r.namespace), "namespace": r.namespace,
                  "version": r.version}
    registry_from_env().record_deployment(r.model, r.version, {"target": r.target, "namespace": r.namespace,
                                                               "stage": r.stage, **result})
    endpoint_out.write_text(json.dumps(result, indent=2))
    print(f"serve: {json.dumps(result)}", flush=True)
