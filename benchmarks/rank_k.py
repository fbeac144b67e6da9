"""Rank-k evaluation at LPR4M test scale, against the official evaluation's per-query path.

World: 110 livestreams, 66,358 gallery images split as unevenly as real shops (lognormal sizes
around ~600), 20,079 query clips spread over the livestreams (lognormal weights, independent of
gallery size), d=512 float32, L2-normalised random embeddings; each query is a noisy copy of its
ground-truth image (noise set for a rank-1 near 60%; 5% of queries have a second ground-truth image).

- ours: :func:`lpr_core.evaluation.score_embeddings` + :func:`summarize` (one sgemm per
  livestream, ranks by counting, no sort), from the embeddings to rank-1/3/5/10, mAP and MRR.
- baseline: the official evaluation's per-query path: a torch matrix product of the query with its
  livestream's gallery, a Python list of ``[image_id, score]`` pairs ordered with ``sorted()``, then
  the top-10 check of ``calculate_acc``. Timed on ``--baseline-queries`` random queries and scaled
  to all queries (the per-query cost does not depend on which queries).

Also: build time and memory of one 332,438-vector index (d=512): flat inner product, and IVF.

Usage: ``python benchmarks/rank_k.py [--baseline-queries 2000] [--skip-index]``.
Last line: ``RESULT seconds=<ours> baseline_seconds=<baseline> ratio=<x>``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import time
import uuid

import numpy as np

N_LIVE = 110
N_GALLERY = 66_358
N_QUERIES = 20_079
DIM = 512
N_TRAIN_IMAGES = 332_438
KS = (1, 3, 5, 10)


def _uuids(rnd: random.Random, n: int) -> list[str]:
    return [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(n)]


def _split(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Integer sizes proportional to ``weights``, each >= minimum, summing to ``total``."""
    sizes = np.maximum(minimum, np.floor(weights / weights.sum() * total)).astype(np.int64)
    diff = total - int(sizes.sum())
    order = np.argsort(-weights)
    i = 0
    while diff != 0:
        j = order[i % len(order)]
        if diff > 0:
            sizes[j] += 1
            diff -= 1
        elif sizes[j] > minimum:
            sizes[j] -= 1
            diff += 1
        i += 1
    return sizes


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_world(seed: int = 0, noise: float = 7.0):
    """The synthetic test set: ``(gt, query_ids, queries, galleries, sizes)``."""
    from lpr_core.evaluation import Gallery

    rng = np.random.default_rng(seed)
    rnd = random.Random(seed)
    lives = _uuids(rnd, N_LIVE)
    sizes = _split(N_GALLERY, rng.lognormal(0.0, 0.7, N_LIVE), minimum=20)
    query_counts = _split(N_QUERIES, rng.lognormal(0.0, 0.7, N_LIVE), minimum=5)
    galleries = {}
    gt: dict[str, list[str]] = {}
    query_ids: list[str] = []
    blocks = []
    for live, size, n_q in zip(lives, sizes, query_counts):
        ids = _uuids(rnd, int(size))
        g = _unit_rows(rng, int(size), DIM)
        galleries[live] = Gallery(ids, g)
        target = rng.integers(0, size, n_q)
        q = g[target] + np.float32(noise / np.sqrt(DIM)) * rng.standard_normal((n_q, DIM), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        blocks.append(q)
        second = rng.random(n_q) < 0.05
        for i in range(n_q):
            query_id = f"{live}-{1000 * i}-{1000 * i + 999}"
            images = [ids[target[i]]]
            if second[i] and size > 1:
                images.append(ids[(target[i] + 1) % size])
            gt[query_id] = images
            query_ids.append(query_id)
    queries = np.ascontiguousarray(np.concatenate(blocks))
    return gt, query_ids, queries, galleries, sizes


def run_ours(gt, query_ids, queries, galleries, repeats: int):
    from lpr_core.evaluation import score_embeddings, summarize

    times, cpu_times, summary = [], [], None
    for _ in range(repeats):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        results = score_embeddings(gt, query_ids, queries, galleries)
        summary = summarize(results, KS)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return times, cpu_times, summary, results


def run_baseline(gt, query_ids, queries, galleries, sample: np.ndarray):
    """The official evaluation's path for the sampled queries; returns (seconds, hits per k)."""
    import torch

    torch_galleries = {live: (list(g.image_ids), torch.from_numpy(np.asarray(g.embeddings))) for live, g in galleries.items()}
    hit_top = np.array(KS)
    hits = {}
    t0 = time.perf_counter()
    for row in sample:
        q_name = query_ids[row]
        names, g_f = torch_galleries[q_name[:36]]
        video_output = torch.from_numpy(queries[row : row + 1])
        sim = torch.matmul(video_output, g_f.t())
        g_sim = [[k, v.item()] for k, v in zip(names, sim.squeeze(0))]
        q_pred = [[k, v] for k, v in sorted(g_sim, key=lambda x: x[1], reverse=True)]
        tmp_top_hit = np.array([0, 0, 0, 0])
        for k in range(10):
            cur_pred = q_pred[-1][0] if k > len(q_pred) - 1 else q_pred[k][0]
            if cur_pred in gt[q_name]:
                for level in range(len(hit_top)):
                    if k < hit_top[level]:
                        tmp_top_hit[level:] = 1
                        break
        hits[q_name] = tmp_top_hit
    return time.perf_counter() - t0, hits


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def bench_index(kind: str, x: np.ndarray, ids: list[str], live: str) -> dict[str, float]:
    from lpr_core.index import IndexSpec, build_index

    spec = IndexSpec(kind=kind, device="cpu", nlist=1024, nprobe=32, train_size=65_536)
    gc.collect()
    before = _rss()
    t0 = time.perf_counter()
    index = build_index(live, ids, x, spec)
    seconds = time.perf_counter() - t0
    grown = _rss() - before
    queries = x[:1000] + 0.02 * np.random.default_rng(1).standard_normal((1000, x.shape[1]), dtype=np.float32)
    t0 = time.perf_counter()
    _, found = index.search(queries, 10)
    search_s = time.perf_counter() - t0
    top1 = float(np.mean([f[0] == ids[i] if f else False for i, f in enumerate(found)]))
    del index
    gc.collect()
    return {"seconds": seconds, "rss_mb": grown / 2**20, "search_ms_per_query": 1000 * search_s / 1000, "top1": top1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-queries", type=int, default=2000, help="queries timed on the official path")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (median reported)")
    parser.add_argument("--skip-index", action="store_true", help="skip the 332,438-vector index build")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    print(
        f"cores: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  numpy {np.__version__}  "
        f"load average: {os.getloadavg()[0]:.1f} (other processes share the cores when it exceeds the core count)"
    )
    t0 = time.perf_counter()
    gt, query_ids, queries, galleries, sizes = make_world(args.seed)
    flop = 2.0 * DIM * sum(len(g.image_ids) * n for g, n in zip(galleries.values(), _query_counts(query_ids, galleries)))
    print(
        f"world: {len(galleries)} livestreams, {int(sizes.sum())} gallery images "
        f"(min {sizes.min()}, median {int(np.median(sizes))}, max {sizes.max()}), {len(query_ids)} queries, d={DIM}; "
        f"{flop / 1e9:.1f} GFLOP of scores; built in {time.perf_counter() - t0:.1f} s"
    )

    times, cpu_times, summary, results = run_ours(gt, query_ids, queries, galleries, args.repeats)
    ours = float(np.median(times))
    print(
        "ours: " + " ".join(f"{t:.3f}" for t in times) + f" s (median {ours:.3f} s, {flop / 1e9 / ours:.0f} GFLOP/s; "
        f"CPU {float(np.median(cpu_times)):.3f} s over all threads); "
        + ", ".join(f"{k} {100 * summary[k]:.2f}%" for k in ("rank1", "rank3", "rank5", "rank10", "mAP", "MRR"))
    )

    rng = np.random.default_rng(args.seed + 1)
    n_sample = min(args.baseline_queries, len(query_ids))
    sample = np.sort(rng.choice(len(query_ids), n_sample, replace=False))
    base_s, base_hits = run_baseline(gt, query_ids, queries, galleries, sample)
    baseline = base_s * len(query_ids) / n_sample
    # same answers on the sampled queries
    ours_hits = np.stack([results.hits(k) for k in KS], axis=1)[sample]
    theirs = np.stack([base_hits[query_ids[i]] for i in sample]).astype(bool)
    agree = bool((ours_hits == theirs).all())
    print(
        f"baseline (official per-query path): {base_s:.2f} s for {n_sample} queries -> {baseline:.1f} s for "
        f"{len(query_ids)}; hits agree with ours on those queries: {agree}"
    )
    if not agree:
        raise SystemExit("rank-k hits differ from the official path")

    if not args.skip_index:
        del queries, galleries, results
        gc.collect()
        rng = np.random.default_rng(args.seed + 2)
        rnd = random.Random(args.seed + 2)
        x = _unit_rows(rng, N_TRAIN_IMAGES, DIM)
        ids = _uuids(rnd, N_TRAIN_IMAGES)
        live = _uuids(rnd, 1)[0]
        print(f"index of {N_TRAIN_IMAGES} x {DIM} float32 ({x.nbytes / 2**20:.0f} MiB of vectors):")
        for kind in ("flat", "ivf"):
            r = bench_index(kind, x, ids, live)
            extra = " (nlist 1024, 65,536 training vectors, nprobe 32)" if kind == "ivf" else ""
            print(
                f"  {kind}{extra}: build {r['seconds']:.2f} s, memory +{r['rss_mb']:.0f} MiB, "
                f"search {r['search_ms_per_query']:.2f} ms/query (batch of 1000, k=10), top-1 self-recall {r['top1']:.3f}"
            )

    print(f"RESULT seconds={ours:.3f} baseline_seconds={baseline:.1f} ratio={baseline / ours:.0f}")


def _query_counts(query_ids: list[str], galleries) -> list[int]:
    counts: dict[str, int] = {}
    for q in query_ids:
        counts[q[:36]] = counts.get(q[:36], 0) + 1
    return [counts.get(live, 0) for live in galleries]


if __name__ == "__main__":
    main()
