"""Extraction detection: false positives on legitimate traffic, and how fast a sweep is caught.

Legitimate traffic is the holdout (the last 20% of data/credit_sample.csv) replayed as 50 clients
with realistic batch sizes over a simulated hour: most requests score one applicant, some a handful,
a few a full batch; some clients re-score their own few applicants, some serve one segment (the top
income decile). A sweep draws uniformly over the contract's ranges. The profile is computed from the
first 80%, as training would. Targets: at most 1 of the 50 clients flagged; a sweep flagged within
2,000 queries. Prints both; exits non-zero if a target is missed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlsec.config import contract_path, sample_dataset
from mlsec.ingest.contract import load_contract
from mlsec.serve.monitor import ExtractionMonitor
from mlsec.train.model import FeatureProfile
from mlsec.train.stage import profile

SWEEP_LOW = [18, 0, 0, 0, 0, 0]
SWEEP_HIGH = [120, 5e6, 5e6, 100, 200, 1]


@dataclass(frozen=True)
class Result:
    clients: int
    flagged: int
    legit_rows: int
    sweep_queries: int | None  # rows a sweep sent until it was flagged (None: never within the budget)


def setup() -> tuple[dict[str, FeatureProfile], list[str], np.ndarray]:
    contract = load_contract(contract_path())
    x = pd.read_csv(sample_dataset())[contract.features].to_numpy(np.float32)
    cut = int(len(x) * 0.8)
    return profile(x[:cut], contract), list(contract.features), x[cut:]


def _batch_size(rng: np.random.Generator) -> int:
    u = rng.random()
    return 1 if u < 0.6 else int(rng.integers(2, 21)) if u < 0.9 else int(rng.integers(50, 257))


def legit(monitor: ExtractionMonitor, holdout: np.ndarray, clients: int, requests: tuple[int, int],
          seed: int = 0, duration_s: float = 3600.0) -> tuple[int, int]:
    """Replays the holdout as `clients` clients; returns (clients ever flagged, rows sent)."""
    rng = np.random.default_rng(seed)
    share = max(1, len(holdout) // clients)
    top_income = holdout[holdout[:, 1] >= np.quantile(holdout[:, 1], 0.9)]
    events = []
    for c in range(clients):
        kind = c % 10
        pool = (holdout[c * share:(c + 1) * share] if kind == 0 else top_income if kind == 1 else holdout)
        for t in np.sort(rng.uniform(0, duration_s, int(rng.integers(*requests)))):
            events.append((float(t), f"client-{c}", pool[rng.integers(0, len(pool), _batch_size(rng))]))
    events.sort(key=lambda e: e[0])
    ever: set[str] = set()
    for t, client, rows in events:
        if monitor.observe(client, rows.tolist(), now=t):
            ever.add(client)
    return len(ever), sum(len(e[2]) for e in events)


def sweep(monitor: ExtractionMonitor, budget: int, batch: int = 10, seed: int = 1,
          low: Sequence[float] = SWEEP_LOW, high: Sequence[float] = SWEEP_HIGH) -> int | None:
    """Rows a uniform sweep sends (10 a second) until flagged, or None."""
    rng = np.random.default_rng(seed)
    sent = 0
    while sent < budget:
        rows = rng.uniform(low, high, size=(batch, len(low)))
        sent += batch
        if monitor.observe("sweeper", rows.tolist(), now=sent / 10.0):
            return sent
    return None


def run(clients: int = 50, requests: tuple[int, int] = (20, 200), budget: int = 2000) -> Result:
    prof, features, holdout = setup()
    flagged, rows = legit(ExtractionMonitor(prof, features), holdout, clients, requests)
    return Result(clients, flagged, rows, sweep(ExtractionMonitor(prof, features), budget))


def main() -> int:
    r = run()
    print(f"extraction: legitimate clients flagged: {r.flagged}/{r.clients} ({r.legit_rows} rows replayed; target <= 1)")
    print(f"extraction: sweep flagged after {r.sweep_queries} queries (target <= 2000)")
    return 0 if r.flagged <= 1 and r.sweep_queries is not None and r.sweep_queries <= 2000 else 1


if __name__ == "__main__":
    sys.exit(main())
