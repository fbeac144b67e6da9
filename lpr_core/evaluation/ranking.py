"""Rank each query clip against its own livestream's gallery and find its ground truth.

This is the LPR protocol: a query clip (``video_id`` = ``clip_id``) is ranked only against the
gallery of its livestream (the ``live_id`` its clip id starts with). The outcome of a query is the
1-based rank of each of its ground-truth images in that ranking; everything else (rank-k accuracy,
mAP, MRR, slices, confidence intervals) is computed from those ranks (:class:`QueryResults`).

Tie rule (the same everywhere, including the test oracle): images are ordered by descending
score, and equal scores by ascending gallery position (the order of the gallery's image list,
i.e. the index order). It is what the official evaluation gets from Python's stable ``sorted``
over the gallery list. So the rank of a ground-truth image ``j`` with score ``s`` is
``1 + #{i : score_i > s} + #{i < j : score_i == s}``.

A ranked prediction list (the official ``{video_id: [[image_id, score], ...]}`` file) is taken in
the order written: it is the ranking.

Edge cases:

- A query of the ground truth without an embedding (or without a prediction list, or with an
  empty one), or whose livestream has no gallery, has *no prediction*: a miss at every k.
- A ground-truth image absent from the ranking (not in the gallery, or beyond a truncated
  prediction list) is not retrieved; when no ground-truth image of a query is, the query's rank
  is ``inf`` (a miss at every k).
- Average precision divides by the number of distinct ground-truth images of the query, found or
  not: ``AP = (1/|G|) * sum_i i / r_i`` over the found ranks ``r_1 < r_2 < ...``.
- A gallery smaller than k: the query can only be a hit by being found; nothing is padded.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np
from tqdm.auto import tqdm

from lpr_core.ids import CLIP_RE, UUID_RE, parse_clip_id, parse_image_id

__all__ = [
    "MISS",
    "Gallery",
    "galleries_from_embeddings",
    "QueryResults",
    "Prediction",
    "check_ground_truth",
    "score_embeddings",
    "score_predictions",
    "top_k_predictions",
    "top_k_stable",
]

_T = TypeVar("_T")
_R = TypeVar("_R")

#: The rank of a query none of whose ground-truth images was retrieved.
MISS = math.inf

#: One predicted entry: an image id, or an ``(image_id, score)`` pair as in the official file.
Prediction = str | Sequence[object]


class Gallery(NamedTuple):
    """One livestream's gallery.

    Attributes:
        image_ids: ``n`` distinct image ids, in gallery order (this order breaks score ties).
        embeddings: ``(n, d)`` float32 embeddings, L2-normalised, row ``i`` for ``image_ids[i]``.
    """

    image_ids: Sequence[str]
    embeddings: np.ndarray


def galleries_from_embeddings(
    galleries: Mapping[str, Sequence[str]], image_ids: Sequence[str], embeddings: np.ndarray
) -> dict[str, Gallery]:
    """``live_id -> Gallery`` of the images that have an embedding, in gallery order.

    Args:
        galleries: ``live_id -> [image_id, ...]``.
        image_ids: the ``N`` embedded images (row order of ``embeddings``).
        embeddings: ``(N, d)`` float32.

    Images without an embedding (not downloaded) are left out: they can never be retrieved.
    """
    row = {image_id: i for i, image_id in enumerate(image_ids)}
    out: dict[str, Gallery] = {}
    for live_id, ids in galleries.items():
        kept = [i for i in ids if i in row]
        emb = embeddings[[row[i] for i in kept]] if kept else np.zeros((0, embeddings.shape[1]), np.float32)
        out[live_id] = Gallery(kept, emb)
    return out


@dataclass(frozen=True, eq=False)
class QueryResults:
    """Per-query outcome, one entry per ground-truth query (arrays of length ``n``).

    Attributes:
        query_ids: ``(n,)`` str, the query clip ids, in ground-truth order.
        live_ids: ``(n,)`` str, each query's livestream.
        rank: ``(n,)`` float64, 1-based rank of the best-ranked ground-truth image; ``inf`` when
            none was retrieved (this includes queries without a prediction).
        average_precision: ``(n,)`` float64.
        has_prediction: ``(n,)`` bool, False for a query without embedding/prediction/gallery.
        num_gt: ``(n,)`` int64, distinct ground-truth images of each query.
        num_gt_ranked: ``(n,)`` int64, how many of them appear in the ranking.
    """

    query_ids: np.ndarray
    live_ids: np.ndarray
    rank: np.ndarray
    average_precision: np.ndarray
    has_prediction: np.ndarray
    num_gt: np.ndarray
    num_gt_ranked: np.ndarray

    def __len__(self) -> int:
        return int(self.rank.shape[0])

    def hits(self, k: int) -> np.ndarray:
        """``(n,)`` bool: whether a ground-truth image is in the query's top ``k``."""
        return self.rank <= k

    def reciprocal_rank(self) -> np.ndarray:
        """``(n,)`` float64: ``1 / rank`` (0 for a miss)."""
        return 1.0 / self.rank

    def subset(self, mask: np.ndarray) -> QueryResults:
        """The results of the queries selected by a boolean mask or an index array."""
        return QueryResults(
            self.query_ids[mask],
            self.live_ids[mask],
            self.rank[mask],
            self.average_precision[mask],
            self.has_prediction[mask],
            self.num_gt[mask],
            self.num_gt_ranked[mask],
        )


