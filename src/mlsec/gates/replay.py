"""Recorded decisions judged again under other policies: what a policy change would have decided on the
evidence past runs produced, before the change is rolled out.

A local run keeps every evidence document and decision history under its run directory. Each recorded
decision is matched to the evidence it judged by evidence_sha256 and evaluated again, with the decisions
recorded before it as its earlier decisions (so each gate's change is seen on its own).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from mlsec.digest import sha256_json
from mlsec.gates.attest import AttestationError, unverified_decision
from mlsec.gates.decision import Decision
from mlsec.gates.engine import PolicyEngine
from mlsec.gates.gate import evaluate

_MAX_DOC_BYTES = 1 << 20  # evidence and decision files are kilobytes; model weights are not read


@dataclass(frozen=True)
class Replayed:
    run: str
    recorded: Decision
    now: Decision | None  # None: the evidence it judged is not in the run directory

    @property
    def changed(self) -> bool:
        return self.now is not None and (self.now.allow, set(self.now.deny)) != (self.recorded.allow, set(self.recorded.deny))


def _json_docs(run: Path) -> Iterator[Any]:
    for f in sorted(run.rglob("*")):
        if f.is_file() and not f.is_symlink() and f.stat().st_size <= _MAX_DOC_BYTES:
            try:
                yield json.loads(f.read_bytes())
            except (UnicodeDecodeError, ValueError):
                continue


def _histories(doc: Any) -> list[Decision] | None:
    """A gate task's history: signed decisions (read, not verified: replay only asks what policies say)."""
    if not isinstance(doc, list) or not doc or not all(isinstance(d, dict) and "payload" in d for d in doc):
        return None
    try:
        return [unverified_decision(d) for d in doc]
    except AttestationError:
        return None


def replay_run(run: Path, engine: PolicyEngine) -> list[Replayed]:
    """Every decision recorded in one run directory, in the order they were taken."""
    evidence: dict[str, Any] = {}
    earlier: dict[str, tuple[Decision, list[Decision]]] = {}  # id -> (decision, decisions before it)
    for doc in _json_docs(run):
        if isinstance(doc, dict) and str(doc.get("kind", "")).startswith("mlsec.evidence."):
            evidence[sha256_json(doc)] = doc
        elif (history := _histories(doc)) is not None:
            for i, d in enumerate(history):
                earlier.setdefault(d.id, (d, history[:i]))
    out = []
    for d, before in sorted(earlier.values(), key=lambda pair: pair[0].time):
        doc = evidence.get(d.evidence_sha256 or "")
        now = None if doc is None else evaluate(d.gate, doc, environment=d.environment, engine=engine, decisions=before)
        out.append(Replayed(run.name, d, now))
    return out


def runs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name) if root.is_dir() else []
