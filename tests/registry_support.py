"""Shared by the registry tests: promotions with the right gate key, and a policy copy in which staging and
prod trust the test signer and list test approvers (the repo's data lists none, so nothing reaches prod)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlsec.config import policy_dir
from mlsec.gates.decision import Decision
from mlsec.gates.engine import InProcessEngine
from mlsec.registry.store import Registry
from mlsec.sign import keys

from conftest import GateKeys


def promote(registry: Registry, version: str, stage: str, key_pair: keys.KeyPair, engine: InProcessEngine,
            gate_keys: GateKeys, env: str | None = None, author: str = "alice", name: str = "credit") -> Decision:
    env = env or registry.environment_for(stage)
    return registry.promote(name, version, stage, trust=key_pair.public_key, engine=engine, environment=env,
                            signer=gate_keys.signer(env), author=author).decision


@dataclass(frozen=True)
class Approver:
    identity: str
    key: keys.KeyPair


def chain_policies(root: Path, signer_pub: Path, approvers: list[Approver]) -> Path:
    """A copy of the policies where every environment trusts signer_pub and lists approvers for every stage.
    The training bars of staging/prod are dev's: the fixture model is trained for 8 epochs only."""
    dst = Path(shutil.copytree(policy_dir(), root / "policies"))
    listed = {a.identity: [keys.fingerprint(a.key.public_key)] for a in approvers}
    dev_training = json.loads((dst / "data" / "dev.json").read_text())["dev"]["training"]
    for env in ("dev", "staging", "prod"):
        f = dst / "data" / f"{env}.json"
        doc = json.loads(f.read_text())
        sections = doc[env]
        sections["signing"]["allowed_signers"] = [keys.fingerprint(signer_pub)]
        sections["training"] = dev_training
        for stage in sections["promotion"]["stages"].values():
            stage["approvers"] = listed
            stage["min_accuracy"] = stage["min_auc"] = 0.7
        f.write_text(json.dumps(doc))
    return dst


def chain_engine(root: Path, signer_pub: Path, approvers: list[Approver]) -> InProcessEngine:
    return InProcessEngine(chain_policies(root, signer_pub, approvers))