class _GroundTruth(NamedTuple):
    query_ids: list[str]
    live_ids: list[str]
    gt_image_ids: list[tuple[str, ...]]


def check_ground_truth(gt: Mapping[str, Sequence[str]], *, source: str = "ground truth") -> None:
    """Validate a ``video_id -> [image_id, ...]`` mapping; raise naming the offending key.

    Every key must be a clip id and every value a non-empty list of image ids.
    """
    _ground_truth(gt, source)


def _ground_truth(gt: Mapping[str, Sequence[str]], source: str = "ground truth") -> _GroundTruth:
    query_ids, live_ids, images = [], [], []
    for query_id, image_ids in gt.items():
        # the compiled patterns first (fast path); the parse functions explain a failure
        m = CLIP_RE.match(query_id) if isinstance(query_id, str) else None
        if m is None or int(m["start"]) > int(m["end"]):
            try:
                parse_clip_id(query_id)
            except ValueError as exc:
                raise ValueError(f"{source}: key {query_id!r}: {exc}") from None
        live_id = m["live_id"]  # type: ignore[index]
        listlike = type(image_ids) in (list, tuple) or (
            isinstance(image_ids, Sequence) and not isinstance(image_ids, str)
        )
        if not listlike or len(image_ids) == 0:
            raise ValueError(f"{source}: key {query_id}: expected a non-empty list of image ids, got {image_ids!r:.80}")
        for image_id in image_ids:
            if not (isinstance(image_id, str) and UUID_RE.match(image_id)):
                try:
                    parse_image_id(image_id)
                except ValueError as exc:
                    raise ValueError(f"{source}: key {query_id}: {exc}") from None
        query_ids.append(query_id)
        live_ids.append(live_id)
        images.append(tuple(dict.fromkeys(image_ids)))  # distinct, first-seen order
    return _GroundTruth(query_ids, live_ids, images)


def _finish(gt: _GroundTruth, has_prediction: np.ndarray, pair_query: np.ndarray, pair_rank: np.ndarray) -> QueryResults:
    """Per-query rank and AP from the ranks of every retrieved (query, ground-truth image) pair."""
    n = len(gt.query_ids)
    num_gt = np.fromiter((len(g) for g in gt.gt_image_ids), dtype=np.int64, count=n)
    order = np.lexsort((pair_rank, pair_query))
    pq = pair_query[order].astype(np.int64, copy=False)
    pr = pair_rank[order].astype(np.float64, copy=False)
    # i-th retrieved ground truth of its query (1-based), in rank order.
    ordinal = np.arange(len(pq)) - np.searchsorted(pq, pq, side="left") + 1
    ap = np.bincount(pq, weights=ordinal / pr, minlength=n) / np.maximum(num_gt, 1)
    rank = np.full(n, MISS)
    first = np.ones(len(pq), dtype=bool)
    first[1:] = pq[1:] != pq[:-1]
    rank[pq[first]] = pr[first]
    return QueryResults(
        query_ids=np.asarray(gt.query_ids, dtype=str),
        live_ids=np.asarray(gt.live_ids, dtype=str),
        rank=rank,
        average_precision=ap,
        has_prediction=has_prediction,
        num_gt=num_gt,
        num_gt_ranked=np.bincount(pq, minlength=n).astype(np.int64),
    )


def _entry_id(entry: Prediction, query_id: str, position: int) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Sequence) and len(entry) >= 1 and isinstance(entry[0], str):
        return entry[0]
    raise ValueError(f"predictions for {query_id}: entry {position} is not an image id or an [image_id, score] pair: {entry!r:.80}")


