"""The slower training proofs (each trains models of its own): adversarial training buys robustness, an
overfitted model leaks membership and prod refuses it, DP-SGD stays within its epsilon, the watermark
verifies under its key only and the server refuses a model that fails it.

Run with `make test-train-trust` (MLSEC_TRAIN_TRUST=1); skipped by plain `make test` for time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.ingest.contract import DataContract
from mlsec.serve.model import SignedModel
from mlsec.sign import keys
from mlsec.sign import stage as signing
from mlsec.sign.attestation import Materials
from mlsec.train import privacy, stage, watermark
from mlsec.train.evidence import TrainingEvidence
from mlsec.train.model import load

from conftest import Trained

pytestmark = pytest.mark.skipif(os.environ.get("MLSEC_TRAIN_TRUST") != "1",
                                reason="slow training proofs: make test-train-trust")

FAST = dict(epochs=15, attack_epsilons=(0.1, 0.3), attack_rows=400, membership_rows=300)


def _pgd(ev: TrainingEvidence, eps: float) -> float:
    assert ev.robustness is not None
    return next(a.accuracy for a in ev.robustness.attacks if a.attack == "pgd" and a.epsilon == eps)


def test_adversarial_training_raises_robust_accuracy(tmp_path: Path, trained: Trained, contract: DataContract) -> None:
    plain = stage.run(trained.dataset, contract, tmp_path / "plain", "credit", stage.TrainParams(**FAST)).evidence
    robust = stage.run(trained.dataset, contract, tmp_path / "adv", "credit",
                       stage.TrainParams(**FAST, adversarial_epsilon=0.1)).evidence
    assert _pgd(robust, 0.1) > _pgd(plain, 0.1) and _pgd(robust, 0.3) > _pgd(plain, 0.3)
    assert robust.metrics.auc > 0.7  # still a classifier, not a constant that no attack can move
    adv = robust.robustness.adversarial_training  # type: ignore[union-attr]
    assert adv is not None and adv.epsilon == 0.1
    assert adv.clean_accuracy_cost == pytest.approx(plain.metrics.accuracy - robust.metrics.accuracy)


def test_overfitted_model_leaks_membership_and_prod_denies_it(tmp_path: Path, trained: Trained,
                                                             contract: DataContract, engine: InProcessEngine) -> None:
    """A tiny training set (5% of the rows), a wide net and many epochs without early stopping."""
    overfit = stage.run(trained.dataset, contract, tmp_path / "m", "credit", stage.TrainParams(
        holdout=0.95, hidden=256, epochs=300, patience=None, lr=1e-2, batch_size=64, attack_epsilons=(0.1,),
        membership_rows=500)).evidence
    default = trained.training_evidence
    assert overfit.privacy is not None and default.privacy is not None
    worst = max(m.auc for m in overfit.privacy.membership)
    assert worst > max(m.auc for m in default.privacy.membership) + 0.1
    data = evaluate("data", trained.data_evidence, environment="prod", engine=engine)
    d = evaluate("training", overfit, environment="prod", engine=engine, decisions=[data])
    assert not d.allow and any("membership inference" in r and "above prod maximum 0.6" in r for r in d.deny), d.deny


def test_dp_sgd_spends_no_more_than_its_target(tmp_path: Path, trained: Trained, contract: DataContract,
                                               engine: InProcessEngine) -> None:
    target = privacy.DPConfig(target_epsilon=1.0, delta=1e-5)
    ev = stage.run(trained.dataset, contract, tmp_path / "m", "credit",
                   stage.TrainParams(**{**FAST, "epochs": 5}, dp=target)).evidence
    dp = ev.privacy.dp  # type: ignore[union-attr]
    assert dp is not None and 0 < dp.epsilon <= target.target_epsilon and dp.noise_multiplier > 0
    data = evaluate("data", trained.data_evidence, environment="dev", engine=engine)
    bounded = evaluate("training", ev.model_copy(update={"privacy": ev.privacy.model_copy(update={  # type: ignore[union-attr]
        "dp": dp.model_copy(update={"epsilon": 11.0})})}), environment="dev", engine=engine, decisions=[data])
    assert any("DP-SGD spent epsilon 11 above dev maximum 10" in r for r in bounded.deny)


def test_watermark_verifies_under_its_key_only(tmp_path: Path, trained: Trained, contract: DataContract,
                                               key_pair: keys.KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    k1, k2 = b"owner-key-one-0123456789abcdef", b"someone-else-key-0123456789abcd"
    runs = {k: stage.run(trained.dataset, contract, tmp_path / name, "credit",
                         stage.TrainParams(**FAST, watermark_key=k))
            for k, name in ((k1, "ours"), (k2, "theirs"))}
    ours, theirs = runs[k1], runs[k2]
    mark = ours.evidence.watermark
    assert mark is not None and mark.verified and mark.agreement >= 0.9 and mark.key_id == watermark.key_id(k1)
    assert mark.clean_accuracy_cost < 0.05
    model, cfg = load(ours.model_dir)
    assert watermark.verify(model, cfg, k1) >= 0.9
    other, other_cfg = load(theirs.model_dir)
    with pytest.raises(watermark.WatermarkError, match="not the configured key"):
        watermark.verify(other, other_cfg, k1)
    assert cfg.watermark is not None and watermark.agreement(other, k1, cfg.watermark) < 0.9  # k1's triggers
    # The key never lands in the model directory or the evidence.
    for f in ours.model_dir.iterdir():
        assert k1 not in f.read_bytes()
    assert k1.decode() not in ours.evidence.model_dump_json()

    # The server: with k1 configured and required, ours loads, theirs and an unmarked model are refused.
    key_file = tmp_path / "watermark.key"
    key_file.write_bytes(k1)
    monkeypatch.setenv(watermark.KEY_ENV, str(key_file))
    monkeypatch.setenv(watermark.REQUIRED_ENV, "true")
    materials = Materials(dataset_uri="data/credit_sample.csv", dataset_digest=ours.evidence.dataset_digest,
                          decision_digests={}, code_commit="test", image="local")
    for name, run, refused in (("ours", ours, None), ("theirs", theirs, "not the configured key"),
                               ("plain", None, "carries no watermark")):
        model_dir = run.model_dir if run else trained.model_dir
        bundle = signing.sign(model_dir, tmp_path / f"signed-{name}", key_pair, materials, "test")
        served = SignedModel("credit", bundle, key_pair.public_key)
        if refused:
            with pytest.raises(watermark.WatermarkError, match=refused):
                served.load()
        else:
            assert served.load() and served.ready
    monkeypatch.delenv(watermark.KEY_ENV)
    with pytest.raises(watermark.WatermarkError, match="names no key file"):
        SignedModel("credit", signing.sign(ours.model_dir, tmp_path / "s2", key_pair, materials, "test"),
                    key_pair.public_key).load()
