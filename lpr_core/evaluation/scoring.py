"""The full LPR protocol on embedded test queries: exact ranks against each livestream's gallery,
headline metrics with bootstrap intervals, slices, the rank-k curve, and the top-k lists searched
in the saved faiss indexes (checked against the exact ranks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lpr_core.evaluation.bootstrap import metric_cis
from lpr_core.evaluation.metrics import rank_k_curve, summarize
from lpr_core.evaluation.params import EvaluateParams
from lpr_core.evaluation.ranking import Gallery, QueryResults, score_embeddings, score_predictions
from lpr_core.evaluation.slices import SliceMetrics, slice_metrics
from lpr_core.ids import parse_clip_id
from lpr_core.index.gallery import GalleryIndex, search_predictions

__all__ = ["Evaluation", "evaluate_embeddings"]


@dataclass
class Evaluation:
    """The scores of one set of query embeddings (:func:`evaluate_embeddings`).

    Attributes:
        results: per-query ranks from the exact scoring, in ground-truth order.
        summary: headline metrics (:func:`lpr_core.evaluation.summarize`).
        ci: their bootstrap intervals.
        slices: per-slice metrics.
        curve: ``[(k, accuracy)]`` for k = 1..curve_max_k.
        predictions: ``query_id -> [(image_id, score), ...]`` from the faiss indexes, best first.
        index_results: the per-query ranks of ``predictions`` (within their length).
        index_agreement: share of queries whose rank within the top ``top_k`` is the same both
            ways (1.0 for exact indexes).
    """

    results: QueryResults
    summary: dict[str, float]
    ci: dict[str, tuple[float, float]]
    slices: list[SliceMetrics]
    curve: list[tuple[int, float]]
    predictions: dict[str, list[tuple[str, float]]]
    index_results: QueryResults
    index_agreement: float


def evaluate_embeddings(
    gt: Mapping[str, Sequence[str]],
    query_ids: Sequence[str],
    query_embeddings: np.ndarray,
    indexes: Mapping[str, GalleryIndex],
    galleries: Mapping[str, Gallery],
    params: EvaluateParams = EvaluateParams(),
    labels: Mapping[str, Sequence[Any]] | None = None,
    *,
    progress: bool = False,
) -> Evaluation:
    """Score query embeddings with the LPR protocol, exactly and through the faiss indexes.

    Args:
        gt: ``clip_id -> [image_id, ...]``: every key is a query (a query missing from
            ``query_ids`` has no prediction: a miss).
        query_ids: the ``m`` embedded queries.
        query_embeddings: ``(m, d)`` float32, L2-normalised.
        indexes: ``live_id -> GalleryIndex`` (the top-k lists of ``predictions``).
        galleries: ``live_id -> Gallery`` with the same images in the same order (exact ranks).
        params: ks, bootstrap and list lengths.
        labels: slice labels aligned with the keys of ``gt``.
        progress: progress bars.
    """
    b = params.bootstrap
    results = score_embeddings(gt, query_ids, query_embeddings, galleries, progress=progress)
    summary = summarize(results, params.ks)
    ci = metric_cis(results, params.ks, n_boot=b.n_boot, level=b.level, seed=b.seed)
    slices = slice_metrics(
        results,
        labels or {},
        ks=params.ks,
        by_livestream=params.slice_by_livestream,
        n_boot=b.n_boot,
        level=b.level,
        seed=b.seed,
    )
    k = max(params.top_k, params.report.top)
    live_ids = [parse_clip_id(q).live_id for q in query_ids]
    predictions = search_predictions(indexes, list(query_ids), live_ids, query_embeddings, k)
    index_results = score_predictions(gt, {q: p[: params.top_k] for q, p in predictions.items()})
    exact = np.where(results.rank <= params.top_k, results.rank, np.inf)
    agreement = float(np.mean(exact == index_results.rank)) if len(results) else float("nan")
    return Evaluation(
        results,
        summary,
        ci,
        slices,
        rank_k_curve(results, params.curve_max_k),
        predictions,
        index_results,
        agreement,
    )