def _entry_ids(entries: Sequence[Prediction], query_id: str) -> list[str]:
    kinds = set(map(type, entries))
    if kinds <= {list, tuple}:
        ids = [e[0] if len(e) else None for e in entries]
        if set(map(type, ids)) == {str}:
            return ids  # type: ignore[return-value]
    elif kinds == {str}:
        return list(entries)  # type: ignore[arg-type]
    return [_entry_id(e, query_id, i) for i, e in enumerate(entries)]


def score_predictions(
    gt: Mapping[str, Sequence[str]],
    predictions: Mapping[str, Sequence[Prediction]],
) -> QueryResults:
    """Score ranked prediction lists (the official format) against the ground truth.

    Args:
        gt: ``video_id -> [image_id, ...]`` (``test_videoid_to_gtimage``); every key is a query.
        predictions: ``video_id -> [image_id | (image_id, score), ...]``, best first. The list
            order is the ranking; scores are not re-sorted. Queries missing here (or with an
            empty list) are misses; keys not in ``gt`` are ignored.

    Returns:
        One :class:`QueryResults` entry per ``gt`` key.

    Raises:
        ValueError: a malformed key, entry, or an image listed twice for one query.
    """
    truth = _ground_truth(gt)
    n = len(truth.query_ids)
    has_prediction = np.zeros(n, dtype=bool)
    pair_query: list[int] = []
    pair_rank: list[int] = []
    for q, (query_id, gt_images) in enumerate(zip(truth.query_ids, truth.gt_image_ids)):
        entries = predictions.get(query_id)
        if not entries:
            continue
        ids = _entry_ids(entries, query_id)
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise ValueError(f"predictions for {query_id} list image_id {dup} twice")
        has_prediction[q] = True
        position = {image_id: i for i, image_id in enumerate(ids)} if len(gt_images) > 4 else None
        for image_id in gt_images:
            if position is not None:
                found = position.get(image_id)
            else:
                try:
                    found = ids.index(image_id)
                except ValueError:
                    found = None
            if found is not None:
                pair_query.append(q)
                pair_rank.append(found + 1)
    return _finish(truth, has_prediction, np.asarray(pair_query, np.int64), np.asarray(pair_rank, np.int64))


