"""The LPR protocol on embedded queries (:mod:`lpr_core.evaluation.scoring`) and the metric names
of the ``evaluate`` stage (:func:`lpr_core.evaluation.outputs.metrics_dict`), against a brute-force
oracle on tiny inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lpr_core.evaluation.params import EvaluateParams


def _uuid(rng: np.random.Generator) -> str:
    import uuid

    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


@pytest.mark.parametrize("seed", [0, 1])
def test_faiss_search_and_exact_scoring_agree_with_a_brute_force_oracle(seed):
    from lpr_core.evaluation import Gallery
    from lpr_core.evaluation.params import BootstrapParams
    from lpr_core.evaluation.scoring import evaluate_embeddings
    from lpr_core.index import IndexSpec, build_gallery_indexes

    rng = np.random.default_rng(seed)
    lives = [_uuid(rng) for _ in range(3)]
    galleries = {live: [_uuid(rng) for _ in range(n)] for live, n in zip(lives, (4, 12, 25))}
    image_ids = [i for members in galleries.values() for i in members]
    # small integer vectors: scores are exact in float32 whatever the summation order, with many
    # exact ties, which the tie rule must break by gallery position
    emb = rng.integers(-1, 2, size=(len(image_ids), 6)).astype(np.float32)
    row = {i: r for r, i in enumerate(image_ids)}
    gt, query_ids = {}, []
    for live, members in galleries.items():
        for q in range(6):
            clip = f"{live}-{1000 * q}-{1000 * q + 500}"
            gt[clip] = list(rng.choice(members, size=1 + q % 2, replace=False))
            query_ids.append(clip)
    gt[f"{lives[0]}-99000-99500"] = [galleries[lives[0]][0]]  # a query without an embedding
    q_emb = rng.integers(-1, 2, size=(len(query_ids), 6)).astype(np.float32)
    indexes = build_gallery_indexes(galleries, image_ids, emb, IndexSpec(device="cpu"), progress=False)
    exact = {live: Gallery(members, emb[[row[i] for i in members]]) for live, members in galleries.items()}
    params = EvaluateParams(top_k=5, bootstrap=BootstrapParams(n_boot=10))
    ev = evaluate_embeddings(gt, query_ids, q_emb, indexes, exact, params)
    assert ev.index_agreement == 1.0
    for i, clip in enumerate(query_ids):
        live = clip[:36]
        members = galleries[live]
        scores = (emb[[row[m] for m in members]] @ q_emb[i]).tolist()
        order = sorted(range(len(members)), key=lambda j: (-scores[j], j))  # the tie rule
        ranked = [members[j] for j in order]
        oracle = min(ranked.index(g) + 1 for g in gt[clip])
        assert ev.results.rank[list(gt).index(clip)] == oracle
        assert [m for m, _ in ev.predictions[clip][:5]] == ranked[:5]
    assert ev.results.rank[-1] == np.inf and not ev.results.has_prediction[-1]
    assert ev.summary["rank1"] == pytest.approx(np.mean(ev.results.rank <= 1))


def test_slice_metric_names_are_safe_and_distinct():
    import posixpath

    from lpr_core.evaluation import Gallery
    from lpr_core.evaluation.outputs import metrics_dict
    from lpr_core.evaluation.params import BootstrapParams
    from lpr_core.evaluation.scoring import evaluate_embeddings
    from lpr_core.index import IndexSpec, build_gallery_indexes

    rng = np.random.default_rng(0)
    live, images = _uuid(rng), [_uuid(rng) for _ in range(4)]
    emb = np.eye(4, dtype=np.float32)
    clips = [f"{live}-{i}-{i + 1}" for i in range(6)]
    gt = {c: [images[i % 4]] for i, c in enumerate(clips)}
    labels = {"category_name": ["a/b", "a_b", None, "..", "Clothing & Shoes", "a/b"]}
    indexes = build_gallery_indexes({live: images}, images, emb, IndexSpec(device="cpu"), progress=False)
    ev = evaluate_embeddings(
        gt,
        clips,
        emb[[i % 4 for i in range(6)]],
        indexes,
        {live: Gallery(images, emb)},
        EvaluateParams(bootstrap=BootstrapParams(n_boot=5)),
        labels,
    )
    metrics = metrics_dict(ev)
    counts = {
        k: v for k, v in metrics.items() if k.startswith("test/category_name/") and k.endswith("/num_queries")
    }
    assert sorted(counts.values()) == [1, 1, 1, 1, 2]  # five labels, none merged with another
    for key in metrics:
        assert re.fullmatch(r"[\w.\- /]+", key) and posixpath.normpath(key) == key, key
    assert metrics["test/category_name/missing/num_queries"] == 1
