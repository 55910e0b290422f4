"""Append-only, hash-chained decision log: editing, reordering or truncating an entry breaks the chain."""

from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsec.digest import sha256_json
from mlsec.gates.decision import Decision

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditLog:
    path: Path

    def append(self, decision: Decision) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # KFP tasks and the CLI may append at the same time
            f.seek(0)
            lines = f.read().splitlines()
            prev = json.loads(lines[-1])["entry_sha256"] if lines else GENESIS
            entry: dict[str, Any] = {
                "id": decision.id,
                "time": decision.time.isoformat(),
                "gate": decision.gate,
                "environment": decision.environment,
                "policy_sha256": decision.policy_sha256,
                "evidence_sha256": decision.evidence_sha256,
                "subject": decision.subject,
                "result": decision.result,
                "reasons": decision.deny,
                "warnings": decision.warn,
                "decision_sha256": decision.digest,
                "prev_sha256": prev,
            }
            entry["entry_sha256"] = sha256_json(entry)
            f.write(json.dumps(entry, sort_keys=True) + "\n")
        return entry

    def verify(self) -> int:
        """Returns the number of entries; raises ValueError naming the first broken line."""
        if not self.path.exists():
            raise ValueError(f"audit log {self.path} does not exist")
        prev = GENESIS
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
                claimed = entry.pop("entry_sha256")
            except (json.JSONDecodeError, KeyError, AttributeError) as e:
                raise ValueError(f"{self.path}:{n}: not an audit entry ({e})") from e
            if entry.get("prev_sha256") != prev:
                raise ValueError(f"{self.path}:{n}: chain broken (an entry before it was changed or removed)")
            if sha256_json(entry) != claimed:
                raise ValueError(f"{self.path}:{n}: entry was modified after it was written")
            prev = claimed
        return len(lines)
