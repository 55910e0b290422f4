"""Per-client rate limits in the server process: limits' moving-window strategy, without its thread.

limits' MemoryStorage expires entries from a threading.Timer it restarts on nearly every hit: under
load the guard started a thread per request and waited for it to run, which was most of the latency
the guard added (benchmarks/bench_serving.py). Here each key keeps at most `amount` timestamps, so a
hit is O(1), nothing runs in the background, and what a key can hold is bounded by its limit.
"""

from __future__ import annotations

import time
from collections import deque

from limits import RateLimitItem


class MovingWindow:
    """At most item.amount hits per key within any span of the item's window (as limits' MovingWindowRateLimiter)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._hits: dict[str, tuple[float, deque[float]]] = {}  # key -> (window length, recent hit times)

    def hit(self, item: RateLimitItem, *identifiers: str, now: float | None = None) -> bool:
        """Counts a hit and returns True, or returns False (nothing counted) when the limit is reached."""
        now = time.monotonic() if now is None else now
        key = item.key_for(*identifiers)  # names the limit too: a flagged client's stricter limit is its own window
        entry = self._hits.get(key)
        if entry is None:
            if len(self._hits) >= self.max_keys:
                self._prune(now)
            entry = self._hits[key] = (float(item.get_expiry()), deque(maxlen=item.amount))
        window, times = entry
        if len(times) == item.amount and times[0] >= now - window:
            return False
        times.append(now)  # the deque's bound drops the oldest, which is outside the window by the test above
        return True

    def _prune(self, now: float) -> None:
        """Forgets keys idle for longer than their window (they would allow the next hit anyway); if every key
        is still active, the least recently used half."""
        for key in [k for k, (w, t) in self._hits.items() if not t or t[-1] <= now - w]:
            del self._hits[key]
        if len(self._hits) >= self.max_keys:
            for key in sorted(self._hits, key=lambda k: self._hits[k][1][-1])[: len(self._hits) // 2]:
                del self._hits[key]
