"""Per-method summaries of per-pair scores: mean, std, n and percentile-bootstrap confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd


def bootstrap_ci(
    values: Iterable[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (Efron & Tibshirani 1993, ch. 13): resample pairs with replacement.

    NaNs are dropped; one value gives (v, v); none gives (nan, nan).
    """
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_boot, arr.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize(
    per_pair: pd.DataFrame, metrics: Iterable[str], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """``{method: {metric: {mean, std, ci_low, ci_high, n}}}``; NaN scores are left out (n counts the rest).

    Values that cannot be computed (no finite scores) are None, so the JSON stays valid.
    """

    def clean(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    out: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for method, group in per_pair.groupby("method", sort=True):
        out[str(method)] = {}
        for metric in metrics:
            col = group[metric].astype(float)
            finite = col.dropna()
            low, high = bootstrap_ci(finite.tolist(), n_boot=n_boot, level=level, seed=seed)
            out[str(method)][metric] = {
                "mean": clean(float(finite.mean())) if len(finite) else None,
                "std": clean(float(finite.std(ddof=1))) if len(finite) > 1 else None,
                "ci_low": clean(low),
                "ci_high": clean(high),
                "n": len(finite),
            }
    return out
