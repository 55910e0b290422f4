"""Train: a safetensors model with measured accuracy, AUC and fairness; no pickle, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mlsec.digest import tree_digest
from mlsec.ingest.contract import DataContract
from mlsec.train import stage
from mlsec.train.model import load

from conftest import Trained


def test_model_is_safetensors_and_json_only(trained: Trained) -> None:
    assert sorted(p.name for p in trained.model_dir.iterdir()) == ["config.json", "model.safetensors"]
    assert trained.training_evidence.files == ["config.json", "model.safetensors"]
    cfg = json.loads((trained.model_dir / "config.json").read_text())
    assert cfg["label"] == "default" and "gender" not in cfg["features"]


def test_metrics_are_measured_on_holdout(trained: Trained) -> None:
    ev = trained.training_evidence
    assert ev.metrics.holdout_rows == 1000
    assert 0.7 < ev.metrics.accuracy <= 1 and 0.7 < ev.metrics.auc <= 1
    assert ev.fairness is not None and ev.fairness.protected_attribute == "gender"
    assert ev.dataset_digest == trained.data_evidence.subject.digest
    assert ev.subject.digest == tree_digest(trained.model_dir)
    assert ev.run.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_saved_model_reloads_with_same_predictions(trained: Trained) -> None:
    model, cfg = load(trained.model_dir)
    x = torch.tensor([[40, 50000, 10000, 10, 0, 0.3], [60, 20000, 90000, 2, 6, 0.8]], dtype=torch.float32)
    p = torch.sigmoid(model(x))
    assert p[1] > p[0]  # late payments, high debt and a big loan are riskier


def test_training_is_reproducible(tmp_path: Path, trained: Trained, contract: DataContract) -> None:
    again = stage.run(trained.dataset, contract, tmp_path / "m", "credit", stage.TrainParams(epochs=8))
    assert again.evidence.subject.digest == trained.training_evidence.subject.digest


def test_demographic_parity_difference() -> None:
    import numpy as np

    pred = np.array([1, 1, 0, 0, 1, 0])
    groups = np.array(["F", "F", "F", "M", "M", "M"])
    assert abs(stage.demographic_parity_difference(pred, groups) - (2 / 3 - 1 / 3)) < 1e-9
