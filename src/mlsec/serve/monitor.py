"""What the server watches: per-client volume and input-space coverage (extraction), and drift.

Both compare inputs with the training profile signed inside the model (decile bins per feature),
through the population stability index (PSI): real applicants look like the training data; a client
sweeping the input space to copy the model does not. Bin counts are kept incrementally, so the cost
per request is independent of the window length.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mlsec.train.model import FeatureProfile


class BinCounts:
    """How many recent rows fell into each training bin, per feature."""

    def __init__(self, profile: dict[str, FeatureProfile], features: Sequence[str]) -> None:
        self.edges = [profile[f].edges for f in features]
        # Features have different numbers of distinct bins; padding bins stay empty on both sides,
        # so they add nothing to the PSI.
        width = max(len(profile[f].expected) for f in features)
        expected = np.zeros((len(features), width))
        for i, f in enumerate(features):
            expected[i, : len(profile[f].expected)] = profile[f].expected
        self.expected = np.clip(expected, 1e-4, None)
        self.counts = np.zeros(self.expected.shape)
        self.n = 0

    def cells(self, row: Sequence[float]) -> tuple[int, ...]:
        return tuple(bisect_right(e, v) for e, v in zip(self.edges, row))

    def add(self, cells: tuple[int, ...], sign: int = 1) -> None:
        self.counts[range(len(cells)), cells] += sign
        self.n += sign

    def psi(self) -> np.ndarray:
        if self.n == 0:
            return np.zeros(len(self.edges))
        actual = np.clip(self.counts / self.n, 1e-4, None)
        values = np.sum((actual - self.expected) * np.log(actual / self.expected), axis=1)
        return np.where(np.isfinite(values), values, 0.0)


@dataclass
class ExtractionMonitor:
    """Flags a client that, over a sliding window, sends too many queries or sweeps the input space."""

    profile: dict[str, FeatureProfile]
    features: Sequence[str]
    window_s: float = 60.0
    max_queries: int = 600
    min_queries: int = 50  # coverage is judged only once a client has sent this many rows
    max_divergence: float = 1.0  # mean PSI of the client's inputs vs training
    _seen: dict[str, deque[tuple[float, tuple[int, ...]]]] = field(default_factory=dict)
    _counts: dict[str, BinCounts] = field(default_factory=dict)
    flagged: dict[str, str] = field(default_factory=dict)

    def observe(self, client: str, rows: Sequence[Sequence[float]], now: float | None = None) -> str | None:
        """Records the rows; returns the reason if this client is (now) flagged. Flags stick."""
        now = time.monotonic() if now is None else now
        seen = self._seen.setdefault(client, deque())
        counts = self._counts.setdefault(client, BinCounts(self.profile, self.features))
        for row in rows:
            cells = counts.cells(row)
            seen.append((now, cells))
            counts.add(cells)
        while seen and seen[0][0] < now - self.window_s:
            counts.add(seen.popleft()[1], -1)
        n = len(seen)
        if client not in self.flagged and n > self.max_queries:
            self.flagged[client] = f"{n} queries in {self.window_s:.0f}s (limit {self.max_queries})"
        elif client not in self.flagged and n >= self.min_queries:
            divergence = float(np.mean(counts.psi()))
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

    def __post_init__(self) -> None:
        self._counts = BinCounts(self.profile, self.features)

    def observe(self, rows: Sequence[Sequence[float]]) -> None:
        for row in rows:
            cells = self._counts.cells(row)
            self._rows.append(cells)
            self._counts.add(cells)
            if len(self._rows) > self.window:
                self._counts.add(self._rows.popleft(), -1)

    def psi(self) -> dict[str, float]:
        return dict(zip(self.features, map(float, self._counts.psi())))
