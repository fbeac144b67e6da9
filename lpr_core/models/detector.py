"""The product detector: a torchvision detection model with one class, "product".

Built from scratch by default (``weights: none``, ``weights_backbone: none``) with a small
backbone so CPU training is practical; local pretrained checkpoints can be loaded (nothing is
downloaded). :func:`detect` turns query frames into product crops (the best box, or the union of
the boxes above a score threshold), falling back to the full frame; :func:`evaluate_detector`
reports COCO mAP@0.5 and mAP@[.5:.95] through torchmetrics.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models import detection
from torchvision.models.detection import FCOS, FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import box_iou
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from lpr_core.data.datasets import sample_frame_positions
from lpr_core.data.transforms import crop_box, union_box
from lpr_core.ids import make_frame_id
from lpr_core.models.backbone import basic_resnet
from lpr_core.models.weights import load_state_dict_file, resolve_weights

__all__ = [
    "DETECTORS",
    "DetectorConfig",
    "Detection",
    "build_detector",
    "detect_boxes",
    "select_box",
    "query_frame_boxes",
    "detection_map",
    "top_box_hit_rate",
    "detect",
    "evaluate_detector",
    "coco_backend",
    "save_detector",
    "load_detector",
]

#: architecture -> classification backbone whose ImageNet weights fit its body. The
#: ``*_resnet18_fpn`` ones are built here around the project's ResNet-18 of any ``backbone_width``
#: with ``fpn_channels`` (small and fast from scratch on CPU; width 64 takes torchvision's
#: ResNet-18 ImageNet weights).
DETECTORS: dict[str, str | None] = {
    "fcos_resnet18_fpn": "resnet18",
    "fasterrcnn_resnet18_fpn": "resnet18",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "mobilenet_v3_large",
    "fasterrcnn_mobilenet_v3_large_fpn": "mobilenet_v3_large",
    "fasterrcnn_resnet50_fpn": "resnet50",
    "fasterrcnn_resnet50_fpn_v2": "resnet50",
    "retinanet_resnet50_fpn": "resnet50",
    "fcos_resnet50_fpn": "resnet50",
    "ssdlite320_mobilenet_v3_large": None,
}
_HEAD_KEYS = ("cls_score", "bbox_pred", "cls_logits", "classification_head", "box_predictor")


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's knobs (``model:`` of ``train_detector``).

    Attributes:
        arch: one of :data:`DETECTORS`.
        weights: ``none``, or a local detector checkpoint (path or torch hub cache name, e.g.
            ``COCO_V1``); class-specific head weights of another class count are skipped.
        weights_backbone: ``none``, or local ImageNet weights of the backbone (path or name).
        min_size: the detector resizes frames so their smaller side is this (not SSD).
        max_size: ... and their larger side at most this.
        detections_per_image: detections kept per frame.
        rpn_proposals: region proposals kept per frame, in training and at inference (Faster
            R-CNN; torchvision's defaults of 2000 and 1000 make the box head the CPU bottleneck).
        rois_per_image: proposals sampled per frame for the box head loss (Faster R-CNN;
            torchvision: 512).
        box_head_dim: width of the Faster R-CNN box head's two MLP layers (torchvision: 1024,
            12.8M parameters; 256 is 4x smaller for CPU demos). Another width than 1024 cannot
            take the box head of a full detector checkpoint.
        score_threshold: boxes below this score are ignored by :func:`detect`.
        crop_mode: ``top`` (best box) or ``union`` (union of boxes over the threshold).
        box_padding: context kept around a crop, as a fraction of the box size.
        backbone_width: first-stage channels of the ResNet-18 of the ``*_resnet18_fpn`` archs.
        fpn_channels: feature pyramid channels of the ``*_resnet18_fpn`` archs.
    """

    arch: str = "fcos_resnet18_fpn"
    weights: str = "none"
    weights_backbone: str = "none"
    min_size: int = 128
    max_size: int = 256
    detections_per_image: int = 10
    rpn_proposals: int = 300
    rois_per_image: int = 64
    box_head_dim: int = 256
    score_threshold: float = 0.3
    crop_mode: str = "top"
    box_padding: float = 0.1
    backbone_width: int = 32
    fpn_channels: int = 64

    def __post_init__(self) -> None:
        if self.arch not in DETECTORS:
            raise ValueError(f"unknown detector arch {self.arch!r}; choose one of {sorted(DETECTORS)}")
        if self.crop_mode not in ("top", "union"):
            raise ValueError(f"crop_mode must be 'top' or 'union', got {self.crop_mode!r}")


