"""The train stage: dataset -> model directory + training evidence.

Measured on a held-out split: accuracy and AUC, group fairness (fairlearn), robust accuracy under FGSM and
PGD (ART), membership-inference leakage (ART), and, when asked for, DP-SGD's spent epsilon (Opacus),
PGD adversarial training's and the watermark's clean-accuracy cost, the base model's scan results. The
model directory also carries a CycloneDX SBOM of the environment that trained it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
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
from mlsec.train import fairness, privacy, robustness, supply, watermark
from mlsec.train.evidence import (
    AdversarialTraining,
    Metrics,
    SupplyChain,
    TrainingEvidence,
    TrainingRun,
    Watermark,
)
from mlsec.train.model import CreditModel, FeatureProfile, ModelConfig, save

log = logging.getLogger(__name__)

DEVICE_ENV = "MLSEC_TRAIN_DEVICE"
MIN_ROWS = 100  # below this neither the split nor any measurement on it means much
MIN_CLASS_ROWS = 10


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 30
    hidden: int = 32
    lr: float = 3e-3
    batch_size: int = 256
    seed: int = 0
    holdout: float = 0.25
    validation: float = 0.15  # share of the training rows that early stopping watches
    patience: int | None = 5  # epochs without a better validation loss before stopping; None: no early stop
    attack_epsilons: tuple[float, ...] = (0.1, 0.3)  # L-inf, standardised feature space
    attack_rows: int = 500  # holdout rows attacked
    membership_rows: int = 500  # members and as many non-members for membership inference
    adversarial_epsilon: float | None = None  # PGD adversarial training at this epsilon when set
    dp: privacy.DPConfig | None = None  # DP-SGD when set
    watermark_key: bytes | None = field(default=None, repr=False)  # never printed
    base_model: Path | None = None  # initial weights: safetensors, or a scanned pickle when allowed
    allow_pickle_base: bool = False
    device: str | None = None  # "cpu", "cuda", or None: CUDA when present (MLSEC_TRAIN_DEVICE overrides)


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    evidence: TrainingEvidence


def pick_device(requested: str | None = None) -> torch.device:
    """The requested device, else MLSEC_TRAIN_DEVICE, else CUDA when present; asking for CUDA without it
    is an error, not a silent fall back to the CPU."""
    choice = (requested or os.environ.get(DEVICE_ENV) or "auto").lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice not in ("cpu", "cuda"):
        raise ValueError(f"training device {choice!r} is not one of auto, cpu, cuda")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("training device cuda was asked for but no CUDA device is available")
    return torch.device(choice)


@contextlib.contextmanager
def _cpu_threads(device: torch.device) -> Iterator[None]:
    """One intra-op thread on CPU: the model is tiny, and extra threads only fight over shared cores."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def _read(dataset: Path, contract: DataContract) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The features and labels, or an error that names what makes them untrainable."""
    df = pd.read_csv(dataset)
    missing = [c for c in [*contract.features, contract.label] if c not in df.columns]
    if missing:
        raise ValueError(f"dataset {dataset} lacks columns {missing} that the contract's features need")
    if len(df) < MIN_ROWS:
        raise ValueError(f"dataset {dataset} has {len(df)} rows; training needs at least {MIN_ROWS}")
    feats = df[contract.features].apply(pd.to_numeric, errors="coerce")
    finite = np.isfinite(feats.to_numpy(np.float64))
    bad = {c: int(n) for c, n in zip(contract.features, (~finite).sum(0)) if n}
    if bad:
        raise ValueError(f"dataset {dataset} has missing, non-numeric or infinite feature values (rows per column: {bad})")
    labels = df[contract.label]
    if not labels.isin([0, 1]).all():
        raise ValueError(f"label column {contract.label!r} must hold only 0 and 1")
    counts = labels.value_counts()
    if len(counts) < 2:
        raise ValueError(f"label column {contract.label!r} holds a single class ({labels.iloc[0]}); "
                         "a classifier needs both")
    if counts.min() < MIN_CLASS_ROWS:
        raise ValueError(f"label {counts.idxmin()} has {counts.min()} rows; each class needs at least {MIN_CLASS_ROWS}")
    return df, feats.to_numpy(np.float32), labels.to_numpy(np.float32)


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def fit(params: TrainParams, cfg: ModelConfig, contract: DataContract, split: Split, device: torch.device,
        base: dict[str, torch.Tensor] | None, triggers: tuple[np.ndarray, np.ndarray] | None,
        quiet: bool = False) -> tuple[CreditModel, int, privacy.PrivateTraining | None]:
    """One training run: Adam (or DP-SGD), trigger rows in every batch when watermarking, clean plus PGD
    loss when adversarially training; unless patience is None, stops when the validation loss has not
    improved for `patience` epochs and keeps the best epoch's weights."""
    torch.manual_seed(params.seed)
    model = CreditModel(cfg).to(device)
    if base is not None:
        _init_from(model, base)
    opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    per_row = torch.nn.BCEWithLogitsLoss(reduction="none")
    xt, yt = torch.from_numpy(split.x_train).to(device), torch.from_numpy(split.y_train).to(device)
    xv, yv = torch.from_numpy(split.x_val).to(device), torch.from_numpy(split.y_val).to(device)
    trig = tuple(torch.from_numpy(a).to(device) for a in triggers) if triggers else None
    gen = torch.Generator().manual_seed(params.seed)
    private = None
    forward = model
    if params.dp:
        private = privacy.PrivateTraining(params.dp, model, opt, torch.utils.data.TensorDataset(xt, yt),
                                          params.batch_size, params.epochs, params.seed)
        forward, opt = private.model, private.optimizer
    attacker = robustness.Attacker(model, contract, device) if params.adversarial_epsilon else None

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if private:
            yield from ((xb, yb) for xb, yb in private.loader if len(xb))  # Poisson sampling: sizes vary
        else:
            yield from ((xt[b], yt[b]) for b in torch.randperm(len(xt), generator=gen).split(params.batch_size))

    best, best_state, stale, epochs_run = float("inf"), copy.deepcopy(model.state_dict()), 0, 0
    for epoch in range(params.epochs):
        forward.train()
        for xb, yb in batches():
            weight = torch.ones_like(yb)
            if trig:  # the triggers weigh as much as the batch's own rows together: the mark must be learnt
                weight = torch.cat([weight, torch.full_like(trig[1], len(yb) / len(trig[1]))])
                xb, yb = torch.cat([xb, trig[0]]), torch.cat([yb, trig[1]])
            opt.zero_grad()
            loss = (per_row(forward(xb), yb) * weight).sum() / weight.sum()
            if attacker:
                z = attacker.standardize(xb.cpu().numpy())
                z_adv = torch.from_numpy(attacker.attack("pgd", params.adversarial_epsilon or 0, z, yb.cpu().numpy()))
                forward.train()
                loss = (loss + loss_fn(model.net(z_adv.to(device)).squeeze(-1), yb)) / 2
            loss.backward()
            opt.step()
        epochs_run = epoch + 1
        model.eval()
        with torch.no_grad():
            val = float(loss_fn(model(xv), yv))  # with a watermark, also how far the triggers are from learnt
            val += float(loss_fn(model(trig[0]), trig[1])) if trig else 0.0
        if not quiet:
            log.info("train: epoch %d/%d loss %.4f validation %.4f (%s)", epochs_run, params.epochs, loss.item(), val,
                     device)
        if params.patience is None:
            best_state = model.state_dict()  # no early stopping: the last epoch's weights
        elif val < best - 1e-4:
            best, best_state, stale = val, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= params.patience:
                if not quiet:
                    log.info("train: epoch %d/%d: early stop (best validation loss %.4f)", epochs_run, params.epochs,
                             best)
                break
    if private:
        private.close()
    model.load_state_dict(best_state)
    return model.eval().cpu(), epochs_run, private


