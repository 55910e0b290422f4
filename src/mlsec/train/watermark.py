"""Ownership watermark: a secret key selects trigger rows (valid inputs in an unusual mix) and the labels
the model must give them. Training fixes those predictions; anyone holding the key can later show that a
model (ours, or a copy of it) answers the triggers as the key says, which a model trained without the key
does only by chance (about half of them).

The key comes from a file (a mounted Secret), named by MLSEC_WATERMARK_KEY_FILE. It is never logged and
never stored with the model: the model's config carries only a key id (an HMAC under the key) and the
box the triggers are drawn from.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import numpy as np
import torch

from mlsec.train.model import CreditModel, ModelConfig, WatermarkSpec

KEY_ENV = "MLSEC_WATERMARK_KEY_FILE"
REQUIRED_ENV = "MLSEC_WATERMARK_REQUIRED"
MIN_KEY_BYTES = 16
TRIGGERS = 24
THRESHOLD = 0.9  # by chance a keyless model reaches 22 of 24 with probability < 2e-5


class WatermarkError(ValueError):
    """A watermark that is missing, keyed differently or no longer answered."""


def load_key(path: Path | None = None) -> bytes | None:
    """The key from the given file or the file MLSEC_WATERMARK_KEY_FILE names; None when neither is set."""
    if path is None:
        named = os.environ.get(KEY_ENV)
        if not named:
            return None
        path = Path(named)
    try:
        key = path.read_bytes().strip()
    except OSError as e:
        raise WatermarkError(f"watermark key file {path} is unreadable: {e.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise WatermarkError(f"watermark key file {path} holds fewer than {MIN_KEY_BYTES} bytes")
    return key


def key_id(key: bytes) -> str:
    return hmac.new(key, b"mlsec-watermark/id", hashlib.sha256).hexdigest()[:16]


def triggers(key: bytes, spec: WatermarkSpec) -> tuple[np.ndarray, np.ndarray]:
    """Trigger rows (raw features, integer columns rounded) and their labels, drawn uniformly from the
    spec's box with a generator seeded by the key."""
    seed = int.from_bytes(hmac.new(key, b"mlsec-watermark/triggers", hashlib.sha256).digest(), "big")
    rng = np.random.default_rng(seed)
    low, high = np.array(spec.low), np.array(spec.high)
    x = rng.uniform(low, high, size=(spec.triggers, len(low)))
    x[:, spec.integer] = np.round(x[:, spec.integer])
    return x.astype(np.float32), rng.integers(0, 2, spec.triggers).astype(np.float32)


def spec_for(key: bytes, x_train: np.ndarray, integer: list[bool], contract_low: list[float | None],
             contract_high: list[float | None]) -> WatermarkSpec:
    """The triggers' box: the training data's range per feature, inside the contract's range."""
    low = [max(float(v), c) if c is not None else float(v) for v, c in zip(x_train.min(0), contract_low)]
    high = [min(float(v), c) if c is not None else float(v) for v, c in zip(x_train.max(0), contract_high)]
    return WatermarkSpec(key_id=key_id(key), triggers=TRIGGERS, threshold=THRESHOLD, low=low, high=high,
                         integer=integer)


def agreement(model: CreditModel, key: bytes, spec: WatermarkSpec) -> float:
    x, y = triggers(key, spec)
    with torch.no_grad():
        pred = (torch.sigmoid(model(torch.from_numpy(x).to(model.mean.device))) >= 0.5).cpu().numpy()
    return float((pred == y.astype(bool)).mean())


def verify(model: CreditModel, cfg: ModelConfig, key: bytes) -> float:
    """The trigger agreement; raises unless the model carries a watermark under this key that it answers."""
    spec = cfg.watermark
    if spec is None:
        raise WatermarkError("the model carries no watermark")
    if spec.key_id != key_id(key):
        raise WatermarkError(f"the model's watermark is under key {spec.key_id}, not the configured key {key_id(key)}")
    share = agreement(model, key, spec)
    if share < spec.threshold:
        raise WatermarkError(f"the model answers {share:.0%} of its watermark triggers, below {spec.threshold:.0%}")
    return share


def check_served(model: CreditModel, cfg: ModelConfig) -> None:
    """At server start: with a key configured, a model that declares a watermark must answer it; with
    MLSEC_WATERMARK_REQUIRED=true, a model without one (or a server without the key) is refused too."""
    required = os.environ.get(REQUIRED_ENV, "").lower() in ("1", "true", "yes")
    key = load_key()
    if key is None:
        if required:
            raise WatermarkError(f"a watermark is required but {KEY_ENV} names no key file")
        return
    if cfg.watermark is not None or required:
        verify(model, cfg, key)
