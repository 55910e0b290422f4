"""Stand-ins that a proof run swaps in for a control (threats.yaml `switch.use`): each does the job of the
function it replaces minus the one check under proof. Nothing else imports this module."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import jwt


def value_unchecked(cfg: Any, where: str, feature: str, v: Any) -> float:
    """mlsec.serve.inputs:check without the type, finiteness and contract-range checks."""
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return math.nan


async def read_unbounded(receive: Any, limit: int) -> bytes:
    """mlsec.serve.guard:_read without the limit applied while reading."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def claims_any_scope(raw: bytes, public_key: Path) -> dict[str, dict[str, Any]]:
    """mlsec.gates.bundle:_claims without the scope check."""
    from mlsec.gates.bundle import ALGORITHM
    from mlsec.sign import keys

    claims = jwt.decode(json.loads(raw)["signatures"][0], keys.load_public(public_key), algorithms=[ALGORITHM])
    return {f["name"]: f for f in claims.get("files", [])}


def copy_tree_following_links(src: Path, dst: Path) -> None:
    """mlsec.serve.model:_copy_tree without the symlink refusal."""
    shutil.copytree(src, dst, symlinks=False)


def api_keys_unchecked(self: Any, entries: dict[str, dict[str, Any]]) -> None:
    """mlsec.serve.auth:ApiKeys.__init__ without the refusal of an empty key set."""
    from mlsec.serve.auth import Client

    self._by_hash = {e["hash"]: Client(c, frozenset(e["models"])) for c, e in entries.items()}


def open_unverified(envelope: Any, keys: Any) -> dict[str, Any]:
    """mlsec.gates.attest:open_envelope without the signature check."""
    from mlsec.gates.attest import peek

    return peek(envelope)


def score_full_precision(self: Any, rows: list[list[float]]) -> tuple[list[int], list[float]]:
    """mlsec.serve.model:SignedModel._score without rounding the probability."""
    import torch

    with torch.no_grad():
        prob = torch.sigmoid(self.net(torch.tensor(rows, dtype=torch.float32))).tolist()
    return [int(p >= self.cfg.threshold) for p in prob], prob


def objects_unadmitted(objects: list[dict[str, Any]], token: str) -> list[dict[str, Any]]:
    """mlsec.serve.task:admitted_objects without the check that the token names exactly these objects."""
    return [dict(o) for o in objects]


def scan_skipped(path: Path) -> Any:
    """mlsec.train.supply:scan without the pickle scanners (the format is still read from the bytes)."""
    from mlsec.digest import sha256_file
    from mlsec.train import supply
    from mlsec.train.evidence import BaseModel

    return BaseModel(digest=sha256_file(path), format="safetensors" if supply._is_safetensors(path) else "pickle",
                     scans=[])
