"""Train: a safetensors model with measured accuracy, AUC, fairness, robustness and privacy leakage, an SBOM
of its environment, clear errors for untrainable data; no pickle, reproducible.

The slower proofs (adversarial training, overfitting and membership inference, DP-SGD, the watermark) are in
tests/test_train_trust.py (make test-train-trust)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mlsec.digest import sha256_file, tree_digest
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.ingest.contract import DataContract
from mlsec.train import fairness, stage, supply
from mlsec.train.model import load

from conftest import Signed, Trained

FILES = ["config.json", "model.safetensors", "sbom.cdx.json"]


def test_model_is_safetensors_and_json_only(trained: Trained) -> None:
    assert sorted(p.name for p in trained.model_dir.iterdir()) == FILES
    assert trained.training_evidence.files == FILES
    cfg = json.loads((trained.model_dir / "config.json").read_text())
    assert cfg["label"] == "default" and "gender" not in cfg["features"]


def test_metrics_are_measured_on_holdout(trained: Trained) -> None:
    ev = trained.training_evidence
    assert ev.metrics.holdout_rows == 1000
    assert 0.7 < ev.metrics.accuracy <= 1 and 0.7 < ev.metrics.auc <= 1
    assert ev.fairness is not None and ev.fairness.protected_attribute == "gender"
    assert set(ev.fairness.groups) == {"F", "M"} and sum(g.rows for g in ev.fairness.groups.values()) == 1000
    assert ev.dataset_digest == trained.data_evidence.subject.digest
    assert ev.subject.digest == tree_digest(trained.model_dir)
    assert ev.run.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert 0 < ev.run.epochs_run <= ev.run.epochs == 8


def test_robustness_and_membership_are_in_the_evidence(trained: Trained) -> None:
    ev = trained.training_evidence
    assert ev.robustness is not None and ev.privacy is not None
    got = {(a.attack, a.epsilon) for a in ev.robustness.attacks}
    assert got == {(k, e) for k in ("fgsm", "pgd") for e in stage.TrainParams().attack_epsilons}
    by = {(a.attack, a.epsilon): a.accuracy for a in ev.robustness.attacks}
    # a larger radius never helps, and PGD (iterated) is at least as strong as FGSM (one step)
    assert by[("pgd", 0.3)] <= by[("pgd", 0.1)] <= ev.robustness.clean_accuracy
    assert by[("pgd", 0.3)] <= by[("fgsm", 0.3)] + 0.01
    assert {m.attack for m in ev.privacy.membership} == {"black_box", "loss_threshold"}
    assert all(m.auc < 0.6 for m in ev.privacy.membership)  # 8 epochs on 2,550 rows: little to leak
    assert ev.privacy.dp is None and ev.watermark is None


def test_sbom_is_in_the_model_and_its_digest_in_the_evidence(trained: Trained) -> None:
    sc = trained.training_evidence.supply_chain
    assert sc is not None and sc.base_model is None
    sbom = json.loads((trained.model_dir / sc.sbom_file).read_text())
    assert sc.sbom_digest == sha256_file(trained.model_dir / sc.sbom_file)
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    names = {c["name"] for c in sbom["components"]}
    assert {"torch", "adversarial-robustness-toolbox", "opacus", "fairlearn"} <= names
    assert len(sbom["components"]) == sc.sbom_components


def test_sbom_digest_is_in_the_signed_provenance(signed: Signed, key_pair) -> None:  # type: ignore[no-untyped-def]
    """The SBOM is a file of the model: the signed provenance names it, with its digest, as a subject."""
    from mlsec.gates.attest import open_envelope
    from mlsec.sign import stage as signing
    from mlsec.sign.keys import load_public, sslib_key

    stmt = open_envelope((signed.bundle / signing.ATTESTATION).read_bytes(),
                         [sslib_key(load_public(key_pair.public_key))])
    subjects = {s["name"]: s["digest"]["sha256"] for s in stmt["subject"]}
    assert subjects[supply.SBOM] == signed.trained.training_evidence.supply_chain.sbom_digest  # type: ignore[union-attr]


def test_evidence_passes_every_environment(trained: Trained, engine: InProcessEngine) -> None:
    """The default model is measured for everything prod requires, and passes it."""
    for env in ("dev", "staging", "prod"):
        data = evaluate("data", trained.data_evidence, environment=env, engine=engine)
        d = evaluate("training", trained.training_evidence, environment=env, engine=engine, decisions=[data])
        assert d.allow, (env, d.deny)


def test_saved_model_reloads_with_same_predictions(trained: Trained) -> None:
    model, cfg = load(trained.model_dir)
    x = torch.tensor([[40, 50000, 10000, 10, 0, 0.3], [60, 20000, 90000, 2, 6, 0.8]], dtype=torch.float32)
    p = torch.sigmoid(model(x))
    assert p[1] > p[0]  # late payments, high debt and a big loan are riskier


def test_training_is_reproducible(tmp_path: Path, trained: Trained, contract: DataContract) -> None:
    """Same seed, same data, same CPU: the same weights and every metric the same, attacks included."""
    again = stage.run(trained.dataset, contract, tmp_path / "m", "credit", stage.TrainParams(epochs=8))
    assert again.evidence.subject.digest == trained.training_evidence.subject.digest
    keep = {"metrics", "fairness", "robustness", "privacy", "supply_chain"}
    assert again.evidence.model_dump(include=keep) == trained.training_evidence.model_dump(include=keep)


def test_fairlearn_metrics() -> None:
    y_true = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    y_pred = np.array([1, 0, 1, 0, 1, 1, 0, 0])
    groups = np.array(["F", "F", "F", "F", "M", "M", "M", "M"])
    f = fairness.measure("gender", y_true, y_pred, groups)
    assert f.groups["F"].selection_rate == 0.5 and f.groups["M"].selection_rate == 0.5
    assert f.groups["F"].true_positive_rate == 0.5 and f.groups["M"].true_positive_rate == 1.0
    assert f.groups["F"].false_positive_rate == 0.5 and f.groups["M"].false_positive_rate == 0.0
    assert f.demographic_parity_difference == 0.0 and f.equalized_odds_difference == 0.5


def test_fairness_group_without_positives_has_no_tpr() -> None:
    f = fairness.measure("g", np.array([1, 0, 0, 0]), np.array([1, 0, 1, 0]), np.array(["a", "a", "b", "b"]))
    assert f.groups["b"].true_positive_rate is None and f.groups["b"].false_positive_rate == 0.5


# -- untrainable data: a clear error naming the problem, before any training -----------------------------

def _write(tmp_path: Path, trained: Trained, change) -> Path:  # type: ignore[no-untyped-def]
    df = pd.read_csv(trained.dataset)
    path = tmp_path / "data.csv"
    change(df).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("change", "message"), [
    (lambda df: df.assign(income=df.income.where(df.index != 3, np.nan)), r"missing, non-numeric or infinite.*'income': 1"),
    (lambda df: df.assign(age=df.age.astype(object).where(df.index != 5, "old")), r"non-numeric.*'age': 1"),
    (lambda df: df.assign(default=0), r"single class \(0\)"),
    (lambda df: df.head(99), r"has 99 rows; training needs at least 100"),
    (lambda df: df.assign(default=(df.index < 5).astype(int)), r"label 1 has 5 rows"),
    (lambda df: df.assign(default=2), r"must hold only 0 and 1"),
])
def test_untrainable_data_is_refused_clearly(tmp_path: Path, trained: Trained, contract: DataContract,
                                             change, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        stage.run(_write(tmp_path, trained, change), contract, tmp_path / "m", "credit")
    assert not (tmp_path / "m").exists()


def test_device_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path is chosen when a GPU is present (forced here: no GPU on this machine), can be forced
    to CPU, and asking for CUDA without one is an error, not a silent CPU run."""
    monkeypatch.delenv(stage.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert stage.pick_device() == torch.device("cuda")
    monkeypatch.setenv(stage.DEVICE_ENV, "cpu")
    assert stage.pick_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(stage.DEVICE_ENV)
    assert stage.pick_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="cuda was asked for but no CUDA device"):
        stage.pick_device("cuda")
    with pytest.raises(ValueError, match="not one of auto, cpu, cuda"):
        stage.pick_device("tpu")


