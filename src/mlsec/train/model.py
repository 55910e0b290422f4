"""The model and its on-disk form: safetensors weights plus a JSON config. No pickle anywhere."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True)
class FeatureProfile:
    """What serving checks inputs against: the contract's range and the training distribution."""

    min: float | None
    max: float | None
    edges: list[float]  # decile bin edges of the training data (drift, input-space coverage)
    expected: list[float]  # share of training rows in each bin


@dataclass(frozen=True)
class WatermarkSpec:
    """Where a keyed watermark's triggers come from (mlsec.train.watermark); the key itself is not here."""

    key_id: str
    triggers: int
    threshold: float
    low: list[float]
    high: list[float]
    integer: list[bool]


@dataclass(frozen=True)
class ModelConfig:
    features: list[str]
    mean: list[float]
    std: list[float]
    hidden: int
    label: str
    threshold: float = 0.5
    profile: dict[str, FeatureProfile] | None = None
    watermark: WatermarkSpec | None = None


class CreditModel(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(cfg.std, dtype=torch.float32))
        self.net = nn.Sequential(
            nn.Linear(len(cfg.features), cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw features in, logits out; standardisation lives inside the model so serving cannot skip it."""
        return self.net((x - self.mean) / self.std).squeeze(-1)


def save(model: CreditModel, cfg: ModelConfig, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, out_dir / WEIGHTS)
    (out_dir / CONFIG).write_text(json.dumps(asdict(cfg), indent=2, sort_keys=True))


def load(model_dir: Path) -> tuple[CreditModel, ModelConfig]:
    raw = json.loads((model_dir / CONFIG).read_text())
    profile = {f: FeatureProfile(**p) for f, p in (raw.pop("profile", None) or {}).items()}
    mark = raw.pop("watermark", None)
    cfg = ModelConfig(**raw, profile=profile or None, watermark=WatermarkSpec(**mark) if mark else None)
    model = CreditModel(cfg)
    model.load_state_dict(load_file(model_dir / WEIGHTS))
    model.eval()
    return model, cfg
