"""Group fairness on the holdout with fairlearn's metrics."""

from __future__ import annotations

import math
import warnings

import numpy as np
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)

from mlsec.train.evidence import Fairness, GroupRates


def _rate(value: float, measurable: bool) -> float | None:
    """None where the group has no rows to measure on (fairlearn reports 0 there, which would read as a rate)."""
    return float(value) if measurable and not math.isnan(value) else None


def measure(attribute: str, y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> Fairness:
    """Selection rate, TPR and FPR per group, and the largest gaps between groups (demographic parity,
    equalized odds: the larger of the TPR and FPR gaps)."""
    y_true, y_pred, groups = y_true.astype(int), y_pred.astype(int), groups.astype(str)
    with warnings.catch_warnings():  # a group without positives has no TPR: recorded as None below
        warnings.simplefilter("ignore")
        frame = MetricFrame(metrics={"selection_rate": selection_rate, "tpr": true_positive_rate,
                                     "fpr": false_positive_rate},
                            y_true=y_true, y_pred=y_pred, sensitive_features=groups)
        dpd = demographic_parity_difference(y_true, y_pred, sensitive_features=groups)
        eod = equalized_odds_difference(y_true, y_pred, sensitive_features=groups)
    by_group = frame.by_group
    counts = dict(zip(*np.unique(groups, return_counts=True)))
    return Fairness(
        protected_attribute=attribute,
        demographic_parity_difference=float(dpd),
        # NaN when no group has both classes: unmeasurable counts as the worst gap, never as fair
        equalized_odds_difference=1.0 if math.isnan(eod) else float(eod),
        groups={str(g): GroupRates(rows=int(counts[g]), selection_rate=float(row["selection_rate"]),
                                   true_positive_rate=_rate(row["tpr"], bool(y_true[groups == g].any())),
                                   false_positive_rate=_rate(row["fpr"], not y_true[groups == g].all()))
                for g, row in by_group.iterrows()},
    )
