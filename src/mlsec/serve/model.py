"""A KServe model that verifies its signed bundle before loading and validates every request.

Speaks V1 ({"instances": [{feature: value}]}) and the Open Inference Protocol v2 (one FP32/FP64
input "input" of shape [N, features], or one input per feature of shape [N]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import torch
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from mlsec.sign import stage as signing
from mlsec.sign.methods import Trust
from mlsec.train.model import load

MAX_BATCH = 256


class SignedModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, bundle: Path, trust: Trust | Path, expected_digest: str | None = None,
                 precision: int = 2) -> None:
        super().__init__(name)
        self.bundle = bundle
        self.trust = trust
        self.expected_digest = expected_digest
        self.precision = precision
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

    # -- validation, shared by both protocols ------------------------------------------------------
    def _check(self, where: str, feature: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InvalidInput(f"{where}.{feature} must be a finite number, got {v!r}")
        p = (self.cfg.profile or {}).get(feature)
        if p and ((p.min is not None and v < p.min) or (p.max is not None and v > p.max)):
            raise InvalidInput(f"{where}.{feature}={v} outside the data contract range [{p.min}, {p.max}]")
        return float(v)

    def _batch(self, n: int) -> None:
        if n == 0:
            raise InvalidInput("at least one instance is required")
        if n > MAX_BATCH:
            raise InvalidInput(f"batch of {n} exceeds the maximum {MAX_BATCH}")

    def rows_v1(self, payload: Any) -> list[list[float]]:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list):
            raise InvalidInput('body must be {"instances": [...]}')
        self._batch(len(instances))
        rows = []
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict):
                raise InvalidInput(f"instances[{i}] must be an object keyed by feature name")
            missing = [f for f in self.cfg.features if f not in inst]
            extra = [k for k in inst if k not in self.cfg.features]
            if missing or extra:
                raise InvalidInput(f"instances[{i}]: missing features {missing}, unknown features {extra}")
            rows.append([self._check(f"instances[{i}]", f, inst[f]) for f in self.cfg.features])
        return rows

    def rows_v2(self, request: InferRequest) -> list[list[float]]:
        inputs = {i.name: i for i in request.inputs}
        features = self.cfg.features
        if set(inputs) == {"input"}:
            tensor = inputs["input"]
            columns = None
        elif set(inputs) == set(features):
            tensor, columns = None, [inputs[f] for f in features]
        else:
            raise InvalidInput(f'inputs must be one tensor "input" of shape [N, {len(features)}] '
                               f"or one tensor per feature {features}; got {sorted(inputs)}")
        for t in [tensor] if tensor else columns or []:
            if t.datatype not in {"FP32", "FP64", "INT32", "INT64"}:
                raise InvalidInput(f"input {t.name!r}: datatype {t.datatype} is not numeric")
        if tensor is not None:
            shape = list(tensor.shape)
            if len(shape) != 2 or shape[1] != len(features):
                raise InvalidInput(f'input "input" must have shape [N, {len(features)}], got {shape}')
            flat = _flat(tensor.data)
            if len(flat) != shape[0] * shape[1]:
                raise InvalidInput(f'input "input": {len(flat)} values do not fill shape {shape}')
            grid = [flat[r * shape[1]:(r + 1) * shape[1]] for r in range(shape[0])]
        else:
            cols = [_flat(c.data) for c in columns or []]
            if len({len(c) for c in cols}) != 1:
                raise InvalidInput("per-feature inputs must all have the same length")
            grid = [list(r) for r in zip(*cols)]
        self._batch(len(grid))
        return [[self._check(f"inputs[{r}]", f, v) for f, v in zip(features, row)] for r, row in enumerate(grid)]

    # -- inference -------------------------------------------------------------------------------
    def _score(self, rows: list[list[float]]) -> tuple[list[int], list[float]]:
        with torch.no_grad():
            prob = torch.sigmoid(self.net(torch.tensor(rows, dtype=torch.float32))).tolist()
        # Label and a rounded probability only: logits and full precision help model extraction.
        return [int(p >= self.cfg.threshold) for p in prob], [round(p, self.precision) for p in prob]

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            labels, probs = self._score(self.rows_v2(payload))
            n = len(labels)
            return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[
                InferOutput("label", [n], "INT64", labels), InferOutput("probability", [n], "FP32", probs)])
        labels, probs = self._score(self.rows_v1(payload))
        return {"predictions": [{"label": label, "probability": p} for label, p in zip(labels, probs)]}


def _flat(data: Any) -> list[Any]:
    values = data.tolist() if isinstance(data, np.ndarray) else data
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
        raise InvalidInput("tensor data must be a list of numbers")
    out: list[Any] = []
    for v in values:
        if isinstance(v, list):
            out.extend(_flat(v))
        else:
            out.append(v)
    return out
