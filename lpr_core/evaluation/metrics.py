"""Rank-k accuracy, mAP and MRR from per-query ranks.

All metrics are fractions in [0, 1], averaged over *all* ground-truth queries: a query without a
prediction counts as a miss (rank-k 0, AP 0, reciprocal rank 0). (The official script divides by
the queries it has a prediction for; here they are in the denominator, as the protocol says.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lpr_core.evaluation.ranking import QueryResults

__all__ = ["DEFAULT_KS", "metric_names", "per_query_metrics", "summarize", "rank_k_curve"]

#: The paper's rank-k cut-offs.
DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(ks)
    if not out or any(not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1 for k in out):
        raise ValueError(f"ks must be positive ints, got {ks!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"ks must be distinct, got {ks!r}")
    return tuple(int(k) for k in out)


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """Names of the per-query metric columns: ``rank<k>`` for each k, then ``mAP`` and ``MRR``."""
    return [f"rank{k}" for k in _check_ks(ks)] + ["mAP", "MRR"]


def per_query_metrics(results: QueryResults, ks: Sequence[int] = DEFAULT_KS) -> np.ndarray:
    """``(n, len(ks) + 2)`` float64: hit at each k (0/1), AP and reciprocal rank, per query.

    The mean of a column over queries is the metric of :func:`metric_names`.
    """
    ks = _check_ks(ks)
    cols = [results.hits(k).astype(np.float64) for k in ks]
    cols += [results.average_precision, results.reciprocal_rank()]
    return np.stack(cols, axis=1) if len(results) else np.empty((0, len(cols)))


def summarize(results: QueryResults, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """The headline metrics.

    Returns:
        ``{"rank1": ..., "rank3": ..., "rank5": ..., "rank10": ..., "mAP": ..., "MRR": ...,
        "num_queries": n, "num_no_prediction": ..., "num_gt_not_ranked": ...}``; metrics are
        ``nan`` when there is no query. ``num_gt_not_ranked`` counts ground-truth images that
        did not appear in their query's ranking (not in the gallery, or past a truncated list).
    """
    names = metric_names(ks)
    values = per_query_metrics(results, ks)
    means = values.mean(axis=0) if len(results) else np.full(len(names), np.nan)
    out: dict[str, float] = {name: float(v) for name, v in zip(names, means)}
    out["num_queries"] = len(results)
    out["num_no_prediction"] = int(np.count_nonzero(~results.has_prediction))
    out["num_gt_not_ranked"] = int((results.num_gt - results.num_gt_ranked).sum())
    return out


def rank_k_curve(results: QueryResults, max_k: int = 20) -> list[tuple[int, float]]:
    """Rank-k accuracy for every ``k`` in ``1..max_k``: ``[(k, accuracy), ...]``."""
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    n = len(results)
    if n == 0:
        return [(k, float("nan")) for k in range(1, max_k + 1)]
    finite = results.rank[np.isfinite(results.rank)].astype(np.int64)
    counts = np.bincount(np.minimum(finite, max_k + 1), minlength=max_k + 2)[1 : max_k + 1]
    return [(k, float(c) / n) for k, c in zip(range(1, max_k + 1), np.cumsum(counts))]
