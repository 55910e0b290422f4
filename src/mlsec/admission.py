"""The admission token: what lets the cluster itself refuse a serving workload the deployment gate did not allow.

The deployment gate allows an exact list of objects. The token is a compact JWS (EdDSA, the environment's gate
key) whose claims name the digest of each allowed object's admitted content; the serve stage puts it on every
object it applies (annotation mlsec.dev/admission). The Gatekeeper policy in manifests/admission.yaml
recomputes the digest of what is being admitted, verifies the token with the gate public keys, and refuses
anything else: a changed image, command or arguments, a loosened NetworkPolicy, an expired or forged token.

The admitted content is what the API server does not default: containers' name, image, command and args,
and a NetworkPolicy's spec (the chart spells out policyTypes and protocols). Its digest is sha256 over the
JSON that OPA's json.marshal writes (Go encoding/json: sorted keys, no spaces, <>& escaped), so Python and
Rego agree byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

ANNOTATION = "mlsec.dev/admission"
WORKLOAD_PODS = {"Deployment": ("spec", "template", "spec"), "InferenceService": ("spec", "predictor")}


def admitted(obj: dict[str, Any]) -> dict[str, Any]:
    kind, name = obj["kind"], obj["metadata"]["name"]
    if kind == "NetworkPolicy":
        return {"kind": kind, "name": name, "spec": obj["spec"]}
    if kind not in WORKLOAD_PODS:
        raise ValueError(f"{kind}/{name}: not a kind the admission policy knows (Deployment, InferenceService, "
                         "NetworkPolicy)")
    pod: Any = obj
    for part in WORKLOAD_PODS[kind]:
        pod = pod[part]
    containers = [{"name": c["name"], "image": c["image"], "command": c.get("command", []), "args": c.get("args", [])}
                  for field in ("initContainers", "containers") for c in pod.get(field, [])]
    return {"kind": kind, "name": name, "containers": containers}


def go_json(value: Any) -> str:
    """json.marshal as OPA (Go) writes it."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def admissible(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects the admission policy checks (the serving workload and its NetworkPolicies)."""
    return [o for o in objects if o["kind"] in WORKLOAD_PODS or o["kind"] == "NetworkPolicy"]


def named_objects(token: str) -> Any:
    """The object digests a token names, read without verifying it: the serve task's check that it applies what
    the token covers, before the cluster (which verifies it) refuses a half-applied release."""
    import jwt

    return jwt.decode(token, options={"verify_signature": False}).get("objects")


def object_digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(go_json(admitted(obj)).encode()).hexdigest()


def digests(objects: list[dict[str, Any]]) -> dict[str, str]:
    """What a token names: kind/name -> digest of the admitted content, for each object given."""
    return {f"{o['kind']}/{o['metadata']['name']}": object_digest(o) for o in objects}


def claims(objects: list[dict[str, Any]], environment: str, decision_id: str, ttl_s: int,
           now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    return {"gate": "deployment", "allow": True, "environment": environment, "decision": decision_id,
            "objects": digests(objects),
            "iat": int(now), "exp": int(now) + ttl_s}


def mint(objects: list[dict[str, Any]], environment: str, decision_id: str, gate_key: Path,
         ttl_s: int = 900) -> str:
    """The token for exactly these objects, signed with the environment's gate key (Ed25519 PEM)."""
    import jwt
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(gate_key.read_bytes(), password=None)
    return jwt.encode(claims(objects, environment, decision_id, ttl_s), key, algorithm="EdDSA")  # type: ignore[arg-type]


def stamp(objects: list[dict[str, Any]], token: str) -> list[dict[str, Any]]:
    """The objects with the token on each (the annotation is not part of the admitted content)."""
    out = []
    for o in objects:
        meta = {**o["metadata"], "annotations": {**o["metadata"].get("annotations", {}), ANNOTATION: token}}
        out.append({**o, "metadata": meta})
    return out
