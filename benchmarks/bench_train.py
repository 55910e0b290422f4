"""Training throughput: plain, DP-SGD and PGD adversarial training, and what the robustness and
membership-inference evaluations add, each as a ratio to plain training of the same data in this run.

Same rows, same epochs (no early stopping), one CPU thread, as the train stage runs.
    .venv/bin/python benchmarks/bench_train.py [--epochs 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

from mlsec.config import contract_path, sample_dataset
from mlsec.ingest.contract import load_contract
from mlsec.train import privacy, robustness, stage
from mlsec.train.model import ModelConfig


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    contract = load_contract(contract_path())
    df = pd.read_csv(sample_dataset())
    x, y = df[contract.features].to_numpy(np.float32), df[contract.label].to_numpy(np.float32)
    tr, te = train_test_split(np.arange(len(df)), test_size=0.25, random_state=0, stratify=y)
    split = stage.Split(x[tr], y[tr], x[te], y[te])
    cfg = ModelConfig(features=contract.features, mean=x[tr].mean(0).tolist(), std=(x[tr].std(0) + 1e-6).tolist(),
                      hidden=32, label=contract.label)
    cpu = torch.device("cpu")
    base = stage.TrainParams(epochs=args.epochs, patience=None)
    modes = {"plain": base, "dp-sgd": stage.TrainParams(epochs=args.epochs, patience=None,
                                                        dp=privacy.DPConfig(target_epsilon=3.0, delta=1e-5)),
             "pgd-adversarial": stage.TrainParams(epochs=args.epochs, patience=None, adversarial_epsilon=0.1)}
    torch.set_num_threads(1)
    from art.estimators.classification import PyTorchClassifier  # noqa: F401  (imported once, before any timing)
    times, model = {}, None
    for name, params in modes.items():
        times[name], (fitted, _, _) = timed(lambda: stage.fit(params, cfg, contract, split, cpu, None, None, quiet=True))
        model = fitted if name == "plain" else model
    assert model is not None
    rows = len(tr) * args.epochs
    t_robust, _ = timed(lambda: robustness.evaluate(model, contract, x[te][:500], y[te][:500], (0.1, 0.3), cpu))
    attacker = robustness.Attacker(model, contract, cpu)
    t_mia, _ = timed(lambda: privacy.membership(attacker, (x[tr][:500], y[tr][:500]), (x[te][:500], y[te][:500]), 0))
    plain = times["plain"]
    print(f"{len(tr)} rows x {args.epochs} epochs, 1 CPU thread")
    for name, t in times.items():
        print(f"{name:16s}: {t:6.2f} s  {rows / t:9.0f} samples/s  ratio to plain {plain / t:5.2f}x throughput")
    print(f"robustness eval : {t_robust:6.2f} s  (FGSM+PGD at 2 radii, 500 rows) = {t_robust / plain:5.2f}x plain training time")
    print(f"membership eval : {t_mia:6.2f} s  (black-box + loss threshold, 500+500 rows) = {t_mia / plain:5.2f}x plain training time")


if __name__ == "__main__":
    main()
