"""The paper's code path on every CI run: ``train_encoder`` -> ``index_gallery`` -> ``evaluate`` with
an open_clip visual tower as the shared frame/image encoder, on the ``tiny`` world.

The tower is open_clip's own ViT at toy size (a JSON model config in open_clip's format: 32 px in
16 px patches, 2 layers), its starting weights a full CLIP checkpoint the test writes (as
``weights:`` takes a downloaded CLIP checkpoint); PMD and PFR run on its patch tokens. The three
stages run in-process through their command-line entry points (the ones ``dvc.yaml`` calls) with
the repository's params shrunk, the other settings as a user has them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.models.tiny_clip import write_clip_checkpoint, write_config
from tests.stages.test_evaluate import eval_params, run_evaluate
from tests.stages.test_index_gallery import Inputs, index_params, tiny_inputs
from tests.stages.test_train_encoder import mlflow_runs, shrunk_params


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    return tiny_inputs(tmp_path_factory)


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory) -> tuple[Path, Path, object]:
    """The tiny open_clip model config, a CLIP checkpoint of it, and that CLIP model."""
    root = tmp_path_factory.mktemp("open_clip")
    config = write_config(root)
    clip = write_clip_checkpoint(config, root / "clip_checkpoint.pt", seed=7)
    return config, root / "clip_checkpoint.pt", clip


def test_train_index_evaluate_with_an_open_clip_tower(inputs, clip_files, tmp_path, monkeypatch):
    from lpr_core.embedding import load_encoder_checkpoint
    from lpr_core.index.store import SUMMARY_FILE, load_gallery_embeddings
    from lpr_core.models.backbone import OpenClipBackbone
    from lpr_core.stages import index_gallery, train_encoder

    config, checkpoint, clip = clip_files
    monkeypatch.setenv("LPR_MLFLOW_EXPERIMENT", "open-clip-path")
    backbone = f"open_clip:{config}"

    # train_encoder: the tower starts from the checkpoint, PMD and PFR on its patch tokens
    model = {"backbone": backbone, "weights": str(checkpoint), "image_size": 32, "num_frames": 2,
             "embed_dim": 32, "decoder_dim": 32, "heads": 2, "pmd": True, "pfr": True}
    train = {"max_steps": 3, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 3, "lr": 1e-3}
    params = shrunk_params(tmp_path / "params.yaml", "train_encoder", model, train)
    run = tmp_path / "train"
    argv = ["--prepared", str(inputs.prepared), "--download", str(inputs.download), "--out", str(run / "model"),
            "--plots", str(run / "plots"), "--metrics", str(run / "metrics.json"), "--params", str(params)]
    assert train_encoder.main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["encoder/steps"] == 3
    for key in ("encoder/train_icl_loss", "encoder/train_pmd_loss", "encoder/train_pfr_loss"):
        assert np.isfinite(metrics[key]), key
    (mlflow_run,) = mlflow_runs("open-clip-path", "train_encoder")
    assert mlflow_run.data.params["train_encoder.model.backbone"] == backbone

    encoder, _ = load_encoder_checkpoint(run / "model")
    assert isinstance(encoder.backbone, OpenClipBackbone) and encoder.config.backbone == backbone
    assert encoder.num_tokens == 4  # (32 / 16)^2 patch tokens feed PMD and PFR
    trained = encoder.backbone.visual.state_dict()
    start = {k.removeprefix("visual."): v for k, v in clip.state_dict().items() if k.startswith("visual.")}
    assert set(trained) == set(start)
    # the tower began from the checkpoint and trained: 3 AdamW steps at lr 1e-3 move a weight by a few
    # 1e-3 at most, while another random start differs by ~0.1 (open_clip draws it at width^-0.5)
    moved = [k for k in start if not torch.equal(trained[k], start[k])]
    assert moved and (trained["class_embedding"] - start["class_embedding"]).abs().max() < 1e-2

    # index_gallery: the trained tower embeds every gallery image
    index = tmp_path / "index"
    assert index_gallery.main(["--prepared", str(inputs.prepared), "--download", str(inputs.download),
                               "--encoder", str(run / "model"), "--out", str(index),
                               "--params", str(index_params(tmp_path / "index_params.yaml"))]) == 0
    ids, emb = load_gallery_embeddings(index)
    gallery = pq.read_table(inputs.prepared / "test_gallery.parquet").column("image_id").to_pylist()
    assert sorted(ids) == sorted(set(gallery)) and emb.shape == (len(ids), 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert json.loads((index / SUMMARY_FILE).read_text())["num_missing_images"] == 0

    # evaluate: the query clips through the same tower (detector crops), ranked in their galleries
    root = tmp_path / "evaluate"
    assert run_evaluate(Inputs(inputs.root, inputs.world, inputs.download, inputs.prepared, run / "model",
                               inputs.detector), index, root, eval_params(tmp_path / "eval_params.yaml")) == 0
    scores = json.loads((root / "metrics.json").read_text())
    queries = pq.read_table(inputs.prepared / "test_queries.parquet").num_rows
    assert scores["test/num_queries"] == queries and scores["test/num_no_prediction"] == 0
    assert 0.0 <= scores["test/rank1"] <= scores["test/rank5"] <= scores["test/rank10"] <= 1.0
    assert scores["test/index_agreement"] == 1.0
