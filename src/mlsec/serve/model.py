"""A KServe model that verifies its signed bundle before loading and validates every request."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import kserve
import torch
from kserve.errors import InvalidInput

from mlsec.sign import stage as signing
from mlsec.sign.methods import Trust
from mlsec.train.model import load

MAX_BATCH = 256


class SignedModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, bundle: Path, trust: Trust | Path, expected_digest: str | None = None) -> None:
        super().__init__(name)
        self.bundle = bundle
        self.trust = trust
        self.expected_digest = expected_digest
        self.digest: str | None = None

    def load(self) -> bool:
        """Refuses to load unless the signature and attestation verify against the configured trust."""
        verified = signing.verify(self.bundle, self.trust)
        if self.expected_digest and verified.model_digest != self.expected_digest:
            raise ValueError(f"model digest {verified.model_digest} is not the expected {self.expected_digest}")
        self.net, self.cfg = load(self.bundle / signing.MODEL)
        self.digest = verified.model_digest
        self.ready = True
        return True

    def _rows(self, payload: Any) -> list[list[float]]:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise InvalidInput('body must be {"instances": [...]} with at least one instance')
        if len(instances) > MAX_BATCH:
            raise InvalidInput(f"batch of {len(instances)} exceeds the maximum {MAX_BATCH}")
        return [self._row(i, inst) for i, inst in enumerate(instances)]

    def _row(self, i: int, inst: Any) -> list[float]:
        if not isinstance(inst, dict):
            raise InvalidInput(f"instances[{i}] must be an object keyed by feature name")
        missing = [f for f in self.cfg.features if f not in inst]
        extra = [k for k in inst if k not in self.cfg.features]
        if missing or extra:
            raise InvalidInput(f"instances[{i}]: missing features {missing}, unknown features {extra}")
        row = []
        for f in self.cfg.features:
            v = inst[f]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InvalidInput(f"instances[{i}].{f} must be a finite number, got {v!r}")
            row.append(float(v))
        return row

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        rows = self._rows(payload)
        with torch.no_grad():
            prob = torch.sigmoid(self.net(torch.tensor(rows, dtype=torch.float32))).tolist()
        # Label and a rounded probability only: logits and full precision help model extraction.
        return {"predictions": [{"label": int(p >= self.cfg.threshold), "probability": round(p, 2)} for p in prob]}
