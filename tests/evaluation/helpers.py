"""Synthetic per-query results for the tests of metrics, intervals, slices and outputs."""

from __future__ import annotations

import random

import numpy as np

from lpr_core.evaluation import Gallery, QueryResults, score_embeddings

from .oracle import new_uuid


def synthetic_results(seed: int = 0, *, n_live: int = 8, per_live: int = 25, dim: int = 16):
    """Score random embeddings with a planted ground truth; livestreams differ in difficulty.

    Returns ``(results, gt, query_ids, query_embeddings, galleries)``.
    """
    rnd = random.Random(seed)
    rng = np.random.default_rng(seed)
    gt, query_ids, rows, galleries = {}, [], [], {}
    for i in range(n_live):
        live = new_uuid(rnd)
        size = int(rng.integers(3, 30))
        ids = [new_uuid(rnd) for _ in range(size)]
        g = rng.normal(size=(size, dim)).astype(np.float32)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        galleries[live] = Gallery(ids, g)
        noise = 0.3 + 1.5 * i / n_live  # later livestreams are harder
        for q in range(per_live):
            j = int(rng.integers(size))
            query_id = f"{live}-{q * 1000}-{q * 1000 + 999}"
            gt[query_id] = [ids[j]]
            v = g[j] + noise * rng.normal(size=dim).astype(np.float32)
            query_ids.append(query_id)
            rows.append(v / np.linalg.norm(v))
    x = np.stack(rows).astype(np.float32)
    return score_embeddings(gt, query_ids, x, galleries), gt, query_ids, x, galleries


def results_from_ranks(ranks, live_ids=None) -> QueryResults:
    """QueryResults with the given best ranks (math.inf for a miss), one ground truth each."""
    n = len(ranks)
    rank = np.asarray(ranks, dtype=np.float64)
    live_ids = live_ids or ["00000000-0000-0000-0000-000000000000"] * n
    found = np.isfinite(rank)
    return QueryResults(
        query_ids=np.asarray([f"{live_ids[i]}-{i}-{i}" for i in range(n)]),
        live_ids=np.asarray(live_ids),
        rank=rank,
        average_precision=np.where(found, 1.0 / rank, 0.0),
        has_prediction=np.ones(n, dtype=bool),
        num_gt=np.ones(n, np.int64),
        num_gt_ranked=found.astype(np.int64),
    )
