"""A KServe model that verifies its signed bundle before loading and validates every request.

Speaks V1 ({"instances": [{feature: value}]}) and the Open Inference Protocol v2 (one FP32/FP64
input "input" of shape [N, features], or one input per feature of shape [N]), through the same
row parser the guard and the monitors use (mlsec.serve.inputs).

The bundle is verified and loaded from one private copy (a fresh 0700 directory, regular files
only, symlinks refused), so the bytes that were verified are the bytes that are loaded even if
someone swaps files in the original directory meanwhile.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import torch
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from mlsec.fsutil import copy_private
from mlsec.serve import inputs
from mlsec.serve.inputs import MAX_BATCH, OutOfRange
from mlsec.sign import stage as signing
from mlsec.sign.methods import Trust
from mlsec.train import watermark
from mlsec.train.model import load

__all__ = ["MAX_BATCH", "SignedModel", "private_copy"]


def _copy_tree(src: Path, dst: Path) -> None:
    """Regular files and directories only; a symlink or anything else anywhere is refused."""
    pending = [(src, dst)]
    while pending:
        s, d = pending.pop()
        os.mkdir(d, 0o700)
        with os.scandir(s) as entries:
            for e in entries:
                if e.is_symlink():
                    raise ValueError(f"signed bundle holds a symlink: {e.name}")
                if e.is_dir(follow_symlinks=False):
                    pending.append((Path(e.path), d / e.name))
                else:
                    copy_private(Path(e.path), d / e.name)  # refuses what is not (or no longer) a regular file


def private_copy(bundle: Path) -> Path:
    """The parts of the bundle that verification and loading read, copied into a fresh 0700 directory."""
    root = Path(tempfile.mkdtemp(prefix="mlsec-bundle-"))  # mode 0700, owned by us
    try:
        if Path(bundle, signing.MODEL).is_symlink():
            raise ValueError(f"signed bundle holds a symlink: {signing.MODEL}")
        _copy_tree(bundle / signing.MODEL, root / signing.MODEL)
        for name in (signing.SIGNATURE, signing.ATTESTATION):
            if (bundle / name).exists() or (bundle / name).is_symlink():
                copy_private(bundle / name, root / name)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root


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
        """Refuses to load unless the signature and attestation verify against the configured trust;
        verifies and loads the same private copy of the bundle."""
        copy = private_copy(self.bundle)
        try:
            verified = signing.verify(copy, self.trust)
            if self.expected_digest and verified.model_digest != self.expected_digest:
                raise ValueError(f"model digest {verified.model_digest} is not the expected {self.expected_digest}")
            net, cfg = load(copy / signing.MODEL)
            watermark.check_served(net, cfg)  # with a key configured, the model must answer its watermark
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        self.net, self.cfg = net, cfg
        self.digest = verified.model_digest
        self.ready = True
        return True

    def rows_v1(self, payload: Any) -> list[list[float]]:
        return inputs.rows_v1(payload, self.cfg)

    def rows_v2(self, request: InferRequest) -> list[list[float]]:
        tensors = [{"name": i.name, "shape": list(i.shape), "datatype": i.datatype,
                    "data": i.data.tolist() if isinstance(i.data, np.ndarray) else i.data} for i in request.inputs]
        return inputs.rows_from_tensors(tensors, self.cfg)

    # -- inference -------------------------------------------------------------------------------
    def _score(self, rows: list[list[float]]) -> tuple[list[int], list[float]]:
        with torch.no_grad():
            prob = torch.sigmoid(self.net(torch.tensor(rows, dtype=torch.float32))).tolist()
        for r, p in enumerate(prob):
            if not math.isfinite(p):  # never a null probability or a label made from NaN
                raise OutOfRange(f"row {r}: the model gives no finite score for this input")
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
