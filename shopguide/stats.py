"""Percentiles, from raw values or from a Prometheus histogram's cumulative buckets."""
from __future__ import annotations

import math
from typing import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The value at quantile `q` (0..1) of `values` (nearest rank); nan when empty."""
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else math.nan


def histogram_quantile(buckets: Sequence[tuple[str | float, float]], q: float) -> float:
    """The upper bound of the bucket holding quantile `q`, from (le, cumulative count) pairs;
    nan when the histogram is empty, inf when the quantile lies past the last finite bound."""
    ordered = sorted((float(le), count) for le, count in buckets)
    if not ordered or ordered[-1][1] == 0:
        return math.nan
    wanted = q * ordered[-1][1]
    return next(le for le, count in ordered if count >= wanted)
