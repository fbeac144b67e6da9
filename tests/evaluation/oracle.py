"""Brute-force reference for the evaluation: plain Python loops, no numpy, no cleverness.

It follows the documented rules literally: rank a query's own livestream's gallery by score
descending, ties by gallery position ascending; a hit at k when a ground-truth image is among the
first k; AP over the distinct ground-truth images; a query without prediction is a miss.
"""

from __future__ import annotations

import math
import random
import uuid


def new_uuid(rnd: random.Random) -> str:
    return str(uuid.UUID(int=rnd.getrandbits(128), version=4))


def dot(a, b) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b))


def oracle_ranking(query_vec, gallery_ids, gallery_vecs) -> list[str]:
    scores = [dot(query_vec, g) for g in gallery_vecs]
    order = sorted(range(len(gallery_ids)), key=lambda j: (-scores[j], j))
    return [gallery_ids[j] for j in order]


def oracle_query(ranking: list[str] | None, gt_images: list[str], ks) -> dict:
    """Metrics of one query from its full ranking (None: no prediction)."""
    distinct = list(dict.fromkeys(gt_images))
    if not ranking:
        return {"rank": math.inf, "ap": 0.0, "rr": 0.0, "hits": {k: False for k in ks}, "has_prediction": False}
    hits = {}
    for k in ks:
        hits[k] = False
        for i in range(min(k, len(ranking))):
            if ranking[i] in distinct:
                hits[k] = True
    found = 0
    precision_sum = 0.0
    first = math.inf
    for position, image_id in enumerate(ranking, 1):
        if image_id in distinct:
            found += 1
            precision_sum += found / position
            if first == math.inf:
                first = position
    return {
        "rank": first,
        "ap": precision_sum / len(distinct),
        "rr": 0.0 if first == math.inf else 1.0 / first,
        "hits": hits,
        "has_prediction": True,
    }


def oracle_from_embeddings(gt, query_ids, query_vecs, galleries, ks) -> dict[str, dict]:
    vec_of = dict(zip(query_ids, query_vecs))
    out = {}
    for query_id, gt_images in gt.items():
        live_id = query_id[:36]
        gallery = galleries.get(live_id)
        if query_id not in vec_of or gallery is None or len(gallery[0]) == 0:
            ranking = None
        else:
            ranking = oracle_ranking(vec_of[query_id], list(gallery[0]), list(gallery[1]))
        out[query_id] = oracle_query(ranking, gt_images, ks)
    return out


def oracle_from_predictions(gt, predictions, ks) -> dict[str, dict]:
    out = {}
    for query_id, gt_images in gt.items():
        entries = predictions.get(query_id)
        ranking = [e if isinstance(e, str) else e[0] for e in entries] if entries else None
        out[query_id] = oracle_query(ranking, gt_images, ks)
    return out


def oracle_summary(per_query: dict[str, dict], ks) -> dict[str, float]:
    n = len(per_query)
    out = {}
    for k in ks:
        out[f"rank{k}"] = sum(1 for r in per_query.values() if r["hits"][k]) / n
    out["mAP"] = sum(r["ap"] for r in per_query.values()) / n
    out["MRR"] = sum(r["rr"] for r in per_query.values()) / n
    return out


def random_world(seed: int, *, n_live: int = 6, dim: int = 3, levels=(-1, 0, 1), max_gallery: int = 14, n_queries: int = 60):
    """A small random world with many score ties (small integer embeddings: exact dot products).

    Returns ``(gt, query_ids, query_vecs, galleries)`` with galleries ``live_id -> (ids, vecs)``.
    Includes: empty and missing galleries, galleries smaller than 10, queries without embedding,
    queries with several (and repeated) ground-truth images, ground truth outside the gallery.
    """
    rnd = random.Random(seed)
    lives = [new_uuid(rnd) for _ in range(n_live)]
    galleries = {}
    for i, live in enumerate(lives):
        if i == 0:
            continue  # a livestream without gallery
        size = 0 if i == 1 else rnd.randint(1, max_gallery)
        ids = [new_uuid(rnd) for _ in range(size)]
        vecs = [[float(rnd.choice(levels)) for _ in range(dim)] for _ in range(size)]
        galleries[live] = (ids, vecs)
    gt, query_ids, query_vecs = {}, [], []
    for q in range(n_queries):
        live = rnd.choice(lives)
        query_id = f"{live}-{1000 * q}-{1000 * q + rnd.randint(0, 5000)}"
        pool = galleries.get(live, ([], []))[0]
        n_gt = rnd.choice([1, 1, 1, 2, 3])
        images = [rnd.choice(pool) if pool and rnd.random() < 0.9 else new_uuid(rnd) for _ in range(n_gt)]
        if rnd.random() < 0.1:
            images.append(images[0])  # a repeated ground-truth entry
        gt[query_id] = images
        if rnd.random() < 0.9:
            query_ids.append(query_id)
            query_vecs.append([float(rnd.choice(levels)) for _ in range(dim)])
    # an embedding of a query that is not in the ground truth: ignored
    extra = f"{lives[-1]}-1-2"
    query_ids.append(extra)
    query_vecs.append([1.0] * dim)
    return gt, query_ids, query_vecs, galleries