# -- supply chain: a base model is scanned before anything loads it ------------------------------------

class _Payload:
    """What an attacker ships as a 'base model': unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_base_model_is_refused_before_any_load(tmp_path: Path, trained: Trained,
                                                                contract: DataContract) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "base.pt"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    for allow in (False, True):  # scanners refuse it whatever the pickle allowance
        with pytest.raises(supply.BaseModelRefused, match=r"refused before loading: .*posix\.system"):
            stage.run(trained.dataset, contract, tmp_path / "m", "credit",
                      stage.TrainParams(epochs=1, base_model=evil, allow_pickle_base=allow))
    assert not marker.exists() and not (tmp_path / "m").exists()
    # the payload is real: unpickled in another process, it runs
    subprocess.run([sys.executable, "-c", "import pickle,sys; pickle.loads(open(sys.argv[1],'rb').read())", str(evil)],
                   check=False, env={**os.environ, "PYTHONPATH": ""}, capture_output=True)
    assert marker.exists()


def test_clean_pickle_base_model_needs_the_allowance(tmp_path: Path, trained: Trained) -> None:
    model, _ = load(trained.model_dir)
    base = tmp_path / "base.pt"
    torch.save(model.state_dict(), base)
    with pytest.raises(supply.BaseModelRefused, match="is a pickle; pickle base models are not allowed"):
        supply.load_base(base, allow_pickle=False)
    report, state = supply.load_base(base, allow_pickle=True)
    assert report.format == "pickle" and all(not s.issues for s in report.scans) and len(report.scans) == 2
    assert torch.equal(state["net.0.weight"], model.state_dict()["net.0.weight"])


def test_safetensors_base_model_initialises_the_layers(tmp_path: Path, trained: Trained,
                                                      contract: DataContract) -> None:
    base = trained.model_dir / "model.safetensors"
    result = stage.run(trained.dataset, contract, tmp_path / "m", "credit",
                       stage.TrainParams(epochs=1, base_model=base, attack_epsilons=(0.1,)))
    got = result.evidence.supply_chain.base_model  # type: ignore[union-attr]
    assert got is not None and got.format == "safetensors" and got.digest == sha256_file(base)
    wrong = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({"net.0.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(supply.BaseModelRefused, match="does not fit this architecture"):
        stage.run(trained.dataset, contract, tmp_path / "m2", "credit",
                  stage.TrainParams(epochs=1, base_model=wrong))


def test_watermark_key_file_is_checked_and_never_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        trained: Trained) -> None:
    from mlsec.train import watermark

    monkeypatch.delenv(watermark.KEY_ENV, raising=False)
    monkeypatch.delenv(watermark.REQUIRED_ENV, raising=False)
    assert watermark.load_key() is None
    model, cfg = load(trained.model_dir)
    watermark.check_served(model, cfg)  # nothing configured, nothing required: an unmarked model serves
    short = tmp_path / "short.key"
    short.write_bytes(b"sekrit")
    monkeypatch.setenv(watermark.KEY_ENV, str(short))
    with pytest.raises(watermark.WatermarkError, match="fewer than 16 bytes") as e:
        watermark.load_key()
    assert "sekrit" not in str(e.value)
    monkeypatch.setenv(watermark.KEY_ENV, str(tmp_path / "absent.key"))
    with pytest.raises(watermark.WatermarkError, match="absent.key is unreadable"):
        watermark.load_key()
    monkeypatch.delenv(watermark.KEY_ENV)
    monkeypatch.setenv(watermark.REQUIRED_ENV, "true")
    with pytest.raises(watermark.WatermarkError, match="required but MLSEC_WATERMARK_KEY_FILE names no key file"):
        watermark.check_served(model, cfg)
