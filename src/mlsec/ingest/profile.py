"""The reference profile of an accepted dataset: what the next dataset for the same model is compared to.

It holds figures, never rows: label rate overall and per group of the protected attribute, per-feature
percentiles with the reference's own CDF at them (KS, PSI), coarse decile codes and the joint counts of
every feature pair over them (narrow value combinations), the share of each frequent exact value, row
count and duplicate share. The next ingest reads it from a signed record (mlsec.registry.reference) or,
for the bundled sample, from the file the sample ships (data/credit_reference.json).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from mlsec.config import sample_dataset
from mlsec.digest import sha256_json
from mlsec.evidence import Strict
from mlsec.ingest.contract import DataContract
from mlsec.ingest.figures import ReferenceUsed

PERCENTILES = np.linspace(0, 100, 101)
FREQUENT_SHARE = 0.001  # exact values at least this common are listed; anything rarer counts as rare


class Distribution(Strict):
    """A feature's reference distribution: distinct percentile points and the share of rows <= each."""

    points: list[float]
    cdf: list[float]


class GroupProfile(Strict):
    rows: int = Field(ge=0)
    label_rate: float = Field(ge=0, le=1)
    features: dict[str, Distribution]


class ReferenceProfile(Strict):
    kind: Literal["mlsec.reference/v1"] = "mlsec.reference/v1"
    contract: str  # the contract's name: a profile applies only to datasets under the same contract
    label: str
    protected_attribute: str | None
    features: list[str]
    rows: int = Field(ge=1)
    label_rate: float = Field(ge=0, le=1)
    duplicate_share: float = Field(ge=0, le=1)
    distributions: dict[str, Distribution]
    groups: dict[str, GroupProfile]
    values: dict[str, dict[str, float]]  # feature -> exact value (value_key) -> share, if >= FREQUENT_SHARE
    pairs: dict[str, list[tuple[int, int, int]]]  # "f1|f2" -> nonzero (code1, code2, rows) cells

    @property
    def sha256(self) -> str:
        return sha256_json(self.model_dump(mode="json"))


@dataclass(frozen=True)
class Reference:
    profile: ReferenceProfile | None
    used: ReferenceUsed

    @classmethod
    def of(cls, profile: ReferenceProfile, source: Literal["registry", "shipped"], detail: str) -> Reference:
        return cls(profile, ReferenceUsed(source=source, detail=detail, sha256=profile.sha256, rows=profile.rows))

    @classmethod
    def none(cls, why: str) -> Reference:
        return cls(None, ReferenceUsed(source="none", detail=why))


def value_key(x: float) -> str:
    """One spelling per number, so 3 and 3.0 are the same value."""
    return repr(float(x))


