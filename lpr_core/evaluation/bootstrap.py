"""Confidence intervals by bootstrap over livestreams.

Queries of one livestream share a gallery (and a salesperson, lighting, products), so they are not
independent: resampling queries would give intervals that are too narrow. The bootstrap resamples
*livestreams* with replacement (all queries of a drawn livestream come along) and recomputes each
metric as a mean over the queries drawn; the interval is the percentile interval of those means.
When fewer than two livestreams are present (e.g. the slice of one livestream) it falls back to
resampling queries. Seeded: the same inputs and seed give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lpr_core.evaluation.metrics import DEFAULT_KS, metric_names, per_query_metrics
from lpr_core.evaluation.ranking import QueryResults

__all__ = ["bootstrap_ci", "metric_cis"]


def bootstrap_ci(
    values: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> np.ndarray:
    """Percentile intervals of column means, resampling whole groups.

    Args:
        values: ``(n, m)`` per-query values (e.g. :func:`per_query_metrics`).
        groups: ``(n,)`` group label of each query (its livestream).
        n_boot: bootstrap replicates.
        level: coverage of the interval, e.g. 0.95.
        seed: seed of the resampling.

    Returns:
        ``(m, 2)`` float64 ``[low, high]`` per column; ``nan`` when ``n == 0``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be (n, m), got shape {values.shape}")
    n, m = values.shape
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group labels for {n} rows of values")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if n == 0:
        return np.full((m, 2), np.nan)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    inverse = inverse.ravel()
    n_groups = int(inverse.max()) + 1
    if n_groups < 2:
        inverse, n_groups = np.arange(n), n
    sums = np.zeros((n_groups, m))
    np.add.at(sums, inverse, values)
    counts = np.bincount(inverse, minlength=n_groups).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    flat = (np.arange(n_boot)[:, None] * n_groups + draws).ravel()
    weights = np.bincount(flat, minlength=n_boot * n_groups).reshape(n_boot, n_groups).astype(np.float64)
    stats = (weights @ sums) / (weights @ counts)[:, None]
    alpha = 1.0 - level
    return np.quantile(stats, [alpha / 2, 1 - alpha / 2], axis=0).T


def metric_cis(
    results: QueryResults,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Bootstrap-over-livestreams intervals of every metric of :func:`metric_names`.

    Returns:
        ``{"rank1": (low, high), ..., "mAP": (...), "MRR": (...)}``.
    """
    ci = bootstrap_ci(per_query_metrics(results, ks), results.live_ids, n_boot=n_boot, level=level, seed=seed)
    return {name: (float(lo), float(hi)) for name, (lo, hi) in zip(metric_names(ks), ci)}
