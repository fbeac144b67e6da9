"""Task adapters on the tiny world: the detector trains and is evaluated through the same engine;
the stage sections parse."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lpr_core.config import ConfigError, from_mapping, to_mapping
from lpr_core.data.datasets import build_dataloader, detection_collate
from lpr_core.ids import parse_clip_id
from lpr_core.models.detector import evaluate_detector
from lpr_core.training.checkpoint import load_checkpoint, seed_everything
from lpr_core.training.engine import checkpoint_path, fit
from lpr_core.training.tasks import (
    TrainDetectorParams,
    TrainEncoderParams,
    build_detector_task,
    build_encoder_task,
)

REPO = Path(__file__).resolve().parents[2]


def test_detector_trains_and_evaluates(tmp_path, world_readers):
    clips, frames, _ = world_readers
    params = TrainDetectorParams.from_mapping(
        {
            "model": {"arch": "fasterrcnn_mobilenet_v3_large_320_fpn", "min_size": 64, "max_size": 96, "rpn_proposals": 50, "rois_per_image": 16, "box_head_dim": 64},
            "data": {"val_fraction": 0.25, "color_jitter": 0.0, "crop_scale_min": 1.0},
            "train": {"max_steps": 2, "batch_size": 2, "checkpoint_every": 2, "lr": 3e-4, "weight_decay": 0.05,
                      "adam_beta2": 0.98, "warmup_steps": 20, "grad_clip_norm": 1.0, "log_every": 1, "num_workers": 0, "device": "cpu", "progress": False},
        }
    )
    seed_everything(0)
    task, val = build_detector_task(params, clips, frames)
    train_clips = {k[0] for k in task.dataset.keys}
    val_clips = {k[0] for k in val.keys}
    assert train_clips and val_clips and not train_clips & val_clips  # split by clip
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    result = fit(task, params.train, tmp_path)
    assert result.step == 2 and math.isfinite(result.metrics["train/loss"])
    assert {"train/loss_classifier", "train/loss_box_reg", "train/loss_objectness"} <= set(result.metrics)
    after = load_checkpoint(checkpoint_path(tmp_path))["model"]
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    metrics = evaluate_detector(task.model, build_dataloader(val, batch_size=2, collate_fn=detection_collate))
    assert set(metrics) == {"val/map_50", "val/map", "val/map_75", "val/mar_10", "val/top_box_iou50"}
    assert all(-1.0 <= v <= 1.0 for v in metrics.values())  # COCO reports -1 where undefined
    assert task.model.training


def test_detector_augmentation_applies_to_training_frames_only(world_readers):
    clips, frames, _ = world_readers
    section = {"model": {"arch": "fasterrcnn_mobilenet_v3_large_320_fpn", "min_size": 64, "max_size": 96, "box_head_dim": 64},
               "data": {"val_fraction": 0.25, "color_jitter": 0.0, "crop_scale_min": 1.0}}
    plain, _ = build_detector_task(TrainDetectorParams.from_mapping(section), clips, frames)
    section["data"].update(color_jitter=0.3, crop_scale_min=0.5)
    task, val = build_detector_task(TrainDetectorParams.from_mapping(section), clips, frames)

    def ops(dataset):
        return [type(t).__name__ for t in dataset.transform.transforms]

    assert "ColorJitter" not in ops(plain.dataset) and "RandomApply" not in ops(plain.dataset)
    assert {"ColorJitter", "RandomApply", "RandomHorizontalFlip"} <= set(ops(task.dataset))
    assert not {"ColorJitter", "RandomApply", "RandomHorizontalFlip"} & set(ops(val))


def test_encoder_batches_come_from_one_livestream_unless_asked_otherwise(world_readers):
    clips, frames, images = world_readers
    section = {"model": {"backbone": "resnet10", "backbone_width": 8, "image_size": 32, "num_frames": 2, "embed_dim": 16,
                         "pmd": False, "pfr": False}}
    task = build_encoder_task(TrainEncoderParams.from_mapping(section), clips, frames, images)
    lives = [parse_clip_id(c).live_id for c in task.dataset.clip_ids]
    assert list(task.sample_groups) == lives
    plain = build_encoder_task(TrainEncoderParams.from_mapping({**section, "data": {"batch_by": "none"}}), clips, frames, images)
    assert plain.sample_groups is None
    with pytest.raises(ConfigError, match="batch_by"):
        TrainEncoderParams.from_mapping({**section, "data": {"batch_by": "category"}})


def test_params_sections_round_trip_and_reject_typos():
    for cls in (TrainEncoderParams, TrainDetectorParams):
        default = cls()
        assert cls.from_mapping(to_mapping(default)) == default
        assert cls.from_mapping(None) == default
    with pytest.raises(ConfigError, match=r"train_encoder\.model.*unknown key.*'bakbone'"):
        TrainEncoderParams.from_mapping({"model": {"bakbone": "resnet18"}})
    with pytest.raises(ConfigError, match=r"train_detector\.train\.lr"):
        TrainDetectorParams.from_mapping({"train": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="amp"):
        TrainEncoderParams.from_mapping({"train": {"amp": "fp8"}})


def test_params_yaml_training_sections_parse():
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text()) or {}
    for name, cls in (("train_encoder", TrainEncoderParams), ("train_detector", TrainDetectorParams)):
        assert name in params, f"params.yaml has no {name!r} section (renamed?)"
        assert isinstance(from_mapping(cls, params[name], where=name), cls)
