"""The train stage: dataset -> model directory + training evidence (accuracy, AUC, fairness)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from mlsec import __version__
from mlsec.digest import sha256_file, tree_digest
from mlsec.evidence import Subject
from mlsec.ingest.contract import DataContract
from mlsec.train.evidence import Fairness, Metrics, TrainingEvidence, TrainingRun
from mlsec.train.model import CreditModel, FeatureProfile, ModelConfig, save

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 30
    hidden: int = 32
    lr: float = 3e-3
    batch_size: int = 256
    seed: int = 0
    holdout: float = 0.25


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    evidence: TrainingEvidence


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def profile(x: np.ndarray, contract: DataContract) -> dict[str, FeatureProfile]:
    """Per feature: the contract's range and decile bins of the training data, signed with the model."""
    out = {}
    for i, f in enumerate(contract.features):
        edges = np.unique(np.quantile(x[:, i], np.linspace(0, 1, 11)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, x[:, i], side="right"), minlength=len(edges) + 1)
        col = contract.columns[f]
        out[f] = FeatureProfile(min=col.min, max=col.max, edges=edges.tolist(),
                                expected=(counts / counts.sum()).tolist())
    return out


def demographic_parity_difference(pred: np.ndarray, groups: np.ndarray) -> float:
    rates = [float(pred[groups == g].mean()) for g in np.unique(groups)]
    return max(rates) - min(rates) if len(rates) > 1 else 0.0


def run(dataset: Path, contract: DataContract, out_dir: Path, name: str, params: TrainParams = TrainParams()) -> TrainResult:
    started = time.perf_counter()
    torch.manual_seed(params.seed)
    df = pd.read_csv(dataset)
    missing = [c for c in [*contract.features, contract.label] if c not in df.columns]
    if missing:
        raise ValueError(f"dataset {dataset} lacks columns {missing} that the contract's features need")
    x = df[contract.features].to_numpy(np.float32)
    y = df[contract.label].to_numpy(np.float32)
    idx_train, idx_test = train_test_split(
        np.arange(len(df)), test_size=params.holdout, random_state=params.seed, stratify=y
    )
    mean, std = x[idx_train].mean(0), x[idx_train].std(0) + 1e-6
    cfg = ModelConfig(features=contract.features, mean=mean.tolist(), std=std.tolist(),
                      hidden=params.hidden, label=contract.label, profile=profile(x[idx_train], contract))
    device = pick_device()
    model = CreditModel(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(x[idx_train]).to(device), torch.from_numpy(y[idx_train]).to(device)
    gen = torch.Generator().manual_seed(params.seed)
    for epoch in range(params.epochs):
        model.train()
        for batch in torch.randperm(len(xt), generator=gen).split(params.batch_size):
            opt.zero_grad()
            loss = loss_fn(model(xt[batch]), yt[batch])
            loss.backward()
            opt.step()
        if (epoch + 1) % 10 == 0 or epoch + 1 == params.epochs:
            log.info("train: epoch %d/%d loss %.4f (%s)", epoch + 1, params.epochs, loss.item(), device)
    model.eval().cpu()
    with torch.no_grad():
        prob = torch.sigmoid(model(torch.from_numpy(x[idx_test]))).numpy()
    pred = (prob >= cfg.threshold).astype(int)
    metrics = Metrics(
        accuracy=float((pred == y[idx_test]).mean()),
        auc=float(roc_auc_score(y[idx_test], prob)),
        holdout_rows=len(idx_test),
    )
    fairness = None
    if contract.protected_attribute and contract.protected_attribute in df.columns:
        groups = df[contract.protected_attribute].to_numpy()[idx_test]
        fairness = Fairness(protected_attribute=contract.protected_attribute,
                            demographic_parity_difference=demographic_parity_difference(pred, groups))
    save(model, cfg, out_dir)
    evidence = TrainingEvidence(
        subject=Subject(name=name, digest=tree_digest(out_dir)),
        dataset_digest=sha256_file(dataset),
        files=sorted(p.name for p in out_dir.iterdir()),
        metrics=metrics,
        fairness=fairness,
        run=TrainingRun(device=str(device), epochs=params.epochs, seed=params.seed,
                        torch_version=torch.__version__, mlsec_version=__version__,
                        duration_s=time.perf_counter() - started),
    )
    log.info("train: accuracy %.3f AUC %.3f", metrics.accuracy, metrics.auc)
    return TrainResult(model_dir=out_dir, evidence=evidence)
