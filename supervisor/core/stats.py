"""Live statistics kept by the daemon (pure, cheap on the hot path).

Latency goes into log-scale buckets (four per power of two, so any
quantile is within ~19% of the truth) over a rolling window of two
generations: quantiles describe roughly the last minute, not the
daemon's whole life, and memory stays constant.
"""

from __future__ import annotations

import math
from collections import deque

_PER_OCTAVE = 4
_MIN = 1e-6  # bucket 0 holds everything up to a microsecond


class LatencyHistogram:
    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._current: dict[int, int] = {}
        self._previous: dict[int, int] = {}
        self._rotated_at = 0.0

    def add(self, seconds: float) -> None:
        if seconds <= _MIN:
            index = 0
        else:
            index = int(math.log2(seconds / _MIN) * _PER_OCTAVE) + 1
        cur = self._current
        cur[index] = cur.get(index, 0) + 1

    def rotate(self, now: float) -> None:
        if now - self._rotated_at >= self.window / 2:
            self._previous, self._current = self._current, {}
            self._rotated_at = now

    def quantile(self, q: float) -> float | None:
        merged: dict[int, int] = dict(self._previous)
        for k, v in self._current.items():
            merged[k] = merged.get(k, 0) + v
        total = sum(merged.values())
        if not total:
            return None
        rank = q * total
        seen = 0
        for index in sorted(merged):
            seen += merged[index]
            if seen >= rank:
                # upper edge of the bucket: never flatters the figure
                return _MIN * 2 ** (index / _PER_OCTAVE)
        return None


class RateMeter:
    """Events per second over the last ``span`` seconds, from a counter."""

    def __init__(self, span: float = 5.0) -> None:
        self.span = span
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, now: float, count: int) -> None:
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.span:
            self._samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
