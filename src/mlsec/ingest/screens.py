"""Poisoning screens: figures about a contract-valid dataset, against the reference profile of the last
accepted one. The data gate judges them with per-environment thresholds (policies/data.rego); nothing
here decides.

- label shift, overall and per group of the protected attribute: two-proportion z-test and its p-value;
- per-feature drift, overall and per group: PSI over the reference's decile bins, and the KS statistic
  (the largest gap between the two CDFs at the reference's percentile points) with its p-value;
- label errors by confident learning (Northcutt, Jiang, Chuang: "Confident Learning: Estimating
  Uncertainty in Dataset Labels", JAIR 2021) with cleanlab's find_label_issues over out-of-fold
  probabilities of a small gradient-boosted model: the share of each class's rows it suspects;
- backdoor triggers: an exact feature value, or a cell of two features' coarse bins, that is rare in the
  reference, now holds many rows, and whose rows almost all carry one label;
- exact and near duplicates, and the share of isolation-forest outliers.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from mlsec.ingest.contract import DataContract
from mlsec.ingest.figures import Drift, LabelIssues, LabelShift, PoisoningScreen, Trigger
from mlsec.ingest.profile import (
    Distribution, Reference, ReferenceProfile, ReferenceUsed, build, coded_pairs, decile_edges, labels, numeric, value_key,
)

log = logging.getLogger(__name__)

PSI_FLOOR = 1e-4  # an empty bin counts as this share, so PSI stays finite
FOLDS = 3
# A trigger candidate: at most this share of the reference, this many times more common now, at least
# TRIGGER_MIN_ROWS rows and TRIGGER_MIN_PURITY of them with one label. The gate judges share and purity.
TRIGGER_RARE_SHARE = 0.002
TRIGGER_LIFT = 4.0
TRIGGER_MIN_ROWS = 10
TRIGGER_MIN_PURITY = 0.8
TRIGGERS_REPORTED = 10
NEAR_DUPLICATE = 0.01  # Euclidean distance in units of each feature's interquartile range
SEED = 0  # the screens are deterministic: the same bytes give the same evidence


def _r(x: float) -> float:
    return round(float(x), 6)


def two_proportion(rate: float, n: int, ref_rate: float, ref_n: int) -> tuple[float, float]:
    """(z, two-sided p) of a two-proportion z-test with the pooled rate."""
    pooled = (rate * n + ref_rate * ref_n) / (n + ref_n)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / ref_n)) if n and ref_n else 0.0
    if se == 0:
        return 0.0, 1.0
    z = (rate - ref_rate) / se
    return float(z), float(2 * stats.norm.sf(abs(z)))


def _ecdf(x: np.ndarray, at: list[float]) -> np.ndarray:
    return np.searchsorted(np.sort(x), np.asarray(at), side="right") / len(x)


def drift(x: np.ndarray, ref: Distribution, ref_rows: int) -> tuple[float, float, float]:
    """(PSI, KS statistic, KS p-value) of x against a reference distribution."""
    x = x[~np.isnan(x)]
    if not len(x) or not ref.points:
        return 0.0, 0.0, 1.0
    ks = float(np.max(np.abs(_ecdf(x, ref.points) - np.asarray(ref.cdf))))
    n_eff = max(1, round(len(x) * ref_rows / (len(x) + ref_rows)))
    p = float(stats.kstwo.sf(ks, n_eff))
    edges = decile_edges(ref)
    ref_cdf = np.interp(edges, ref.points, ref.cdf) if edges else np.array([])
    ref_share = np.diff(np.concatenate([[0.0], ref_cdf, [1.0]]))
    new_share = np.diff(np.concatenate([[0.0], _ecdf(x, edges), [1.0]]))
    r, a = np.clip(ref_share, PSI_FLOOR, None), np.clip(new_share, PSI_FLOOR, None)
    return float(np.sum((a - r) * np.log(a / r))), ks, min(1.0, max(0.0, p))


def _label_shift(y: np.ndarray, groups: np.ndarray | None, ref: ReferenceProfile) -> list[LabelShift]:
    parts = [("all", np.ones(len(y), bool), ref.label_rate, ref.rows)]
    if groups is not None and ref.protected_attribute:
        for g, gp in sorted(ref.groups.items()):
            parts.append((f"{ref.protected_attribute}={g}", groups == g, gp.label_rate, gp.rows))
    out = []
    for name, mask, ref_rate, ref_n in parts:
        n = int(mask.sum())
        rate = float(y[mask].mean()) if n else 0.0
        z, p = two_proportion(rate, n, ref_rate, ref_n)
        out.append(LabelShift(group=name, rows=n, rate=_r(rate), reference_rate=_r(ref_rate), z=_r(z), p_value=p))
    return out


def _drift(x: pd.DataFrame, groups: np.ndarray | None, ref: ReferenceProfile) -> list[Drift]:
    out = []
    for f, dist in ref.distributions.items():
        psi, ks, p = drift(x[f].to_numpy(), dist, ref.rows)
        out.append(Drift(feature=f, group="all", psi=_r(psi), ks=_r(ks), ks_p_value=p))
    if groups is not None and ref.protected_attribute:
        for g, gp in sorted(ref.groups.items()):
            mask = groups == g
            for f, dist in gp.features.items():
                psi, ks, p = drift(x[f].to_numpy()[mask], dist, gp.rows)
                out.append(Drift(feature=f, group=f"{ref.protected_attribute}={g}", psi=_r(psi), ks=_r(ks),
                                 ks_p_value=p))
    return out


def label_issues(x: pd.DataFrame, y: np.ndarray) -> list[LabelIssues]:
    """Confident learning over out-of-fold probabilities; no figures when a class is too small to fold."""
    from cleanlab.filter import find_label_issues  # imported here: it takes seconds, and only this needs it

    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < FOLDS:
        return []
    model = HistGradientBoostingClassifier(max_iter=30, max_leaf_nodes=15, learning_rate=0.1, random_state=SEED)
    probs = cross_val_predict(model, x.to_numpy(), y, method="predict_proba",
                              cv=StratifiedKFold(FOLDS, shuffle=True, random_state=SEED))
    flagged = find_label_issues(labels=y, pred_probs=probs, n_jobs=1)
    return [LabelIssues(label=int(c), rows=int(n), suspected=int(flagged[y == c].sum()),
                        share=_r(flagged[y == c].mean())) for c, n in zip(classes, counts)]


def _candidate(pattern: str, mask: np.ndarray, y: np.ndarray, ref_share: float, ref_rows: int) -> Trigger | None:
    n = int(mask.sum())
    share = n / len(y)
    if n < TRIGGER_MIN_ROWS or ref_share > TRIGGER_RARE_SHARE or share < TRIGGER_LIFT * max(ref_share, 1 / ref_rows):
        return None
    rate = float(y[mask].mean())
    label, purity = (1, rate) if rate >= 0.5 else (0, 1 - rate)
    if purity < TRIGGER_MIN_PURITY:
        return None
    return Trigger(pattern=pattern, rows=n, share=_r(share), label=label, purity=_r(purity),
                   reference_share=_r(ref_share))


def triggers(x: pd.DataFrame, y: np.ndarray, ref: ReferenceProfile) -> list[Trigger]:
    found: list[Trigger] = []
    for f in ref.features:
        col = x[f].to_numpy()
        values, counts = np.unique(col[~np.isnan(col)], return_counts=True)
        for v in values[counts >= TRIGGER_MIN_ROWS]:
            key = value_key(v)
            t = _candidate(f"{f}={key}", col == v, y, ref.values.get(f, {}).get(key, 0.0), ref.rows)
            if t is not None:
                found.append(t)
    for pair, (a, b) in coded_pairs(x, ref.features, ref.distributions).items():
        known = {(i, j): n for i, j, n in ref.pairs.get(pair, [])}
        cells, counts = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
        fa, fb = pair.split("|")
        for (i, j), n in zip(cells, counts):
            if n < TRIGGER_MIN_ROWS:
                continue
            t = _candidate(f"{fa} in bin {i} & {fb} in bin {j}", (a == i) & (b == j), y,
                           known.get((int(i), int(j)), 0) / ref.rows, ref.rows)
            if t is not None:
                found.append(t)
    return sorted(found, key=lambda t: (-t.share, t.pattern))[:TRIGGERS_REPORTED]


def near_duplicate_share(x: pd.DataFrame) -> float:
    """Share of rows with another, not identical, row within NEAR_DUPLICATE of it (IQR-scaled)."""
    values = x.to_numpy()
    if len(values) < 2:
        return 0.0
    q1, q3 = np.percentile(values, [25, 75], axis=0)
    scale = np.where(q3 > q1, q3 - q1, 1.0)
    z = (values - np.median(values, axis=0)) / scale
    unique = np.unique(z, axis=0)
    if len(unique) < 2:
        return 0.0
    dist, _ = NearestNeighbors(n_neighbors=2).fit(unique).kneighbors(unique)
    near = {tuple(r) for r in unique[dist[:, 1] <= NEAR_DUPLICATE]}
    return float(np.mean([tuple(r) in near for r in z]))


def outlier_share(x: pd.DataFrame) -> float:
    if len(x) < 2:
        return 0.0
    forest = IsolationForest(n_estimators=50, contamination="auto", random_state=SEED)
    return float(np.mean(forest.fit_predict(x.to_numpy()) == -1))


def screen(df: pd.DataFrame, contract: DataContract,
           reference: Reference) -> tuple[PoisoningScreen, ReferenceProfile | None]:
    """Every screen over a contract-valid frame (features numeric, label 0/1), naming the frame's own profile
    by digest, and that profile (None for no rows)."""
    ref, used = reference.profile, reference.used
    features = list(contract.features)
    x = numeric(df, features)
    y = labels(df, contract.label)
    cols = [*features, contract.label]
    conflicts = int((df.groupby(features, dropna=False)[contract.label].nunique() > 1).sum())
    groups = df[contract.protected_attribute].astype(str).to_numpy() if contract.protected_attribute else None
    comparable = ref is not None and ref.contract == contract.name and set(ref.features) <= set(features)
    if ref is not None and not comparable:
        used = ReferenceUsed(source="none", detail=f"the reference profile is for contract {ref.contract!r} and "
                                                   f"features {ref.features}, not this dataset's")
    log.info("ingest: poisoning screens over %d rows (reference: %s)", len(df), used.source)
    with threadpool_limits(1):  # one thread each: on a shared node, oversubscribed threads cost more than they give
        result = _screen(x, y, df[cols], groups, conflicts, ref if comparable else None, used)
    own = build(df, contract) if len(df) else None
    return result.model_copy(update={"profile_sha256": own.sha256 if own else None}), own


def _screen(x: pd.DataFrame, y: np.ndarray, rows: pd.DataFrame, groups: np.ndarray | None, conflicts: int,
            ref: ReferenceProfile | None, used: ReferenceUsed) -> PoisoningScreen:
    return PoisoningScreen(
        conflicting_duplicates=conflicts, label_rate=_r(y.mean()) if len(y) else 0.0, screened=True,
        reference=used,
        label_shift=_label_shift(y, groups, ref) if ref is not None else [],
        drift=_drift(x, groups, ref) if ref is not None else [],
        label_issues=label_issues(x, y),
        triggers=triggers(x, y, ref) if ref is not None else [],
        duplicate_share=_r(rows.duplicated().mean()) if len(rows) else 0.0,
        # A nullable feature's gaps as its median: neither screen takes NaN.
        near_duplicate_share=_r(near_duplicate_share(x.fillna(x.median()).fillna(0.0))),
        outlier_share=_r(outlier_share(x.fillna(x.median()).fillna(0.0))),
    )