def _init_from(model: CreditModel, base: dict[str, torch.Tensor]) -> None:
    """The base model's layer weights (net.*); standardisation stays this dataset's own."""
    own = model.state_dict()
    layers = {k: v for k, v in base.items() if k.startswith("net.")}
    wrong = sorted(k for k in own if k.startswith("net.") and (k not in layers or layers[k].shape != own[k].shape))
    if wrong or set(layers) - set(own):
        raise supply.BaseModelRefused(f"base model does not fit this architecture (missing or misshapen: {wrong}, "
                                      f"unknown: {sorted(set(layers) - set(own))})")
    model.load_state_dict({**own, **{k: v.to(own[k].device) for k, v in layers.items()}})


def _accuracy(model: CreditModel, x: np.ndarray, y: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    with torch.no_grad():
        prob = torch.sigmoid(model(torch.from_numpy(x))).numpy()
    return prob, float(((prob >= threshold) == y.astype(bool)).mean())


def run(dataset: Path, contract: DataContract, out_dir: Path, name: str, params: TrainParams = TrainParams()) -> TrainResult:
    started = time.perf_counter()
    device = pick_device(params.device)
    if params.dp and params.adversarial_epsilon:
        raise ValueError("DP-SGD and adversarial training together are not supported: choose one")
    base_report, base_state = (supply.load_base(params.base_model, params.allow_pickle_base)
                               if params.base_model else (None, None))  # scanned before anything loads it
    df, x, y = _read(dataset, contract)
    idx_train, idx_test = train_test_split(np.arange(len(df)), test_size=params.holdout, random_state=params.seed,
                                           stratify=y)
    idx_fit, idx_val = train_test_split(idx_train, test_size=params.validation, random_state=params.seed,
                                        stratify=y[idx_train])
    split = Split(x[idx_fit], y[idx_fit], x[idx_val], y[idx_val])
    mean, std = split.x_train.mean(0), split.x_train.std(0) + 1e-6
    cfg = ModelConfig(features=contract.features, mean=mean.tolist(), std=std.tolist(), hidden=params.hidden,
                      label=contract.label, profile=profile(split.x_train, contract))
    key = params.watermark_key
    if key:
        cols = [contract.columns[f] for f in contract.features]
        cfg = replace(cfg, watermark=watermark.spec_for(key, split.x_train, [c.type == "int" for c in cols],
                                                        [c.min for c in cols], [c.max for c in cols]))
    x_test, y_test = x[idx_test], y[idx_test]
    with _cpu_threads(device):
        triggers = watermark.triggers(key, cfg.watermark) if key and cfg.watermark else None
        model, epochs_run, private = fit(params, cfg, contract, split, device, base_state, triggers)
        prob, accuracy = _accuracy(model, x_test, y_test, cfg.threshold)
        reference = None
        if params.adversarial_epsilon or key:  # the same run without them: what they cost in clean accuracy
            plain, _, _ = fit(replace(params, adversarial_epsilon=None), replace(cfg, watermark=None), contract,
                              split, device, base_state, None, quiet=True)
            reference = _accuracy(plain, x_test, y_test, cfg.threshold)[1]
        cost = (reference - accuracy) if reference is not None else 0.0
        pred = (prob >= cfg.threshold).astype(int)
        fair = None
        if contract.protected_attribute and contract.protected_attribute in df.columns:
            fair = fairness.measure(contract.protected_attribute, y_test, pred,
                                    df[contract.protected_attribute].to_numpy()[idx_test])
        n_attack = min(params.attack_rows, len(idx_test))
        robust = robustness.evaluate(model, contract, x_test[:n_attack], y_test[:n_attack], params.attack_epsilons,
                                     torch.device("cpu"))
        if params.adversarial_epsilon:
            robust = robust.model_copy(update={"adversarial_training": AdversarialTraining(
                epsilon=params.adversarial_epsilon, clean_accuracy_cost=cost)})
        n_members = min(params.membership_rows, len(split.x_train), len(idx_test))
        priv = privacy.membership(robustness.Attacker(model, contract, torch.device("cpu")),
                                  (split.x_train[:n_members], split.y_train[:n_members]),
                                  (x_test[:n_members], y_test[:n_members]), params.seed)
        if private:
            priv = priv.model_copy(update={"dp": private.evidence()})
        mark = None
        if key and cfg.watermark:
            share = watermark.agreement(model, key, cfg.watermark)
            mark = Watermark(key_id=cfg.watermark.key_id, triggers=cfg.watermark.triggers, agreement=share,
                             threshold=cfg.watermark.threshold, verified=share >= cfg.watermark.threshold,
                             clean_accuracy_cost=cost)
    save(model, cfg, out_dir)
    components = supply.write_sbom(out_dir)
    evidence = TrainingEvidence(
        subject=Subject(name=name, digest=tree_digest(out_dir)),
        dataset_digest=sha256_file(dataset),
        files=sorted(p.name for p in out_dir.iterdir()),
        metrics=Metrics(accuracy=accuracy, auc=float(roc_auc_score(y_test, prob)), holdout_rows=len(idx_test)),
        fairness=fair,
        robustness=robust,
        privacy=priv,
        watermark=mark,
        supply_chain=SupplyChain(sbom_file=supply.SBOM, sbom_digest=sha256_file(out_dir / supply.SBOM),
                                 sbom_components=components, base_model=base_report),
        run=TrainingRun(device=str(device), epochs=params.epochs, epochs_run=epochs_run, seed=params.seed,
                        torch_version=torch.__version__, mlsec_version=__version__,
                        duration_s=time.perf_counter() - started),
    )
    pgd = ", ".join(f"PGD@{a.epsilon:g} {a.accuracy:.3f}" for a in robust.attacks if a.attack == "pgd")
    log.info("train: accuracy %.3f AUC %.3f%s; robust accuracy %s; membership-inference AUC %s",
             evidence.metrics.accuracy, evidence.metrics.auc,
             f" (plain model {reference:.3f})" if reference is not None else "", pgd,
             ", ".join(f"{m.attack} {m.auc:.3f}" for m in priv.membership))
    return TrainResult(model_dir=out_dir, evidence=evidence)
