"""Attacks on the model itself (T17–T20), played against the model the real pipeline trained and the
outputs the server gives (a label and a probability rounded to 0.01), or against the real ingest stage
and data gate. An attack that still succeeds is an open threat: its test is marked xfail(strict=True), so
the day a control stops it the suite says so and the threat model must be updated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mlsec.config import contract_path, sample_dataset
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.ingest import sample, stage
from mlsec.train.model import load

from conftest import Trained


def _served(trained: Trained):  # type: ignore[no-untyped-def]
    """What a client sees: label and probability rounded as the server rounds it."""
    net, cfg = load(trained.model_dir)

    def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            p = torch.sigmoid(net(torch.tensor(x, dtype=torch.float32))).numpy().ravel()
        return (p >= cfg.threshold).astype(int), np.round(p, 2)
    return predict, cfg


def _features(df: pd.DataFrame, features: list[str]) -> np.ndarray:
    return df[features].astype(float).to_numpy()


@pytest.mark.xfail(strict=True, reason="T17 open: a 3% change to one feature flips decisions near the boundary")
def test_T17_a_small_change_to_one_feature_does_not_flip_decisions(trained: Trained) -> None:
    predict, cfg = _served(trained)
    x = _features(pd.read_csv(trained.dataset).head(1000), cfg.features)
    labels, _ = predict(x)
    flipped = np.zeros(len(x), dtype=bool)
    for j in range(x.shape[1]):
        for factor in (0.97, 1.03):
            moved = x.copy()
            moved[:, j] *= factor
            flipped |= predict(moved)[0] != labels
    assert flipped.mean() < 0.01, f"{flipped.mean():.1%} of applicants flip their decision with a 3% change"


def test_T18_served_confidence_does_not_reveal_members(trained: Trained, tmp_path: Path) -> None:
    """Members (rows the model learned from) against fresh applicants from the same population: the
    served confidence in the true label must not tell them apart (attack AUC below 0.6)."""
    predict, cfg = _served(trained)
    members = pd.read_csv(trained.dataset).head(1500)
    fresh = pd.read_csv(sample.write(tmp_path / "fresh.csv", rows=1500, seed=991))
    label = stage.load_contract(contract_path()).label

    def confidence(df: pd.DataFrame) -> np.ndarray:
        _, p = predict(_features(df, cfg.features))
        return np.where(df[label].to_numpy() == 1, p, 1 - p)

    scores = np.concatenate([confidence(members), confidence(fresh)])
    truth = np.concatenate([np.ones(len(members)), np.zeros(len(fresh))])
    auc = roc_auc_score(truth, scores)
    assert auc < 0.6, f"membership inference AUC {auc:.3f}"


@pytest.mark.xfail(strict=True, reason="T19 open: the rounded probability still pins age down (~70% within 2 years)")
def test_T19_withheld_age_is_not_recovered_from_served_outputs(trained: Trained) -> None:
    """The attacker knows every feature of an applicant but age, and the served label and probability;
    trying every age and keeping the ones that reproduce the output must not beat guessing the most
    common age (within 2 years) by more than 10 points. Today it does, by far: rounding to 0.01 is not
    enough when a feature moves the probability smoothly."""
    predict, cfg = _served(trained)
    df = pd.read_csv(trained.dataset).head(300)
    x = _features(df, cfg.features)
    age = cfg.features.index("age")
    observed = predict(x)[1]
    candidates = np.arange(18, 121)
    hits = 0
    for i in range(len(x)):
        tries = np.repeat(x[i:i + 1], len(candidates), axis=0)
        tries[:, age] = candidates
        match = candidates[predict(tries)[1] == observed[i]]
        guess = np.median(match) if len(match) else 45
        hits += abs(guess - x[i, age]) <= 2
    ages = x[:, age]
    common = np.bincount(ages.astype(int)).argmax()
    baseline = np.mean(np.abs(ages - common) <= 2)
    assert hits / len(x) <= baseline + 0.10, f"inversion {hits / len(x):.1%} vs guessing {baseline:.1%}"


def test_T20_planted_trigger_is_denied_at_the_data_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        engine: InProcessEngine) -> None:
    """2% of rows carry a rare pattern (debt_to_income 0.777, 7 late payments) and all say "no default":
    the data gate must deny the dataset."""
    df = pd.read_csv(sample_dataset(), dtype=str)
    trig = df.sample(n=len(df) // 50, random_state=3).copy()
    trig["customer_id"] = [str(900000 + i) for i in range(len(trig))]
    trig["debt_to_income"], trig["num_late_payments"], trig["default"] = "0.777", "7", "0"
    pd.concat([df, trig]).to_csv(tmp_path / "trigger.csv", index=False)
    monkeypatch.setenv("MLSEC_DATA_DIRS", str(tmp_path))
    (tmp_path / "out").mkdir()
    result = stage.run(str(tmp_path / "trigger.csv"), contract_path(), tmp_path / "out")
    decision = evaluate("data", result.evidence, environment="dev", engine=engine)
    assert not decision.allow and any("backdoor trigger" in r for r in decision.deny), decision.deny