def build_detector(config: DetectorConfig) -> nn.Module:
    """Build the one-class ("product") detector, loading local weights when configured."""
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": 2}
    if config.arch.startswith("ssd"):
        kwargs["detections_per_img"] = config.detections_per_image
    else:
        kwargs.update(min_size=config.min_size, max_size=config.max_size)
        if config.arch.startswith("fasterrcnn"):
            kwargs.update(
                box_detections_per_img=config.detections_per_image,
                rpn_pre_nms_top_n_train=config.rpn_proposals,
                rpn_post_nms_top_n_train=config.rpn_proposals,
                rpn_pre_nms_top_n_test=config.rpn_proposals,
                rpn_post_nms_top_n_test=config.rpn_proposals,
                box_batch_size_per_image=config.rois_per_image,
            )
        else:
            kwargs["detections_per_img"] = config.detections_per_image
    slim = config.arch.endswith("_resnet18_fpn")  # built with its box head at box_head_dim already
    model = _build_resnet18_fpn(config, kwargs) if slim else getattr(detection, config.arch)(**kwargs)
    if config.arch.startswith("fasterrcnn") and config.box_head_dim != 1024 and not slim:
        in_features = model.roi_heads.box_head.fc6.in_features
        model.roi_heads.box_head = TwoMLPHead(in_features, config.box_head_dim)
        model.roi_heads.box_predictor = FastRCNNPredictor(config.box_head_dim, 2)
    backbone_path = resolve_weights(config.weights_backbone, DETECTORS[config.arch] or config.arch)
    if backbone_path is not None:
        _load_backbone(model, backbone_path, config.arch)
    path = resolve_weights(config.weights, config.arch)
    if path is not None:
        _load_detector_weights(model, path)
    return model


def _build_resnet18_fpn(config: DetectorConfig, kwargs: dict[str, Any]) -> nn.Module:
    """FCOS or Faster R-CNN (torchvision) on the project's ResNet-18 of ``backbone_width`` with
    an FPN of ``fpn_channels`` over its last three stages. Anchor sizes suit frames whose
    smaller side is ~100-300 px (FCOS: one point per location and level, P3-P7)."""
    w, ch = config.backbone_width, config.fpn_channels
    body = basic_resnet("resnet18", w)
    fcos = config.arch.startswith("fcos")
    backbone = BackboneWithFPN(
        body, {"layer2": "0", "layer3": "1", "layer4": "2"}, [2 * w, 4 * w, 8 * w], ch,
        extra_blocks=LastLevelP6P7(ch, ch) if fcos else LastLevelMaxPool(),
    )
    kwargs = {k: v for k, v in kwargs.items() if k not in ("weights", "weights_backbone")}
    if fcos:
        anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
        return FCOS(backbone, anchor_generator=anchors, **kwargs)
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 4)
    return FasterRCNN(backbone, rpn_anchor_generator=anchors, representation_size=config.box_head_dim, **kwargs)


def _load_backbone(model: nn.Module, path: Path, arch: str) -> None:
    if DETECTORS[arch] is None:
        raise ValueError(f"weights_backbone is not supported for {arch}: use a full detector checkpoint (weights)")
    body = model.backbone.body
    state = {k.removeprefix("features."): v for k, v in load_state_dict_file(path).items()}
    own = body.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in fitting and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"backbone weights {path} do not fit {arch}: {len(missing)} tensors missing, e.g. {missing[:5]}")
    body.load_state_dict(fitting, strict=False)


