"""Gallery indexes: build, search under the tie rule, save/load round trip, bad files."""

from __future__ import annotations

import json
import random
import uuid

import numpy as np
import pytest

from lpr_core.evaluation import Gallery, score_embeddings, score_predictions, top_k_stable
from lpr_core.ids import InvalidIdError
from lpr_core.index import (
    GalleryIndex,
    IndexFileError,
    IndexSpec,
    build_gallery_indexes,
    build_index,
    faiss_gpu_available,
    load_gallery_indexes,
    load_index,
    save_gallery_indexes,
    save_index,
    search_predictions,
)


def _ids(rnd: random.Random, n: int) -> list[str]:
    return [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(n)]


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def world():
    rnd, rng = random.Random(0), np.random.default_rng(0)
    lives = _ids(rnd, 3)
    galleries = {live: _ids(rnd, size) for live, size in zip(lives, (5, 40, 120))}
    image_ids = [i for ids in galleries.values() for i in ids]
    emb = _unit(rng, len(image_ids), 16)
    return galleries, image_ids, emb


def test_flat_search_is_exact_with_the_tie_rule():
    rnd, rng = random.Random(1), np.random.default_rng(1)
    ids = _ids(rnd, 60)
    emb = rng.integers(-1, 2, size=(60, 4)).astype(np.float32)  # many exact ties
    index = build_index(_ids(rnd, 1)[0], ids, emb, IndexSpec(device="cpu"))
    queries = rng.integers(-1, 2, size=(9, 4)).astype(np.float32)
    scores, found = index.search(queries, 10)
    ref_idx, ref_vals = top_k_stable(queries @ emb.T, 10)
    assert found == [[ids[j] for j in row] for row in ref_idx.tolist()]
    np.testing.assert_array_equal(scores, ref_vals)
    assert index.search(queries, 1000)[0].shape == (9, 60)  # k larger than the gallery


@pytest.mark.parametrize("spec", [IndexSpec(kind="ivf", nlist=4, nprobe=4), IndexSpec(kind="hnsw", hnsw_m=8, ef_search=256)])
def test_approximate_kinds_keep_exact_vectors_and_find_neighbours(spec):
    rnd, rng = random.Random(2), np.random.default_rng(2)
    ids = _ids(rnd, 400)
    emb = _unit(rng, 400, 16)
    index = build_index(_ids(rnd, 1)[0], ids, emb, spec)
    np.testing.assert_array_equal(index.vectors(), emb)
    if spec.kind == "ivf":
        assert index.nlist == 4  # 400 // 39 = 10 > 4: the asked value stands
    # with every list probed (IVF) or a wide beam (HNSW) the top-1 is the exact one
    _, found = index.search(emb[:50], 1)
    assert [f[0] for f in found] == ids[:50]


def test_ivf_nlist_shrinks_for_small_galleries():
    rnd, rng = random.Random(3), np.random.default_rng(3)
    index = build_index(_ids(rnd, 1)[0], _ids(rnd, 100), _unit(rng, 100, 8), IndexSpec(kind="ivf", nlist=1024))
    assert index.nlist == 100 // 39


