"""Small statistics helpers: percentiles and summaries of samples."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    if not samples:
        return math.nan
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(samples: Sequence[float]) -> dict[str, float | int]:
    """n, min, p50, p90, p99, max and mean of samples (same unit as given)."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "min": min(samples),
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


def scaled(d: dict[str, float | int], factor: float, digits: int = 3) -> dict[str, float | int]:
    """A summary in another unit (e.g. seconds to milliseconds); n untouched."""
    return {k: (v if k == "n" else round(v * factor, digits)) for k, v in d.items()}
