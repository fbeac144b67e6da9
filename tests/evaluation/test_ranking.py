"""The ranking math against the brute-force oracle, and the input checks."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from lpr_core.evaluation import (
    Gallery,
    score_embeddings,
    score_predictions,
    summarize,
    top_k_predictions,
    top_k_stable,
)

from .oracle import (
    new_uuid,
    oracle_from_embeddings,
    oracle_from_predictions,
    oracle_summary,
    random_world,
)

KS = (1, 2, 3, 5, 10, 20)


def _galleries(raw) -> dict[str, Gallery]:
    return {
        live: Gallery(ids, np.asarray(vecs, dtype=np.float32).reshape(len(ids), -1) if ids else np.empty((0, 3), np.float32))
        for live, (ids, vecs) in raw.items()
    }


def _assert_matches(results, oracle):
    assert list(results.query_ids) == list(oracle)
    for i, (query_id, ref) in enumerate(oracle.items()):
        assert results.rank[i] == ref["rank"], query_id
        assert results.has_prediction[i] == ref["has_prediction"], query_id
        assert results.average_precision[i] == pytest.approx(ref["ap"], abs=1e-12), query_id
        assert results.reciprocal_rank()[i] == pytest.approx(ref["rr"], abs=1e-12), query_id
        for k in KS:
            assert bool(results.hits(k)[i]) == ref["hits"][k], (query_id, k)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("chunk_size, workers", [(1, 1), (7, 2), (4096, 1), (4096, 3)])
def test_score_embeddings_matches_oracle(seed, chunk_size, workers):
    gt, query_ids, query_vecs, raw = random_world(seed)
    results = score_embeddings(
        gt, query_ids, np.asarray(query_vecs, dtype=np.float32), _galleries(raw), chunk_size=chunk_size, workers=workers
    )
    oracle = oracle_from_embeddings(gt, query_ids, query_vecs, raw, KS)
    _assert_matches(results, oracle)
    summary = summarize(results, KS)
    for name, value in oracle_summary(oracle, KS).items():
        assert summary[name] == pytest.approx(value, abs=1e-12), name
    assert summary["num_no_prediction"] == sum(1 for r in oracle.values() if not r["has_prediction"])


def test_random_worlds_exercise_the_edge_cases():
    # the oracle comparison is only as good as the cases it sees: check they are there
    ties = misses = several_gt = small = 0
    for seed in range(12):
        gt, query_ids, query_vecs, raw = random_world(seed)
        oracle = oracle_from_embeddings(gt, query_ids, query_vecs, raw, KS)
        misses += sum(1 for r in oracle.values() if not r["has_prediction"])
        several_gt += sum(1 for images in gt.values() if len(set(images)) > 1)
        small += sum(1 for ids, _ in raw.values() if 0 < len(ids) < 10)
        for _, vecs in raw.values():
            ties += len(vecs) - len({tuple(v) for v in vecs})
    assert ties > 20 and misses > 5 and several_gt > 10 and small > 5


@pytest.mark.parametrize("seed", range(10))
def test_score_predictions_matches_oracle(seed):
    rnd = random.Random(seed)
    gt, query_ids, query_vecs, raw = random_world(seed)
    predictions = {}
    for query_id in query_ids:
        ids = list(raw.get(query_id[:36], ([], []))[0])
        rnd.shuffle(ids)
        cut = rnd.choice([0, 1, 3, len(ids)])  # empty, truncated and full lists
        entries = ids[:cut]
        # official pairs most of the time, bare ids sometimes
        predictions[query_id] = [(i, 1.0 - n / 100) if rnd.random() < 0.8 else i for n, i in enumerate(entries)]
    results = score_predictions(gt, predictions)
    _assert_matches(results, oracle_from_predictions(gt, predictions, KS))


def test_full_top_k_lists_score_like_embeddings():
    # top_k_predictions (argpartition + tie repair) and score_embeddings (counting) follow one rule
    for seed in range(8):
        gt, query_ids, query_vecs, raw = random_world(seed, max_gallery=40)
        galleries = _galleries(raw)
        x = np.asarray(query_vecs, dtype=np.float32)
        by_counting = score_embeddings(gt, query_ids, x, galleries)
        for k in (3, 40):
            predictions = top_k_predictions(query_ids, x, galleries, k)
            by_list = score_predictions(gt, predictions)
            expected = np.where(by_counting.rank <= k, by_counting.rank, math.inf)
            np.testing.assert_array_equal(by_list.rank, expected)
            if k == 40:
                np.testing.assert_allclose(by_list.average_precision, by_counting.average_precision)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("k", [1, 3, 8, 50, 200])
def test_top_k_stable_matches_sorted(seed, k):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 120))
    scores = rng.integers(-2, 3, size=(7, n)).astype(np.float32)
    idx, vals = top_k_stable(scores, k)
    for r in range(scores.shape[0]):
        ref = sorted(range(n), key=lambda j: (-float(scores[r, j]), j))[:k]
        assert idx[r].tolist() == ref
        assert vals[r].tolist() == [float(scores[r, j]) for j in ref]


def test_rank_is_position_in_stable_order_with_equal_scores():
    live = new_uuid(random.Random(1))
    images = [new_uuid(random.Random(i + 10)) for i in range(4)]
    same = np.ones((4, 2), np.float32)  # every score ties
    gt = {f"{live}-0-1": [images[2]], f"{live}-1-2": [images[0]], f"{live}-2-3": [images[3], images[1]]}
    query_ids = list(gt)
    results = score_embeddings(gt, query_ids, np.ones((3, 2), np.float32), {live: Gallery(images, same)})
    assert results.rank.tolist() == [3.0, 1.0, 2.0]
    # third query: ground truth at positions 2 and 4 -> AP = (1/2 + 2/4) / 2
    assert results.average_precision[2] == pytest.approx(0.5)


def test_query_without_embedding_or_gallery_is_a_miss():
    rnd = random.Random(3)
    live, other = new_uuid(rnd), new_uuid(rnd)
    image = new_uuid(rnd)
    gt = {f"{live}-0-1": [image], f"{live}-5-6": [image], f"{other}-0-1": [image]}
    x = np.ones((2, 2), np.float32)
    results = score_embeddings(gt, [f"{live}-0-1", f"{other}-0-1"], x, {live: Gallery([image], np.ones((1, 2), np.float32))})
    assert results.has_prediction.tolist() == [True, False, False]
    assert results.rank.tolist() == [1.0, math.inf, math.inf]
    summary = summarize(results)
    assert summary["rank1"] == pytest.approx(1 / 3)
    assert summary["num_no_prediction"] == 2


@pytest.mark.parametrize(
    "bad_gt, message",
    [
        ({"not-a-clip": ["x"]}, "not-a-clip"),
        ({"{live}-0-1": []}, "non-empty list"),
        ({"{live}-0-1": "{image}"}, "non-empty list"),
        ({"{live}-0-1": ["../etc"]}, "image_id"),
    ],
)
def test_bad_ground_truth_names_the_key(bad_gt, message):
    rnd = random.Random(5)
    live, image = new_uuid(rnd), new_uuid(rnd)
    gt = {k.format(live=live): (v.format(image=image) if isinstance(v, str) else v) for k, v in bad_gt.items()}
    with pytest.raises(ValueError, match=message):
        score_predictions(gt, {})


def test_bad_inputs_are_rejected_with_the_id_at_fault():
    rnd = random.Random(6)
    live, image = new_uuid(rnd), new_uuid(rnd)
    query = f"{live}-0-1"
    gt = {query: [image]}
    gallery = {live: Gallery([image], np.ones((1, 2), np.float32))}
    with pytest.raises(ValueError, match=f"{query} has two embedding rows"):
        score_embeddings(gt, [query, query], np.ones((2, 2), np.float32), gallery)
    with pytest.raises(ValueError, match="non-finite"):
        score_embeddings(gt, [query], np.array([[np.nan, 1]], np.float32), gallery)
    with pytest.raises(ValueError, match="dimension"):
        score_embeddings(gt, [query], np.ones((1, 3), np.float32), gallery)
    twice = {live: Gallery([image, image], np.ones((2, 2), np.float32))}
    with pytest.raises(ValueError, match=f"lists image_id {image} twice"):
        score_embeddings(gt, [query], np.ones((1, 2), np.float32), twice)
    with pytest.raises(ValueError, match=f"predictions for {query} list image_id {image} twice"):
        score_predictions(gt, {query: [(image, 1.0), (image, 0.5)]})