def _load_detector_weights(model: nn.Module, path: Path) -> None:
    state = load_state_dict_file(path)
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    skipped = [k for k in mismatched if any(h in k for h in _HEAD_KEYS)]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched if k not in skipped]
    if wrong:
        raise ValueError(f"detector weights {path} do not fit: shapes differ for {wrong[:5]}")
    for k in skipped:  # class-specific heads of a checkpoint with another class count
        state.pop(k)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise ValueError(f"detector weights {path} do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


class Detection(NamedTuple):
    """A product crop of a frame: the crop, the box it came from (None: the full frame) and the
    box's score (None for the fallback)."""

    crop: torch.Tensor
    box: tuple[float, float, float, float] | None
    score: float | None


@torch.no_grad()
def detect_boxes(
    model: nn.Module,
    frames: Sequence[torch.Tensor],
    score_threshold: float = 0.3,
    mode: str = "top",
    batch_size: int = 16,
) -> list[tuple[tuple[float, float, float, float] | None, float | None]]:
    """The product box of each frame: ``(box, score)``, or ``(None, None)`` when no detection
    reaches ``score_threshold``.

    Args:
        model: a detector from :func:`build_detector`.
        frames: float images ``[3, H, W]`` in [0, 1].
        score_threshold: minimum detection score.
        mode: ``top`` keeps the highest-scoring box; ``union`` the union of every box over the
            threshold (its score is the best one).
        batch_size: frames per forward pass.
    """
    if mode not in ("top", "union"):
        raise ValueError(f"mode must be 'top' or 'union', got {mode!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    results: list[tuple[tuple[float, float, float, float] | None, float | None]] = []
    try:
        for start in range(0, len(frames), batch_size):
            chunk = [f.to(device) for f in frames[start : start + batch_size]]
            for out in model(chunk):
                results.append(select_box(out["boxes"].cpu(), out["scores"].cpu(), score_threshold, mode))
    finally:
        model.train(was_training)
    return results


def select_box(
    boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float, mode: str = "top"
) -> tuple[tuple[float, float, float, float] | None, float | None]:
    """Choose a frame's product box among its detections.

    Args:
        boxes: ``[N, 4]`` xyxy.
        scores: ``[N]``.
        score_threshold: detections under it are ignored.
        mode: ``top`` (highest score) or ``union`` (union of the kept boxes, best score).

    Returns:
        ``(box, score)``, or ``(None, None)`` when nothing reaches the threshold.
    """
    if mode not in ("top", "union"):
        raise ValueError(f"mode must be 'top' or 'union', got {mode!r}")
    keep = scores >= score_threshold
    boxes, scores = boxes[keep], scores[keep]
    if len(scores) == 0:
        return None, None
    if mode == "top":
        best = int(scores.argmax())
        return tuple(float(v) for v in boxes[best]), float(scores[best])
    return union_box(boxes.tolist()), float(scores.max())


def detection_map(preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]], prefix: str = "val/") -> dict[str, float]:
    """COCO box mAP of per-image predictions (``boxes``, ``scores``, ``labels``) against targets
    (``boxes``, ``labels``), with torchmetrics' ``MeanAveragePrecision``.

    Returns:
        ``{prefix}map_50`` (mAP@0.5), ``{prefix}map`` (mAP@[.5:.95]), ``{prefix}map_75``,
        ``{prefix}mar_10``.
    """
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=coco_backend())
    metric.update(preds, targets)
    result = metric.compute()
    return {f"{prefix}{k}": float(result[k]) for k in ("map_50", "map", "map_75", "mar_10")}


def detect(
    model: nn.Module,
    frames: Sequence[torch.Tensor],
    score_threshold: float = 0.3,
    mode: str = "top",
    padding: float = 0.0,
    batch_size: int = 16,
) -> list[Detection]:
    """Product crops of query frames (see :func:`detect_boxes`); a frame without a detection
    over the threshold is returned whole (``box=None``)."""
    found = detect_boxes(model, frames, score_threshold, mode, batch_size)
    return [Detection(crop_box(frame, box, padding), box, score) for frame, (box, score) in zip(frames, found)]


