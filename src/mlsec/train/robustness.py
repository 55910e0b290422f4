"""Evasion robustness with IBM ART: FGSM and PGD in the standardised feature space, kept inside the
contract's valid ranges, and PGD examples for adversarial training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mlsec.ingest.contract import DataContract
from mlsec.train.evidence import AttackResult, Robustness
from mlsec.train.model import CreditModel

PGD_STEPS = 10


class _TwoClass(nn.Module):
    """The classifier as ART sees it: standardised features in, two-class logits out ([0, l] is the
    same softmax as sigmoid(l))."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logit = self.net(z).squeeze(-1)
        return torch.stack([torch.zeros_like(logit), logit], dim=-1)


def valid_box(model: CreditModel, contract: DataContract) -> tuple[np.ndarray, np.ndarray]:
    """The contract's ranges in the standardised space; an open end stays open (infinite)."""
    mean, std = model.mean.cpu().numpy(), model.std.cpu().numpy()
    lo = np.array([contract.columns[f].min if contract.columns[f].min is not None else -np.inf
                   for f in contract.features])
    hi = np.array([contract.columns[f].max if contract.columns[f].max is not None else np.inf
                   for f in contract.features])
    return ((lo - mean) / std).astype(np.float32), ((hi - mean) / std).astype(np.float32)


class Attacker:
    """ART's view of a live model: its gradients follow the weights as training changes them."""

    def __init__(self, model: CreditModel, contract: DataContract, device: torch.device) -> None:
        from art.estimators.classification import PyTorchClassifier  # ART imports slowly: only when used

        self.model = model
        self.box = valid_box(model, contract)
        self.classifier = PyTorchClassifier(
            _TwoClass(model.net), loss=nn.CrossEntropyLoss(), input_shape=(len(contract.features),), nb_classes=2,
            clip_values=self.box, device_type="gpu" if device.type == "cuda" else "cpu")

    def standardize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.model.mean.cpu().numpy()) / self.model.std.cpu().numpy()).astype(np.float32)

    def attack(self, kind: str, eps: float, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

        if kind == "fgsm":
            fgsm = FastGradientMethod(self.classifier, eps=eps, batch_size=len(z))
            return fgsm.generate(z, y=y.astype(int))
        pgd = ProjectedGradientDescent(self.classifier, eps=eps, eps_step=eps / 4, max_iter=PGD_STEPS,
                                       num_random_init=0, batch_size=len(z), verbose=False)
        return pgd.generate(z, y=y.astype(int))

    def accuracy(self, z: np.ndarray, y: np.ndarray) -> float:
        return float((self.classifier.predict(z, batch_size=len(z)).argmax(1) == y.astype(int)).mean())


def evaluate(model: CreditModel, contract: DataContract, x: np.ndarray, y: np.ndarray,
             epsilons: Sequence[float], device: torch.device) -> Robustness:
    """Robust accuracy on holdout rows x (raw features) for FGSM and PGD at each epsilon."""
    attacker = Attacker(model, contract, device)
    z = attacker.standardize(x)
    results = [AttackResult(attack=kind, epsilon=eps, accuracy=attacker.accuracy(attacker.attack(kind, eps, z, y), y))
               for eps in epsilons for kind in ("fgsm", "pgd")]
    return Robustness(rows=len(z), clean_accuracy=attacker.accuracy(z, y), attacks=results)
