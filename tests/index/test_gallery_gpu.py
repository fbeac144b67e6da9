"""GPU gallery indexes (faiss with GPU support and a GPU)."""

from __future__ import annotations

import random
import uuid

import numpy as np
import pytest

from lpr_core.index import IndexSpec, build_index, faiss_gpu_available, load_index, save_index

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not faiss_gpu_available(), reason="faiss has no GPU support or sees no GPU"),
]


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_gpu_index_matches_cpu_and_saves_as_cpu(tmp_path, kind):
    rnd, rng = random.Random(0), np.random.default_rng(0)
    ids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(2000)]
    live = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
    x = rng.normal(size=(2000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spec = dict(kind=kind, nlist=16, nprobe=16)
    gpu = build_index(live, ids, x, IndexSpec(device="gpu", **spec))
    cpu = build_index(live, ids, x, IndexSpec(device="cpu", **spec))
    assert gpu.on_gpu and not cpu.on_gpu
    _, found_gpu = gpu.search(x[:100], 5)
    _, found_cpu = cpu.search(x[:100], 5)
    assert [f[0] for f in found_gpu] == [f[0] for f in found_cpu] == ids[:100]
    save_index(gpu, tmp_path)
    again = load_index(tmp_path, live, device="cpu")
    assert not again.on_gpu
    np.testing.assert_allclose(again.vectors(), x, atol=1e-6)
    assert load_index(tmp_path, live, device="gpu").on_gpu
