"""Privacy: how well membership inference tells training rows from unseen ones (ART's black-box attack and
the loss-threshold attack), and optional DP-SGD training with Opacus."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from mlsec.train.evidence import DifferentialPrivacy, MembershipAttack, Privacy
from mlsec.train.robustness import Attacker


def _scored(attack: str, is_member: np.ndarray, score: np.ndarray) -> MembershipAttack:
    fpr, tpr, _ = roc_curve(is_member, score)
    return MembershipAttack(attack=attack, auc=float(roc_auc_score(is_member, score)),  # type: ignore[arg-type]
                            advantage=float(max(0.0, (tpr - fpr).max())))


def membership(attacker: Attacker, members: tuple[np.ndarray, np.ndarray],
               non_members: tuple[np.ndarray, np.ndarray], seed: int) -> Privacy:
    """members / non_members: (raw features, labels), equally many. The black-box attack learns from one
    half of each and is scored on the other half; the loss-threshold attack (a lower loss says member)
    needs no training and is scored on all rows."""
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox

    (xm, ym), (xn, yn) = members, non_members
    zm, zn = attacker.standardize(xm), attacker.standardize(xn)
    ym, yn = ym.astype(int), yn.astype(int)
    half = min(len(zm), len(zn)) // 2
    rng = np.random.default_rng(seed)
    pm, pn = rng.permutation(len(zm)), rng.permutation(len(zn))
    fit_m, test_m, fit_n, test_n = pm[:half], pm[half:2 * half], pn[:half], pn[half:2 * half]
    black_box = MembershipInferenceBlackBox(attacker.classifier, input_type="prediction", attack_model_type="rf")
    # sklearn's random forest inside ART draws from numpy's global generator
    np.random.seed(seed)
    black_box.fit(zm[fit_m], ym[fit_m], zn[fit_n], yn[fit_n])
    z_test, y_test = np.concatenate([zm[test_m], zn[test_n]]), np.concatenate([ym[test_m], yn[test_n]])
    is_member = np.r_[np.ones(len(test_m)), np.zeros(len(test_n))]
    bb_score = np.asarray(black_box.infer(z_test, y_test, probabilities=True)).reshape(len(z_test), -1)[:, -1]

    z_all, y_all = np.concatenate([zm, zn]), np.concatenate([ym, yn])
    with torch.no_grad():
        logits = torch.as_tensor(attacker.classifier.predict(z_all, batch_size=len(z_all)))
    loss = nn.functional.cross_entropy(logits, torch.as_tensor(y_all), reduction="none").numpy()
    return Privacy(members=len(zm), non_members=len(zn), membership=[
        _scored("black_box", is_member, bb_score),
        _scored("loss_threshold", np.r_[np.ones(len(zm)), np.zeros(len(zn))], -loss),
    ])


@dataclass(frozen=True)
class DPConfig:
    target_epsilon: float
    delta: float
    max_grad_norm: float = 1.0


class PrivateTraining:
    """Opacus around a model, optimizer and loader; the loader it returns samples batches as DP-SGD needs
    (Poisson sampling), and the accountant reports the epsilon spent so far."""

    def __init__(self, cfg: DPConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                 data: torch.utils.data.TensorDataset, batch_size: int, epochs: int, seed: int) -> None:
        import warnings

        from opacus import PrivacyEngine

        self.cfg = cfg
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(seed))
        with warnings.catch_warnings():  # "secure RNG off": seeded runs stay reproducible; epsilon is as reported
            warnings.simplefilter("ignore")
            self.engine = PrivacyEngine(accountant="rdp")
            self.model, self.optimizer, self.loader = self.engine.make_private_with_epsilon(
                module=model, optimizer=optimizer, data_loader=loader, target_epsilon=cfg.target_epsilon,
                target_delta=cfg.delta, epochs=epochs, max_grad_norm=cfg.max_grad_norm)

    def close(self) -> None:
        """Takes Opacus' per-sample-gradient hooks off the model, which evaluation then uses plainly."""
        self.model.remove_hooks()

    def evidence(self) -> DifferentialPrivacy:
        return DifferentialPrivacy(target_epsilon=self.cfg.target_epsilon, delta=self.cfg.delta,
                                   epsilon=float(self.engine.get_epsilon(self.cfg.delta)),
                                   noise_multiplier=float(self.optimizer.noise_multiplier),
                                   max_grad_norm=self.cfg.max_grad_norm)
