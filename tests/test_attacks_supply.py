"""Supply-chain and platform attacks (T21–T24) played against the real gates, signer and server model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlsec.gates.decision import Decision
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.serve.model import SignedModel
from mlsec.sign import keys
from mlsec.sign import stage as signing
from mlsec.sign.attestation import Materials

from conftest import Signed

DIGEST = "072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed"


def test_T21_image_by_moving_tag_is_denied_by_the_deployment_gate(engine: InProcessEngine) -> None:
    """The attacker controls what a tag points at; a release naming the image by tag is not deployed."""
    container = {"name": "server", "image": "ghcr.io/mlsec/mlsec:1.0",
                 "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                 "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                 "securityContext": {"allowPrivilegeEscalation": False, "privileged": False,
                                     "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}}
    pod = {"automountServiceAccountToken": False, "containers": [container],
           "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}}
    objects = [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "server", "namespace": "serving"},
                "spec": {"template": {"spec": pod}}},
               {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "default-deny", "namespace": "serving"}, "spec": {}}]
    evidence = {"kind": "mlsec.evidence.deployment/v1", "subject": {"name": "credit", "digest": DIGEST},
                "release": {"model": "credit", "version": DIGEST[:16], "stage": "dev", "target": "cluster",
                            "namespace": "serving"}, "objects": objects}
    promoted = Decision(gate="promotion", environment="dev", allow=True, deny=[], subject=DIGEST,
                        evidence_sha256=None, policy_sha256=engine.policy_sha256, engine=engine.name)
    d = evaluate("deployment", evidence, environment="dev", engine=engine, decisions=[promoted])
    assert not d.allow and any("not pinned by digest" in r for r in d.deny), d.deny


def test_T22_model_that_skipped_the_training_gate_cannot_be_signed_off(signed: Signed, key_pair: keys.KeyPair,
                                                                        engine: InProcessEngine) -> None:
    """A pipeline definition with the training gate removed: the model is trained and signed, but the signing
    gate (and so the registry and promotion) has no training decision to rely on."""
    data_d, _train_d, _ = signed.decisions
    ev = signing.evidence(signed.bundle, "credit", key_pair.public_key)
    d = evaluate("signing", ev, environment="dev", engine=engine, decisions=[data_d])
    assert not d.allow and any("training-gate decision" in r for r in d.deny), d.deny


def test_T23_model_signed_with_a_retired_key_is_not_loaded(tmp_path: Path, signed: Signed,
                                                           key_pair: keys.KeyPair, other_key_pair: keys.KeyPair) -> None:
    """After rotation the server trusts only the new key: a swapped model signed with the stolen old key
    (other_key_pair here) is refused."""
    materials = Materials(dataset_uri="data/credit_sample.csv",
                          dataset_digest=signed.trained.data_evidence.subject.digest,
                          decision_digests={}, code_commit="stolen", image="local")
    forged = signing.sign(signed.trained.model_dir, tmp_path / "forged", other_key_pair, materials, "attacker")
    model = SignedModel("credit", forged, key_pair.public_key)
    with pytest.raises(Exception, match="(?i)verif|signature"):
        model.load()
    assert not model.ready


_RESIDUE = """
import sys, torch
n = 64 * 1024 * 1024 // 4
if sys.argv[1] == "write":
    x = torch.full((n,), 1234.5678, device="cuda")
    torch.cuda.synchronize()
else:
    y = torch.empty((n,), device="cuda")
    print(int((y == 1234.5678).sum().item()))
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_T24_freed_gpu_memory_holds_no_training_data() -> None:
    """Job A leaves 64 MiB of a recognisable value on the device and exits; job B allocates without
    initialising and looks for it."""
    subprocess.run([sys.executable, "-c", _RESIDUE, "write"], check=True, timeout=120)
    out = subprocess.run([sys.executable, "-c", _RESIDUE, "read"], check=True, timeout=120,
                         capture_output=True, text=True)
    assert json.loads(out.stdout.strip()) == 0, f"{out.stdout.strip()} values of the previous job were readable"