def query_frame_boxes(
    model: nn.Module,
    clip_ids: Sequence[str],
    frames: Any,
    *,
    num_frames: int,
    score_threshold: float = 0.3,
    mode: str = "top",
    batch_size: int = 16,
) -> dict[tuple[str, int], list[tuple[float, float, float, float]]]:
    """Detector boxes of the frames a :class:`~lpr_core.data.datasets.QueryClipDataset` with
    ``num_frames`` will read (T uniformly spaced frames per clip), as its ``boxes`` mapping.

    Args:
        model: the detector.
        clip_ids: query clips.
        frames: a :class:`~lpr_core.data.datasets.ManifestImages` of the test frames.
        num_frames: T of the query dataset.
        score_threshold: minimum detection score; frames without a detection get no entry (the
            dataset then uses the full frame).
        mode: ``top`` or ``union`` (see :func:`select_box`).
        batch_size: frames per forward pass.

    Returns:
        ``(clip_id, frame_index) -> [box]`` in downloaded pixels.
    """
    keys = []
    for clip_id in clip_ids:
        available = frames.clip_frames(clip_id)
        if available:
            keys += [(clip_id, available[p]) for p in sample_frame_positions(len(available), num_frames, "uniform")]
    out: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
    for start in tqdm(range(0, len(keys), batch_size), desc="detect", leave=False, disable=None):
        chunk = keys[start : start + batch_size]
        images = [TF.to_dtype(TF.pil_to_tensor(frames.open(make_frame_id(*k))), torch.float32, scale=True) for k in chunk]
        for key, (box, _) in zip(chunk, detect_boxes(model, images, score_threshold, mode, batch_size)):
            if box is not None:
                out[key] = [box]
    return out


def coco_backend() -> str:
    """The COCO evaluation backend torchmetrics can use here (``pycocotools`` or
    ``faster_coco_eval``), or a clear error naming the package to install."""
    for module, backend in (("pycocotools", "pycocotools"), ("faster_coco_eval", "faster_coco_eval")):
        if importlib.util.find_spec(module) is not None:
            return backend
    raise ImportError(
        "detection mAP needs a COCO backend for torchmetrics: install 'pycocotools' "
        "(or 'faster-coco-eval') in the environment"
    )


def top_box_hit_rate(
    preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]], score_threshold: float, iou: float = 0.5
) -> float:
    """Share of frames whose crop box is right: the top detection over ``score_threshold`` (the
    box :func:`detect` crops with ``crop_mode: top``) overlaps a ground-truth box with IoU at
    least ``iou``. A frame without such a detection counts as a miss; 0.0 for no frames.
    """
    hits = 0
    for pred, target in zip(preds, targets, strict=True):
        box, _ = select_box(pred["boxes"], pred["scores"], score_threshold, "top")
        gt = target["boxes"]
        if box is not None and len(gt) and float(box_iou(torch.tensor([box]), gt.float()).max()) >= iou:
            hits += 1
    return hits / len(preds) if preds else 0.0


@torch.no_grad()
def evaluate_detector(
    model: nn.Module, loader, device: str | torch.device = "cpu", prefix: str = "val/", score_threshold: float = 0.3
) -> dict[str, float]:
    """COCO box mAP of the detector over a loader of ``(images, targets)`` lists, and how often
    its crop box is right.

    Returns:
        ``{prefix}map_50`` (mAP@0.5), ``{prefix}map`` (mAP@[.5:.95]), ``{prefix}map_75``,
        ``{prefix}mar_10`` (recall with 10 detections) and ``{prefix}top_box_iou50``
        (:func:`top_box_hit_rate` at ``score_threshold``).
    """
    coco_backend()  # fail before the forward passes when no backend is installed
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    preds, gts = [], []
    try:
        for images, targets in tqdm(loader, desc="detector eval", leave=False, disable=None):
            outputs = model([im.to(device) for im in images])
            preds += [{k: o[k].cpu() for k in ("boxes", "scores", "labels")} for o in outputs]
            gts += [{"boxes": t["boxes"].as_subclass(torch.Tensor).cpu(), "labels": t["labels"].cpu()} for t in targets]
    finally:
        model.train(was_training)
    return {**detection_map(preds, gts, prefix), f"{prefix}top_box_iou50": top_box_hit_rate(preds, gts, score_threshold)}


def save_detector(model: nn.Module, config: DetectorConfig, path: str | Path) -> Path:
    """Write ``{"config", "state_dict"}`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"config": dataclasses.asdict(config), "state_dict": state}, tmp)
    os.replace(tmp, path)
    return path


def load_detector(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, DetectorConfig]:
    """Rebuild a detector saved by :func:`save_detector`, in eval mode."""
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(obj, dict) or "config" not in obj or "state_dict" not in obj:
        raise ValueError(f"{path} is not a detector file written by save_detector")
    config = DetectorConfig(**{**obj["config"], "weights": "none", "weights_backbone": "none"})
    model = build_detector(config)
    model.load_state_dict(obj["state_dict"])
    return model.eval(), config
