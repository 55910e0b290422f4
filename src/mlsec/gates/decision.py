"""A gate decision: the verdict plus everything needed to tell later what it was about."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mlsec.digest import sha256_json
from mlsec.evidence import utcnow


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    time: datetime = Field(default_factory=utcnow)
    gate: str
    environment: str
    allow: bool
    deny: list[str]
    warn: list[str] = Field(default_factory=list)
    subject: str | None  # digest of what was judged, when the evidence was well-formed enough to say
    evidence_sha256: str | None
    policy_sha256: str | None
    engine: str
    stage: str | None = None  # a promotion's target stage: part of what the signed decision vouches for

    @property
    def digest(self) -> str:
        """Names this decision in attestations and registry records."""
        return sha256_json(self.model_dump(mode="json"))

    # What later gates' policies see of this decision: the facts rules judge ("gate G allowed subject S
    # under environment E and bundle B"). Reasons and times stay in the audit log; each input node costs
    # the engine binding about a microsecond of JSON round-trips, so the input carries no more.
    POLICY_FIELDS: ClassVar[tuple[str, ...]] = ("gate", "environment", "allow", "subject", "policy_sha256")

    def policy_input(self) -> dict[str, object]:
        return {f: getattr(self, f) for f in self.POLICY_FIELDS}

    @property
    def result(self) -> str:
        return "allow" if self.allow else "deny"

    def summary(self) -> str:
        reasons = "; ".join(self.deny) if self.deny else "all checks passed"
        return f"[{self.gate}] {self.result.upper()}: {reasons}"


class GateDenied(RuntimeError):
    def __init__(self, decision: Decision):
        super().__init__(decision.summary())
        self.decision = decision


def write_decisions(path: Path, decisions: list[Decision]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([d.model_dump(mode="json") for d in decisions], indent=2))


def read_decisions(path: Path) -> list[Decision]:
    """Decisions, or a gate task's history of signed decisions read WITHOUT verifying them: for tools that
    only ask what a policy would say (policy eval); gates verify histories (mlsec.gates.attest)."""
    from mlsec.gates.attest import unverified_decision  # attest builds on this module

    docs = json.loads(path.read_text())
    if not isinstance(docs, list):
        raise TypeError(f"{path} is not a list of decisions")
    return [unverified_decision(d) if isinstance(d, dict) and "payload" in d else Decision.model_validate(d)
            for d in docs]
