"""The ``train_detector`` stage end to end on the tiny synthetic world: it trains on the annotated
training frames, evaluates mAP on the annotated test frames, writes a loadable checkpoint, DVC
plots and metrics, and one MLflow run with per-step metrics."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
import torch

from tests.stages.test_train_encoder import (
    metric_steps,
    mlflow_runs,
    shrunk_params,
    stage_argv,
    tiny_prepared,
    tsv_steps,
)

DETECTOR_MODEL = {"min_size": 64, "max_size": 96, "rpn_proposals": 32, "rois_per_image": 16, "box_head_dim": 32}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return tiny_prepared(tmp_path_factory)


@pytest.fixture
def experiment(request, monkeypatch) -> str:
    name = f"test-{request.node.name}"
    monkeypatch.setenv("LPR_MLFLOW_EXPERIMENT", name)
    return name


def test_stage_trains_evaluates_on_test_frames_and_logs(world, tmp_path, experiment):
    from lpr_core.models.detector import DetectorConfig, detect_boxes, load_detector
    from lpr_core.stages.train_detector import main

    params = shrunk_params(
        tmp_path / "params.yaml", "train_detector", DETECTOR_MODEL,
        {"max_steps": 2, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2},
    )
    out = tmp_path / "run"
    assert main(stage_argv(world, out, params)) == 0

    model, config = load_detector(out / "model" / "detector.pt")
    assert isinstance(config, DetectorConfig) and config.box_head_dim == 32 and not model.training
    (found,) = detect_boxes(model, [torch.rand(3, 96, 80)], score_threshold=0.0)
    assert found[0] is None or len(found[0]) == 4

    metrics = json.loads((out / "metrics.json").read_text())
    # the detector's own loss terms are recorded beside their sum
    own_loss = "detector/train_classification" if config.arch.startswith("fcos") else "detector/train_loss_classifier"
    for key in ("detector/map50", "detector/map", "detector/val_map50", "detector/train_loss",
                own_loss, "detector/steps", "detector/test_frames"):
        assert key in metrics, key
    assert -1.0 <= metrics["detector/map"] <= metrics["detector/map50"] <= 1.0  # COCO: -1 when undefined
    assert 0.0 <= metrics["detector/top_box_iou50"] <= 1.0 and "detector/val_top_box_iou50" in metrics
    # every annotated test frame of the world was downloaded: all of them are evaluated
    test_boxes = pq.read_table(world / "prepared" / "test_frame_boxes.parquet")
    assert metrics["detector/test_frames"] == test_boxes.num_rows > 0
    assert metrics["detector/steps"] == 2

    summary = json.loads((out / "model" / "train_summary.json").read_text())
    assert summary["frames"]["train"] > 0 and summary["frames"]["val"] > 0 and summary["resumed_from"] is None
    assert tsv_steps(out / "plots" / "train_loss.tsv") == [1, 2]
    assert (out / "plots" / "train_lr.tsv").exists()

    (run,) = mlflow_runs(experiment, "train_detector")
    assert run.info.status == "FINISHED"
    assert run.data.params["train_detector.model.arch"] == config.arch
    assert metric_steps(run.info.run_id, "train/loss") == [1, 2]
    assert run.data.metrics["detector/map50"] == pytest.approx(metrics["detector/map50"])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    assert "plots" in {a.path for a in client.list_artifacts(run.info.run_id)}