def _query_matrix(query_ids: Sequence[str], query_embeddings: np.ndarray) -> tuple[dict[str, int], np.ndarray]:
    x = np.asarray(query_embeddings)
    if x.ndim != 2 or x.shape[0] != len(query_ids):
        raise ValueError(f"query embeddings must be ({len(query_ids)}, d), got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    row_of = dict(zip(query_ids, range(len(query_ids))))
    if len(row_of) != len(query_ids):
        first: dict[str, int] = {}
        for row, query_id in enumerate(query_ids):
            if query_id in first:
                raise ValueError(f"query id {query_id} has two embedding rows ({first[query_id]} and {row})")
            first[query_id] = row
    if x.size and not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise ValueError(f"query embedding of {query_ids[bad]} holds a non-finite value")
    return row_of, x


def _gallery_matrix(live_id: str, gallery: Gallery, dim: int) -> np.ndarray:
    g = np.asarray(gallery.embeddings)
    if g.ndim != 2 or g.shape[0] != len(gallery.image_ids):
        raise ValueError(
            f"gallery of {live_id}: {len(gallery.image_ids)} image ids but embeddings of shape {g.shape}"
        )
    if g.shape[0] and g.shape[1] != dim:
        raise ValueError(f"gallery of {live_id}: embeddings have dimension {g.shape[1]}, queries {dim}")
    g = np.ascontiguousarray(g, dtype=np.float32)
    if g.size and not np.isfinite(g).all():
        bad = int(np.argwhere(~np.isfinite(g))[0, 0])
        raise ValueError(f"gallery of {live_id}: embedding of {gallery.image_ids[bad]} holds a non-finite value")
    return g


def _gallery_positions(live_id: str, image_ids: Sequence[str]) -> dict[str, int]:
    position = dict(zip(image_ids, range(len(image_ids))))
    if len(position) != len(image_ids):
        seen: set[str] = set()
        for image_id in image_ids:
            if image_id in seen:
                raise ValueError(f"gallery of {live_id} lists image_id {image_id} twice")
            seen.add(image_id)
    return position


def _blas_single_threaded() -> contextlib.AbstractContextManager[object]:
    """Limit BLAS to one thread while our own threads run one matrix product each.

    Nested parallelism oversubscribes the cores, and OpenBLAS's spinning threads degrade badly
    when the cores are shared (measured: 4x slower on a loaded 2-core machine).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without threadpoolctl BLAS keeps its own threads
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _map_blocks(
    fn: Callable[[_T], _R],
    tasks: Sequence[_T],
    sizes: Sequence[int],
    workers: int | None,
    progress: bool,
    desc: str,
) -> list[_R]:
    """``[fn(task) for task in tasks]`` on a thread pool (numpy releases the GIL), in order."""
    workers = _default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    bar = None
    if progress:
        bar = tqdm(total=int(sum(sizes)), unit="query", desc=desc)
    out: list[_R] = []
    try:
        with _blas_single_threaded():
            if workers == 1 or len(tasks) < 2:
                results: Iterator[_R] = map(fn, tasks)
                for size, result in zip(sizes, results):
                    out.append(result)
                    if bar is not None:
                        bar.update(size)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for size, result in zip(sizes, pool.map(fn, tasks)):
                        out.append(result)
                        if bar is not None:
                            bar.update(size)
    finally:
        if bar is not None:
            bar.close()
    return out


def score_embeddings(
    gt: Mapping[str, Sequence[str]],
    query_ids: Sequence[str],
    query_embeddings: np.ndarray,
    galleries: Mapping[str, Gallery],
    *,
    chunk_size: int = 2048,
    workers: int | None = None,
    progress: bool = False,
) -> QueryResults:
    """Rank every ground-truth query against its livestream's gallery by inner product.

    Exact and vectorised: one matrix product per livestream (and chunk of ``chunk_size``
    queries); the rank of a ground-truth image is the count of gallery scores ahead of its own
    under the tie rule, so no ranking is sorted. Livestreams run in parallel on ``workers``
    threads, each with a single-threaded BLAS (the BLAS thread limit is process-wide for the
    duration of the call).

    Args:
        gt: ``video_id -> [image_id, ...]``; its keys are the queries scored.
        query_ids: ``m`` distinct clip ids, one per row of ``query_embeddings`` (queries not in
            ``gt`` are ignored; ``gt`` queries not here have no prediction).
        query_embeddings: ``(m, d)`` float32, L2-normalised.
        galleries: ``live_id -> Gallery``.
        chunk_size: queries per matrix product (bounds memory to ``chunk_size x n_gallery``
            floats per worker).
        workers: threads (default: the usable cores, at most 8).
        progress: show a progress bar over queries.

    Returns:
        One :class:`QueryResults` entry per ``gt`` key.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    truth = _ground_truth(gt)
    row_of, x = _query_matrix(query_ids, query_embeddings)
    n = len(truth.query_ids)
    has_prediction = np.zeros(n, dtype=bool)
    by_live: dict[str, list[int]] = {}  # live_id -> gt query indices that have an embedding
    for q, (query_id, live_id) in enumerate(zip(truth.query_ids, truth.live_ids)):
        if query_id in row_of:
            by_live.setdefault(live_id, []).append(q)
    tasks, sizes = [], []
    for live_id, members in by_live.items():
        gallery = galleries.get(live_id)
        if gallery is None or len(gallery.image_ids) == 0:
            continue
        g = _gallery_matrix(live_id, gallery, x.shape[1])
        position = _gallery_positions(live_id, gallery.image_ids)
        queries = np.asarray(members, dtype=np.int64)
        rows = np.fromiter((row_of[truth.query_ids[q]] for q in members), dtype=np.int64, count=len(members))
        has_prediction[queries] = True
        local, cols = [], []
        for i, q in enumerate(members):
            for image_id in truth.gt_image_ids[q]:
                j = position.get(image_id)
                if j is not None:
                    local.append(i)
                    cols.append(j)
        local_a = np.asarray(local, dtype=np.int64)
        cols_a = np.asarray(cols, dtype=np.int64)
        for start in range(0, len(members), chunk_size):
            lo, hi = np.searchsorted(local_a, [start, start + chunk_size])
            if hi > lo:  # a chunk without any findable ground truth needs no scores
                tasks.append((g, rows[start : start + chunk_size], queries[local_a[lo:hi]], local_a[lo:hi] - start, cols_a[lo:hi]))
                sizes.append(min(chunk_size, len(members) - start))

    def rank_block(task: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        g, rows, pair_queries, pair_local, pair_cols = task
        return pair_queries, _ranks_of(x[rows] @ g.T, pair_local, pair_cols)

    done = _map_blocks(rank_block, tasks, sizes, workers, progress, "rank")
    pq = np.concatenate([d[0] for d in done]) if done else np.empty(0, np.int64)
    pr = np.concatenate([d[1] for d in done]) if done else np.empty(0, np.int64)
    return _finish(truth, has_prediction, pq, pr)


def _ranks_of(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """1-based rank of ``scores[rows[t], cols[t]]`` within row ``rows[t]`` under the tie rule."""
    target = scores[rows, cols][:, None]
    same_rows = len(rows) == scores.shape[0] and bool((rows == np.arange(len(rows))).all())
    block = scores if same_rows else scores[rows]
    ahead = np.count_nonzero(block > target, axis=1)
    equal = np.count_nonzero(block == target, axis=1)
    tied = np.flatnonzero(equal > 1)
    if len(tied):
        # only rows with a tie pay for the positional part of the rule
        sub = block[tied]
        before = np.arange(block.shape[1])[None, :] < cols[tied][:, None]
        ahead[tied] += np.count_nonzero((sub == target[tied]) & before, axis=1)
    return ahead + 1


def top_k_stable(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` columns of each row under the tie rule (score desc, then column asc).

    Args:
        scores: ``(m, n)`` scores.
        k: how many per row (``min(k, n)`` come back).

    Returns:
        ``indices`` ``(m, k')`` int64 and ``values`` ``(m, k')``, best first.
    """
    scores = np.asarray(scores)
    m, n = scores.shape
    k = max(0, min(int(k), n))
    if k == 0:
        return np.empty((m, 0), np.int64), np.empty((m, 0), scores.dtype)
    if 4 * k >= n:
        idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return idx.astype(np.int64), np.take_along_axis(scores, idx, axis=1)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
    # argpartition picks arbitrary members of a tie at the k-th value: fix those rows.
    crowded = np.flatnonzero(np.count_nonzero(scores >= kth[:, None], axis=1) > k)
    for r in crowded:
        cand = np.flatnonzero(scores[r] >= kth[r])
        part[r] = cand[np.argsort(-scores[r, cand], kind="stable")[:k]]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return idx, np.take_along_axis(vals, order, axis=1)


def top_k_predictions(
    query_ids: Sequence[str],
    query_embeddings: np.ndarray,
    galleries: Mapping[str, Gallery],
    k: int,
    *,
    chunk_size: int = 2048,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, list[tuple[str, float]]]:
    """Each query's top ``k`` gallery images (its own livestream's), in the official format.

    Args:
        query_ids: ``m`` distinct clip ids (the livestream is read from the id).
        query_embeddings: ``(m, d)`` float32, L2-normalised.
        galleries: ``live_id -> Gallery``.
        k: images per query (fewer when the gallery is smaller).
        chunk_size: queries per matrix product.
        workers: threads (default: the usable cores, at most 8).
        progress: show a progress bar.

    Returns:
        ``query_id -> [(image_id, score), ...]`` best first under the tie rule; a query whose
        livestream has no gallery gets no entry.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    row_of, x = _query_matrix(query_ids, query_embeddings)
    rows_by_live: dict[str, list[int]] = {}
    for query_id, row in row_of.items():
        rows_by_live.setdefault(parse_clip_id(query_id).live_id, []).append(row)
    tasks, sizes = [], []
    for live_id, rows in rows_by_live.items():
        gallery = galleries.get(live_id)
        if gallery is None or len(gallery.image_ids) == 0:
            continue
        g = _gallery_matrix(live_id, gallery, x.shape[1])
        _gallery_positions(live_id, gallery.image_ids)  # rejects duplicates
        rows_a = np.asarray(rows, dtype=np.int64)
        for start in range(0, len(rows_a), chunk_size):
            block = rows_a[start : start + chunk_size]
            tasks.append((gallery.image_ids, g, block))
            sizes.append(len(block))

    def top_block(task: tuple[Sequence[str], np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        _, g, block = task
        return top_k_stable(x[block] @ g.T, k)

    out: dict[str, list[tuple[str, float]]] = {}
    for (ids, _, block), (idx, vals) in zip(tasks, _map_blocks(top_block, tasks, sizes, workers, progress, "top-k")):
        for row, row_idx, row_vals in zip(block.tolist(), idx.tolist(), vals.tolist()):
            out[query_ids[row]] = [(ids[j], v) for j, v in zip(row_idx, row_vals)]
    return out
