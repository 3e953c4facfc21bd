"""Interval statistics shared by every task and by the analysis: one place for each recipe."""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for the default ``z``).

    Returns ``(0.0, 1.0)`` when ``n == 0``: no evidence either way.
    """
    if n < 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At p == 0 or 1 the bound is exactly 0/1 analytically, but rounding can land on either side.
    lo = 0.0 if correct == 0 else max(0.0, center - half)
    hi = 1.0 if correct == n else min(1.0, center + half)
    return lo, hi


def bootstrap_ci(values: np.ndarray, seed: int = 0, n_boot: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values``."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def resampled_means(
    vectors: np.ndarray, n_items: int, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Mean of each row of ``vectors`` over ``n_boot`` resamples of its items (with replacement):
    a paired bootstrap of means, (rows, n_boot).

    Resampling n items with replacement is a multinomial count per item; the same counts are
    applied to every row, so rows are resampled in pairs. Draws are made in chunks to bound
    memory for large test sets.
    """
    out = np.empty((len(vectors), n_boot))
    chunk = max(1, 2_000_000 // max(n_items, 1))
    uniform = np.full(n_items, 1.0 / n_items)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        counts = rng.multinomial(n_items, uniform, size=stop - start)
        out[:, start:stop] = vectors @ counts.T / n_items
    return out
