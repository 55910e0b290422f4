"""What the server watches: per-client volume and input-space coverage (extraction), and drift.

Both compare inputs with the training profile signed inside the model (decile bins per feature),
through the population stability index (PSI): real applicants look like the training data; a client
sweeping the input space to copy the model does not.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mlsec.train.model import FeatureProfile


def bins(profile: dict[str, FeatureProfile], features: Sequence[str], row: Sequence[float]) -> tuple[int, ...]:
    return tuple(int(np.searchsorted(profile[f].edges, v, side="right")) for f, v in zip(features, row))


def psi(cells: Iterable[tuple[int, ...]], profile: dict[str, FeatureProfile], features: Sequence[str]) -> dict[str, float]:
    grid = np.array(list(cells))
    if grid.size == 0:
        return {f: 0.0 for f in features}
    out = {}
    for i, f in enumerate(features):
        expected = np.clip(np.array(profile[f].expected), 1e-4, None)
        actual = np.clip(np.bincount(grid[:, i], minlength=len(expected)) / len(grid), 1e-4, None)
        value = float(np.sum((actual - expected) * np.log(actual / expected)))
        out[f] = value if math.isfinite(value) else 0.0
    return out


@dataclass
class ExtractionMonitor:
    """Flags a client that, over a sliding window, sends too many queries or sweeps the input space."""

    profile: dict[str, FeatureProfile]
    features: Sequence[str]
    window_s: float = 60.0
    max_queries: int = 600
    min_queries: int = 50  # coverage is judged only once a client has sent this many rows
    max_divergence: float = 1.0  # mean PSI of the client's inputs vs training
    _seen: dict[str, deque[tuple[float, tuple[int, ...]]]] = field(default_factory=lambda: defaultdict(deque))
    flagged: dict[str, str] = field(default_factory=dict)

    def observe(self, client: str, rows: Sequence[Sequence[float]], now: float | None = None) -> str | None:
        """Records the rows; returns the reason if this client is (now) flagged. Flags stick."""
        now = time.monotonic() if now is None else now
        seen = self._seen[client]
        seen.extend((now, bins(self.profile, self.features, row)) for row in rows)
        while seen and seen[0][0] < now - self.window_s:
            seen.popleft()
        n = len(seen)
        if client not in self.flagged and n > self.max_queries:
            self.flagged[client] = f"{n} queries in {self.window_s:.0f}s (limit {self.max_queries})"
        elif client not in self.flagged and n >= self.min_queries:
            divergence = float(np.mean(list(psi((c for _, c in seen), self.profile, self.features).values())))
            if divergence > self.max_divergence:
                self.flagged[client] = (f"input-space sweep: its last {n} inputs diverge from real applicants "
                                        f"(mean PSI {divergence:.2f} > {self.max_divergence})")
        return self.flagged.get(client)


@dataclass
class DriftMonitor:
    """PSI of the most recent inputs (all clients) against the training distribution, per feature."""

    profile: dict[str, FeatureProfile]
    features: Sequence[str]
    window: int = 500
    _rows: deque[tuple[int, ...]] = field(default_factory=deque)

    def observe(self, rows: Sequence[Sequence[float]]) -> None:
        for row in rows:
            self._rows.append(bins(self.profile, self.features, row))
            if len(self._rows) > self.window:
                self._rows.popleft()

    def psi(self) -> dict[str, float]:
        return psi(self._rows, self.profile, self.features)
