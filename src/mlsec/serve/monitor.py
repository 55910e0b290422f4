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
from statistics import median

import numpy as np

from mlsec.train.model import FeatureProfile


class BinCounts:
    """How many recent rows fell into each training bin, per feature.

    Counted in plain lists: a row costs one list update per feature on the request path; numpy is used
    only when the PSI is read (a metrics scrape)."""

    def __init__(self, profile: dict[str, FeatureProfile], features: Sequence[str]) -> None:
        self.edges = [profile[f].edges for f in features]
        # Features have different numbers of distinct bins; padding bins stay empty on both sides,
        # so they add nothing to the PSI.
        width = max(len(profile[f].expected) for f in features)
        expected = np.zeros((len(features), width))
        for i, f in enumerate(features):
            expected[i, : len(profile[f].expected)] = profile[f].expected
        self.expected = np.clip(expected, 1e-4, None)
        self.counts = [[0] * len(profile[f].expected) for f in features]
        self.n = 0

    def cells(self, row: Sequence[float]) -> tuple[int, ...]:
        return tuple(bisect_right(e, v) for e, v in zip(self.edges, row))

    def add(self, cells: tuple[int, ...], sign: int = 1) -> None:
        for counts, cell in zip(self.counts, cells):
            counts[cell] += sign
        self.n += sign

    def tails(self) -> list[int]:
        """Rows in the two open-ended bins (below the first edge, above the last), per feature."""
        return [counts[0] + counts[-1] for counts in self.counts]

    def psi(self) -> np.ndarray:
        if self.n == 0:
            return np.zeros(len(self.edges))
        counts = np.zeros(self.expected.shape)
        for i, row in enumerate(self.counts):
            counts[i, : len(row)] = row
        actual = np.clip(counts / self.n, 1e-4, None)
        values = np.sum((actual - self.expected) * np.log(actual / self.expected), axis=1)
        return np.where(np.isfinite(values), values, 0.0)


@dataclass
class ExtractionMonitor:
    """Flags a client that, over a sliding time window, sends too many queries or sweeps the input space.

    A sweep covers the contract's ranges, so in most features most of its rows land in the open-ended
    tail bins of the training distribution (below its 10th or above its 90th percentile), where real
    applicants put about a fifth. The statistic is the median over features of that excess tail share:
    a client whose applicants are unusual in one or two features (one segment, one applicant scored
    repeatedly) is not flagged. It is judged only on at least min_queries rows, and a flag decays:
    it lapses hold_s after the client's window last looked like a sweep.
    """

    profile: dict[str, FeatureProfile]
    features: Sequence[str]
    window_s: float = 600.0
    max_queries: int = 6000
    min_queries: int = 100  # coverage is judged only once a client has sent this many rows in the window
    max_tail_excess: float = 0.3  # median over features of (tail share - the training tail share)
    hold_s: float = 600.0
    max_clients: int = 10000  # state kept per client; the stalest are forgotten beyond this
    _seen: dict[str, deque[tuple[float, tuple[int, ...]]]] = field(default_factory=dict)
    _counts: dict[str, BinCounts] = field(default_factory=dict)
    _flags: dict[str, tuple[float, str]] = field(default_factory=dict)  # client -> (expires, reason)

    def __post_init__(self) -> None:
        self._tails = [self.profile[f].expected[0] + self.profile[f].expected[-1] for f in self.features]

    @property
    def flagged(self) -> dict[str, str]:
        """Clients flagged now (expired flags dropped)."""
        now = time.monotonic()
        for client in [c for c, (until, _) in self._flags.items() if until <= now]:
            del self._flags[client]
        return {c: why for c, (_, why) in self._flags.items()}

    def is_flagged(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        flag = self._flags.get(client)
        return flag is not None and flag[0] > now

    def tail_excess(self, counts: BinCounts) -> float:
        """Median over the handful of features, in plain Python: numpy's fixed cost per call was most of the
        monitor's time on every request."""
        if counts.n == 0:
            return 0.0
        return float(median([t / counts.n - expected for t, expected in zip(counts.tails(), self._tails)]))

    def observe(self, client: str, rows: Sequence[Sequence[float]], now: float | None = None) -> str | None:
        """Records the rows; returns the reason if this client is flagged now."""
        now = time.monotonic() if now is None else now
        if client not in self._seen and len(self._seen) >= self.max_clients:
            self._forget(now)
        seen = self._seen.setdefault(client, deque())
        counts = self._counts.setdefault(client, BinCounts(self.profile, self.features))
        for row in rows:
            cells = counts.cells(row)
            seen.append((now, cells))
            counts.add(cells)
        while seen and seen[0][0] <= now - self.window_s:
            counts.add(seen.popleft()[1], -1)
        n = len(seen)
        reason = None
        if n > self.max_queries:
            reason = f"{n} queries in {self.window_s:.0f}s (limit {self.max_queries})"
        elif n >= self.min_queries:
            excess = self.tail_excess(counts)
            if excess > self.max_tail_excess:
                reason = (f"input-space sweep: its last {n} inputs fall in the training tails far more than real "
                          f"applicants (median excess {excess:.2f} > {self.max_tail_excess})")
        if reason:
            self._flags[client] = (now + self.hold_s, reason)
        flag = self._flags.get(client)
        if flag and flag[0] <= now:
            del self._flags[client]
            flag = None
        return flag[1] if flag else None

    def _forget(self, now: float) -> None:
        stale = sorted(self._seen, key=lambda c: self._seen[c][-1][0] if self._seen[c] else 0.0)
        for client in stale[: max(1, len(stale) // 10)]:
            if not self.is_flagged(client, now):
                self._seen.pop(client)
                self._counts.pop(client, None)


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