def numeric(df: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    return df[features].apply(pd.to_numeric, errors="coerce").astype(float)


def labels(df: pd.DataFrame, label: str) -> np.ndarray:
    """The label as 0/1 (the contract's label is binary; anything else is not a default)."""
    return (pd.to_numeric(df[label], errors="coerce") == 1).to_numpy(dtype=np.int64)


def distribution(x: np.ndarray) -> Distribution:
    x = x[~np.isnan(x)]
    if not len(x):
        return Distribution(points=[], cdf=[])
    points = np.unique(np.percentile(x, PERCENTILES))
    ordered = np.sort(x)
    cdf = np.searchsorted(ordered, points, side="right") / len(x)
    return Distribution(points=[float(p) for p in points], cdf=[float(c) for c in cdf])


def decile_edges(dist: Distribution) -> list[float]:
    """The first reference point at which the CDF reaches each tenth: bins of about a tenth of the rows
    each (fewer for a feature with few distinct values), right-closed."""
    cdf = np.asarray(dist.cdf)
    found = {int(np.searchsorted(cdf, k / 10 - 1e-12)) for k in range(1, 10)}
    return [dist.points[i] for i in sorted(found) if i < len(dist.points) - 1]


def codes(x: np.ndarray, dist: Distribution) -> np.ndarray:
    """Coarse code of each value: 0 below the reference's minimum, 1.. its decile bins, last above its maximum."""
    edges = decile_edges(dist)
    inner = np.searchsorted(np.asarray(edges), x, side="left") + 1
    return np.where(x < dist.points[0], 0, np.where(x > dist.points[-1], len(edges) + 2, inner))


def coded_pairs(x: pd.DataFrame, features: list[str],
                dists: dict[str, Distribution]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """"f1|f2" -> (the coarse codes of both features per row), in the order of `features` (a list keeps its
    order through canonical JSON; a dict's keys are sorted); features the reference never saw are left out."""
    coded = {f: codes(x[f].to_numpy(), dists[f]) for f in features if f in dists and dists[f].points and f in x.columns}
    return {f"{a}|{b}": (coded[a], coded[b]) for a, b in itertools.combinations(coded, 2)}


def _pairs(x: pd.DataFrame, features: list[str],
           dists: dict[str, Distribution]) -> dict[str, list[tuple[int, int, int]]]:
    out = {}
    for pair, (a, b) in coded_pairs(x, features, dists).items():
        cells, counts = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
        out[pair] = [(int(i), int(j), int(n)) for (i, j), n in zip(cells, counts)]
    return out


def frequent_values(x: np.ndarray) -> dict[str, float]:
    x = x[~np.isnan(x)]
    values, counts = np.unique(x, return_counts=True)
    share = counts / max(len(x), 1)
    return {value_key(v): float(s) for v, s in zip(values, share) if s >= FREQUENT_SHARE}


def build(df: pd.DataFrame, contract: DataContract) -> ReferenceProfile:
    """The profile of an accepted (contract-valid) dataset."""
    features = list(contract.features)
    x = numeric(df, features)
    y = labels(df, contract.label)
    dists = {f: distribution(x[f].to_numpy()) for f in features}
    groups = {}
    if contract.protected_attribute:
        attr = df[contract.protected_attribute].astype(str).to_numpy()
        for g in sorted(set(attr)):
            mask = attr == g
            groups[g] = GroupProfile(rows=int(mask.sum()), label_rate=float(y[mask].mean()),
                                     features={f: distribution(x[f].to_numpy()[mask]) for f in features})
    return ReferenceProfile(
        contract=contract.name, label=contract.label, protected_attribute=contract.protected_attribute,
        features=features, rows=len(df), label_rate=float(y.mean()) if len(y) else 0.0,
        duplicate_share=float(df[[*features, contract.label]].duplicated().mean()) if len(df) else 0.0,
        distributions=dists, groups=groups,
        values={f: frequent_values(x[f].to_numpy()) for f in features},
        pairs=_pairs(x, features, dists),
    )


def load(path: Path) -> ReferenceProfile:
    try:
        return ReferenceProfile.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read reference profile {path}: {e}") from e


def shipped_path() -> Path:
    """The reference the bundled sample ships (data/credit_reference.json), part of the image like the contract."""
    return Path(os.environ.get("MLSEC_REFERENCE") or sample_dataset().with_name("credit_reference.json"))


def shipped() -> Reference:
    path = shipped_path()
    if not path.exists():
        return Reference.none(f"no reference profile: no accepted dataset in the registry and no {path.name}")
    try:
        return Reference.of(load(path), "shipped", path.name)
    except ValueError as e:
        return Reference.none(f"the shipped reference {path.name} is unreadable: {str(e).splitlines()[0][:200]}")


def write_shipped(contract: DataContract) -> Path:
    """Rebuilds the sample's reference from the bundled sample (after `mlsec sample`)."""
    path = shipped_path()
    path.write_text(build(pd.read_csv(sample_dataset()), contract).model_dump_json() + "\n")
    return path


if __name__ == "__main__":  # python -m mlsec.ingest.profile
    from mlsec.config import contract_path
    from mlsec.ingest.contract import load_contract

    print(f"wrote {write_shipped(load_contract(contract_path()))}")
