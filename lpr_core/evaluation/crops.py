"""Which part of a query frame the encoder sees: the crop mode, and the boxes it needs.

Frames are cropped to the product as the encoder was trained (``evaluate.crops``): ``auto``
follows the encoder checkpoint (trained with ``crop_boxes``: detector boxes, else full frames),
``detector`` uses the boxes of ``<detector>/detector.pt`` (a frame without a detection stays
whole), ``ground_truth`` the annotated test boxes (an oracle, for comparison), ``none`` full
frames.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lpr_core.data.datasets import ManifestImages, frame_boxes_lookup
from lpr_core.evaluation.params import CROP_MODES
from lpr_core.inputs import StageInputError, read_table
from lpr_core.models.detector import load_detector, query_frame_boxes

__all__ = ["DETECTOR_FILE", "ground_truth_boxes", "trained_crop_settings", "resolve_crops", "query_boxes"]

#: The detector checkpoint inside a detector directory (written by the train_detector stage).
DETECTOR_FILE = "detector.pt"


def _find_key(obj: Any, key: str, depth: int = 4) -> Any:
    """The value of ``key`` in a nested mapping, breadth first (None when absent)."""
    level = [obj]
    for _ in range(depth):
        nxt = []
        for m in level:
            if isinstance(m, Mapping):
                if key in m:
                    return m[key]
                nxt += [v for v in m.values() if isinstance(v, Mapping)]
        level = nxt
    return None


def trained_crop_settings(encoder_path: str | os.PathLike[str]) -> tuple[bool | None, float | None, str]:
    """Whether the encoder was trained on box crops, with which padding, and where that was read.

    Looked up as ``crop_boxes`` / ``box_padding`` (at any depth, e.g. ``{"data": {"crop_boxes":
    true}}``) in the checkpoint's ``extra`` record, then in the JSON files beside the checkpoint
    (the training summary), in name order.

    Returns:
        ``(crop_boxes, box_padding, source)``; ``(None, None, "")`` when nothing records it.
    """
    path = Path(encoder_path)
    sources: list[tuple[str, Any]] = []
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(obj, Mapping):
        sources.append((f"{path} (extra)", obj.get("extra")))
    for js in sorted(path.parent.glob("*.json")):
        try:
            sources.append((str(js), json.loads(js.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    for where, record in sources:
        crop = _find_key(record, "crop_boxes")
        if isinstance(crop, bool):
            padding = _find_key(record, "box_padding")
            number = isinstance(padding, int | float) and not isinstance(padding, bool)
            return crop, float(padding) if number else None, where
    return None, None, ""


def resolve_crops(requested: str, trained: bool | None) -> str:
    """The crop mode to use: ``requested`` unless ``auto``, which follows training (detector boxes
    for an encoder trained on box crops, full frames otherwise or when unknown)."""
    if requested not in CROP_MODES:
        raise ValueError(f"crops must be one of {'|'.join(CROP_MODES)}, got {requested!r}")
    if requested != "auto":
        return requested
    return "detector" if trained else "none"


def ground_truth_boxes(
    prepared: str | os.PathLike[str], frames: ManifestImages, *, required: bool = True
) -> dict[tuple[str, int], list] | None:
    """The annotated boxes of the downloaded test frames, ``(clip_id, frame_index) -> boxes`` in
    downloaded pixels, from ``<prepared>/test_frame_boxes.parquet``.

    Args:
        prepared: the prepare stage's output.
        frames: reader of the test frame manifest.
        required: raise when the table is missing; otherwise return None.

    Raises:
        StageInputError: the table is missing (``required``) or malformed.
    """
    path = Path(prepared) / "test_frame_boxes.parquet"
    if not required and not path.is_file():
        return None
    return frame_boxes_lookup(read_table(path, ["clip_id", "frame_index", "boxes"]), frames)


def query_boxes(
    mode: str,
    clip_ids: Sequence[str],
    frames: ManifestImages,
    *,
    prepared: str | os.PathLike[str],
    detector_dir: str | os.PathLike[str] | None,
    num_frames: int,
    score_threshold: float | None = None,
    batch_size: int = 16,
    device: Any = "cpu",
) -> tuple[dict[tuple[str, int], list] | None, dict[str, Any]]:
    """The crop boxes of the query frames for ``mode`` (None: full frames) and facts to log.

    ``detector``: the boxes of ``<detector_dir>/detector.pt`` on the T frames each clip will use
    (``score_threshold`` None: the detector's own); ``ground_truth``: the annotated boxes of
    ``<prepared>/test_frame_boxes.parquet``.

    Raises:
        StageInputError: the detector checkpoint or the box table is missing.
    """
    if mode == "none":
        return None, {}
    if mode == "ground_truth":
        boxes = ground_truth_boxes(prepared, frames) or {}
        return boxes, {"frames_with_box": len(boxes)}
    if detector_dir is None:
        raise StageInputError("crops 'detector' needs --detector")
    path = Path(detector_dir) / DETECTOR_FILE
    if not path.is_file():
        raise StageInputError(f"{path}: detector checkpoint missing (run the train_detector stage)")
    model, config = load_detector(path)
    model.to(device)
    threshold = config.score_threshold if score_threshold is None else score_threshold
    boxes = query_frame_boxes(
        model,
        clip_ids,
        frames,
        num_frames=num_frames,
        score_threshold=threshold,
        mode=config.crop_mode,
        batch_size=batch_size,
    )
    return boxes, {"frames_with_box": len(boxes), "score_threshold": threshold, "crop_mode": config.crop_mode}
