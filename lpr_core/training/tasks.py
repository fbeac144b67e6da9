"""Task adapters of the training engine, and the ``params.yaml`` sections of the two training
stages (``train_encoder``, ``train_detector``) as frozen dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from lpr_core.config import from_mapping
from lpr_core.data.datasets import (
    ClipPairDataset,
    DetectionDataset,
    ManifestImages,
    detection_collate,
    videoinfo_frame_boxes,
)
from lpr_core.data.transforms import build_detection_transform, build_eval_transform, build_train_transform
from lpr_core.ids import parse_clip_id
from lpr_core.models.detector import DetectorConfig, build_detector
from lpr_core.models.encoder import EncoderConfig, RiceModel, build_encoder
from lpr_core.training.config import DetectorTrainConfig, EncoderTrainConfig

__all__ = [
    "EncoderDataConfig",
    "TrainEncoderParams",
    "DetectorDataConfig",
    "TrainDetectorParams",
    "EncoderTask",
    "DetectorTask",
    "build_encoder_task",
    "build_detector_task",
    "encoder_eval_transform",
    "split_frame_boxes",
]


@dataclass(frozen=True)
class EncoderDataConfig:
    """Data knobs of the encoder (``data:`` of ``train_encoder``).

    Attributes:
        crop_boxes: crop frames to their ground-truth product boxes (full frame without one).
        box_padding: context kept around a box, as a fraction of its size.
        box_jitter: random move and rescale of each training box, as a share of its size, so
            the encoder learns from crops as loose as the test-time detector's (0: exact boxes).
        sampling: frames of a training clip: ``random_segment`` or ``uniform``.
        crop_scale_min: smallest area share of the random resized crop.
        color_jitter: brightness/contrast/saturation jitter strength (0: off).
        hflip: random horizontal flips.
        batch_by: ``livestream``: each batch holds clips of one livestream (hard in-batch
            negatives, as in the LPR protocol's per-livestream galleries); ``none``: random
            batches.
    """

    crop_boxes: bool = True
    box_padding: float = 0.1
    box_jitter: float = 0.2
    sampling: str = "random_segment"
    crop_scale_min: float = 0.6
    color_jitter: float = 0.3
    hflip: bool = True
    batch_by: str = "livestream"

    def __post_init__(self) -> None:
        if self.batch_by not in ("livestream", "none"):
            raise ValueError(f"batch_by must be 'livestream' or 'none', got {self.batch_by!r}")


@dataclass(frozen=True)
class TrainEncoderParams:
    """The ``train_encoder`` section of ``params.yaml``."""

    model: EncoderConfig = field(default_factory=EncoderConfig)
    data: EncoderDataConfig = field(default_factory=EncoderDataConfig)
    train: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> TrainEncoderParams:
        """Build from the YAML section; unknown keys or wrong types raise
        ``lpr_core.config.ConfigError`` naming ``train_encoder.<part>.<key>``."""
        return from_mapping(cls, section, where="train_encoder")


@dataclass(frozen=True)
class DetectorDataConfig:
    """Data knobs of the detector (``data:`` of ``train_detector``).

    Attributes:
        val_fraction: share of annotated training frames held out (by clip) for mAP.
        hflip: random horizontal flips in training.
        color_jitter: brightness, contrast and saturation jitter in training (hue: a third of it).
        crop_scale_min: smallest side share of the random crops around the boxes applied to half
            the training frames (1.0: no crops).
    """

    val_fraction: float = 0.1
    hflip: bool = True
    color_jitter: float = 0.3
    crop_scale_min: float = 0.5


@dataclass(frozen=True)
class TrainDetectorParams:
    """The ``train_detector`` section of ``params.yaml``."""

    model: DetectorConfig = field(default_factory=DetectorConfig)
    data: DetectorDataConfig = field(default_factory=DetectorDataConfig)
    train: DetectorTrainConfig = field(default_factory=DetectorTrainConfig)

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> TrainDetectorParams:
        """Build from the YAML section; unknown keys or wrong types raise
        ``lpr_core.config.ConfigError`` naming ``train_detector.<part>.<key>``."""
        return from_mapping(cls, section, where="train_detector")


def _to(x: Any, device: torch.device, channels_last: bool = False) -> Any:
    if isinstance(x, torch.Tensor):
        x = x.to(device, non_blocking=True)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
    if isinstance(x, dict):
        return {k: _to(v, device, channels_last) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_to(v, device, channels_last) for v in x)
    return x


class EncoderTask:
    """The encoder on (clip, shop image) pairs: losses from :meth:`RiceModel.forward`.

    ``sample_groups`` (a group label per dataset sample, or None) asks the engine for
    single-group batches.
    """

    collate_fn = None

    def __init__(self, model: RiceModel, dataset: Any, sample_groups: Any = None) -> None:
        self.model, self.dataset, self.sample_groups = model, dataset, sample_groups

    def move(self, batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
        """Move the batch's tensors to ``device`` (images channels-last when asked)."""
        return _to(batch, device, channels_last)

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"loss", "icl_loss", ...}`` of one batch."""
        return model(batch["frames"], batch["frame_mask"], batch["image"], batch.get("label"))


class DetectorTask:
    """The torchvision detector on frames with boxes: its loss dict, summed into ``loss``."""

    collate_fn = staticmethod(detection_collate)

    def __init__(self, model: nn.Module, dataset: Any) -> None:
        self.model, self.dataset = model, dataset

    def move(self, batch: tuple[list, list], device: torch.device, channels_last: bool) -> tuple[list, list]:
        """Move images and target tensors to ``device``."""
        images, targets = batch
        return [im.to(device, non_blocking=True) for im in images], [_to(t, device) for t in targets]

    def step(self, model: nn.Module, batch: tuple[list, list]) -> dict[str, torch.Tensor]:
        """``{"loss", ...}`` of one batch: the sum and the detector's own losses (Faster R-CNN:
        ``loss_classifier``, ``loss_box_reg``, ...; FCOS: ``classification``, ``bbox_regression``,
        ``bbox_ctrness``)."""
        images, targets = batch
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        losses = model(images, targets)
        return {"loss": sum(losses.values()), **losses}


def build_encoder_task(
    params: TrainEncoderParams, clips, frames: ManifestImages, images: ManifestImages
) -> EncoderTask:
    """The encoder task over downloaded training data.

    Args:
        params: the ``train_encoder`` section.
        clips: training clips, a ``VIDEOINFO_SCHEMA`` table (boxes in original pixels).
        frames: reader of the training frame manifest.
        images: reader of the training shop image manifest.
    """
    model = build_encoder(params.model)
    d, m = params.data, params.model
    train_tf = build_train_transform(
        m.image_size, mean=model.mean, std=model.std, scale=(d.crop_scale_min, 1.0), color_jitter=d.color_jitter, hflip=d.hflip
    )
    dataset = ClipPairDataset(
        clips,
        frames,
        images,
        num_frames=m.num_frames,
        frame_transform=train_tf,
        image_transform=train_tf,
        sampling=d.sampling,
        crop_boxes=d.crop_boxes,
        box_padding=d.box_padding,
        box_jitter=d.box_jitter,
    )
    groups = [parse_clip_id(c).live_id for c in dataset.clip_ids] if d.batch_by == "livestream" else None
    return EncoderTask(model, dataset, groups)


def encoder_eval_transform(params: TrainEncoderParams, model: RiceModel):
    """The evaluation transform matching a trained encoder (size and normalisation)."""
    return build_eval_transform(params.model.image_size, mean=model.mean, std=model.std)


def split_frame_boxes(frame_boxes, val_fraction: float, seed: int = 0):
    """Split a ``FRAME_BOXES_SCHEMA`` table by clip into (train, val) tables; clips are assigned
    by a seeded shuffle, so every frame of a clip lands on one side."""
    clip_ids = sorted(set(frame_boxes.column("clip_id").to_pylist()))
    order = np.random.default_rng(seed).permutation(len(clip_ids))
    n_val = int(round(val_fraction * len(clip_ids)))
    if val_fraction > 0 and len(clip_ids) > 1:
        n_val = min(max(1, n_val), len(clip_ids) - 1)
    val_ids = pa.array([clip_ids[i] for i in order[:n_val]], type=pa.string())
    is_val = pc.is_in(frame_boxes.column("clip_id"), value_set=val_ids)
    return frame_boxes.filter(pc.invert(is_val)), frame_boxes.filter(is_val)


def build_detector_task(params: TrainDetectorParams, clips, frames: ManifestImages) -> tuple[DetectorTask, DetectionDataset | None]:
    """The detector task over the annotated frames of the training clips, and a held-out
    validation dataset (None when ``val_fraction`` is 0).

    Args:
        params: the ``train_detector`` section.
        clips: training clips, a ``VIDEOINFO_SCHEMA`` table (boxes in original pixels).
        frames: reader of the training frame manifest.
    """
    train_boxes, val_boxes = split_frame_boxes(videoinfo_frame_boxes(clips), params.data.val_fraction, params.train.seed)
    model = build_detector(params.model)
    d = params.data
    train = DetectionDataset(train_boxes, frames, transform=build_detection_transform(
        train=True, hflip=d.hflip, color_jitter=d.color_jitter, crop_scale_min=d.crop_scale_min))
    val = DetectionDataset(val_boxes, frames, transform=build_detection_transform(train=False)) if val_boxes.num_rows else None
    return DetectorTask(model, train), val