def test_build_gallery_indexes_and_round_trip(tmp_path, world):
    galleries, image_ids, emb = world
    indexes = build_gallery_indexes(galleries, image_ids, emb, IndexSpec(device="cpu"), progress=False)
    assert list(indexes) == list(galleries)
    for live_id, ids in galleries.items():
        assert indexes[live_id].image_ids == tuple(ids)
    manifest = save_gallery_indexes(indexes, tmp_path / "idx")
    assert set(json.loads(manifest.read_text())["livestreams"]) == set(galleries)
    loaded = load_gallery_indexes(tmp_path / "idx", device="cpu")
    queries = _unit(np.random.default_rng(9), 7, 16)
    for live_id, index in indexes.items():
        again = loaded[live_id]
        assert again.image_ids == index.image_ids and again.spec == index.spec
        np.testing.assert_array_equal(again.vectors(), index.vectors())
        assert again.search(queries, 4)[1] == index.search(queries, 4)[1]
    assert not [p for p in (tmp_path / "idx").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_missing_embeddings(world):
    galleries, image_ids, emb = world
    live = next(iter(galleries))
    with pytest.raises(ValueError, match=f"live_id {live}: 1 gallery image"):
        build_gallery_indexes(galleries, image_ids[1:], emb[1:], progress=False)
    indexes = build_gallery_indexes(galleries, image_ids[1:], emb[1:], skip_missing=True, progress=False)
    assert indexes[live].missing_image_ids == (image_ids[0],)
    assert indexes[live].ntotal == len(galleries[live]) - 1


def test_search_predictions_score_like_exact_evaluation(world):
    galleries, image_ids, emb = world
    indexes = build_gallery_indexes(galleries, image_ids, emb, IndexSpec(device="cpu"), progress=False)
    rng = np.random.default_rng(5)
    gt, query_ids, rows = {}, [], []
    for live, ids in galleries.items():
        for q in range(6):
            query_id = f"{live}-{q}-{q + 1}"
            target = int(rng.integers(len(ids)))
            gt[query_id] = [ids[target]]
            query_ids.append(query_id)
            rows.append(emb[image_ids.index(ids[target])] + 0.5 * rng.normal(size=16).astype(np.float32))
    x = np.stack(rows)
    predictions = search_predictions(indexes, query_ids, [q[:36] for q in query_ids], x, k=200)
    exact = score_embeddings(
        gt, query_ids, x, {live: Gallery(ix.image_ids, ix.vectors()) for live, ix in indexes.items()}
    )
    np.testing.assert_array_equal(score_predictions(gt, predictions).rank, exact.rank)


def test_save_replaces_an_older_index(tmp_path):
    rnd, rng = random.Random(4), np.random.default_rng(4)
    live = _ids(rnd, 1)[0]
    save_index(build_index(live, _ids(rnd, 3), _unit(rng, 3, 8)), tmp_path)
    newer = build_index(live, _ids(rnd, 5), _unit(rng, 5, 8))
    save_index(newer, tmp_path)
    assert load_index(tmp_path, live).image_ids == newer.image_ids
    assert [p.name for p in tmp_path.iterdir()] == [live]


def test_live_id_is_validated_before_it_becomes_a_path(tmp_path):
    rnd, rng = random.Random(5), np.random.default_rng(5)
    for bad in ("../escape", "a/b", ""):
        with pytest.raises(InvalidIdError):
            build_index(bad, _ids(rnd, 2), _unit(rng, 2, 4))
        with pytest.raises(InvalidIdError):
            load_index(tmp_path, bad)
    with pytest.raises(InvalidIdError):
        build_index(_ids(rnd, 1)[0], ["not-an-image-id"], _unit(rng, 1, 4))
    assert not any(tmp_path.iterdir())


def test_corrupt_files_are_reported_with_their_path(tmp_path):
    rnd, rng = random.Random(6), np.random.default_rng(6)
    live = _ids(rnd, 1)[0]
    where = save_index(build_index(live, _ids(rnd, 4), _unit(rng, 4, 8)), tmp_path)
    ids_file = where / "image_ids.txt"
    ids_file.write_text("\n".join(ids_file.read_text().splitlines()[:3]) + "\n")
    with pytest.raises(IndexFileError, match="lists 3 ids"):
        load_index(tmp_path, live)
    ids_file.write_text("bad id\n")
    with pytest.raises(IndexFileError, match="image_ids.txt line 1"):
        load_index(tmp_path, live)
    (where / "meta.json").write_text("{oops")
    with pytest.raises(IndexFileError, match="meta.json: invalid JSON"):
        load_index(tmp_path, live)
    with pytest.raises(IndexFileError, match="manifest.json: missing"):
        load_gallery_indexes(tmp_path)


def test_spec_validation():
    assert IndexSpec.from_dict({"kind": "ivf", "nlist": 64}).nlist == 64
    with pytest.raises(ValueError, match="unknown index parameter"):
        IndexSpec.from_dict({"nlists": 64})
    with pytest.raises(ValueError, match="kind"):
        IndexSpec(kind="pq")
    with pytest.raises(ValueError, match="GPU HNSW"):
        IndexSpec(kind="hnsw", device="gpu")
    with pytest.raises(ValueError, match="positive"):
        IndexSpec(nprobe=0)


def test_bad_embeddings():
    rnd = random.Random(7)
    live, ids = _ids(rnd, 1)[0], _ids(rnd, 2)
    with pytest.raises(ValueError, match="2 image ids but 3"):
        build_index(live, ids, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        build_index(live, ids, np.array([[0, 1], [np.inf, 0]], np.float32))
    with pytest.raises(ValueError, match="appears twice"):
        build_index(live, [ids[0], ids[0]], np.zeros((2, 4), np.float32))


@pytest.mark.skipif(faiss_gpu_available(), reason="this machine has a faiss GPU")
def test_gpu_demanded_without_one_fails_clearly():
    rnd = random.Random(8)
    with pytest.raises(RuntimeError, match="no GPU support"):
        build_index(_ids(rnd, 1)[0], _ids(rnd, 2), np.zeros((2, 4), np.float32), IndexSpec(device="gpu"))


def test_auto_device_falls_back_to_cpu():
    rnd = random.Random(9)
    index = build_index(_ids(rnd, 1)[0], _ids(rnd, 2), np.eye(2, 4, dtype=np.float32), IndexSpec(device="auto"))
    assert isinstance(index, GalleryIndex) and index.on_gpu == faiss_gpu_available()
