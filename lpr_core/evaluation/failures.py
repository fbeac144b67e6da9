"""Why a query missed: the failure kinds of the report's error analysis.

A miss is a query whose rank-1 image is wrong. Its kind says which part of the pipeline to look at
first, judged on the T frames the encoder read, each frame in one state:

- ``no_box``: the frame has no crop box (the encoder saw the whole frame);
- ``wrong_box``: its crop box overlaps no ground-truth box of the frame with IoU >= 0.5 (the
  detector's own measure, ``detector/top_box_iou50``);
- ``right_box``: it does;
- not judged: a crop box on a frame without a ground-truth box.

The query's kind is the most common state of its frames (ties go to the earlier step of the
pipeline: no box before a wrong box before a right one): ``no_box``, ``wrong_box`` or
``right_box_wrong_image``. A query without any downloaded frame is ``no_frames``; one whose crop
boxes could not be judged at all is ``box_not_annotated``.

Which kinds can occur follows the crop mode (:func:`failure_kinds`): with full frames every miss
with frames is ``no_box``; with ground-truth crops (an oracle) a box is right by construction.

Everything here is plain Python and numpy, so the report can use it without torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FAILURE_KINDS",
    "FailureAnalysis",
    "KIND_TEXT",
    "RIGHT_BOX_IOU",
    "box_iou",
    "classify_miss",
    "classify_misses",
    "count_failures",
    "analyse_failures",
    "failure_kinds",
    "failure_metrics",
    "frame_iou",
    "frame_state",
    "select_failures",
]

#: Every failure kind, in pipeline order.
FAILURE_KINDS = ("no_frames", "no_box", "wrong_box", "right_box_wrong_image", "box_not_annotated")

#: A crop box is right when its IoU with a ground-truth box of the frame reaches this (as the
#: detector's ``top_box_iou50``).
RIGHT_BOX_IOU = 0.5

#: What each kind means and what to look at first (shown in the report).
KIND_TEXT: dict[str, str] = {
    "no_frames": "no frame of the clip was downloaded: fix the download of the test frames",
    "no_box": "the encoder saw whole frames (no crop box on most frames): the detector's recall "
    "or score threshold, or crops are off",
    "wrong_box": "the crop box misses the product (IoU < 0.5 on most frames): the detector's localisation",
    "right_box_wrong_image": "the crop box holds the product, yet another image ranks first: the "
    "encoder (embeddings, training data, similar products in the gallery)",
    "box_not_annotated": "crop boxes on frames without a ground-truth box: they cannot be judged",
}

_STATE_KIND = {"no_box": "no_box", "wrong_box": "wrong_box", "right_box": "right_box_wrong_image"}

Box = Sequence[float]


def failure_kinds(crops: str, *, have_ground_truth_boxes: bool = True) -> tuple[str, ...]:
    """The kinds a miss can have under a crop mode (``none``, ``ground_truth`` or ``detector``).

    Args:
        crops: the resolved crop mode of the evaluation.
        have_ground_truth_boxes: whether the test frames' ground-truth boxes were read (without
            them a detector box cannot be judged).
    """
    if crops == "none":
        return ("no_frames", "no_box")
    if crops == "ground_truth":
        return ("no_frames", "no_box", "right_box_wrong_image")
    if crops == "detector":
        if not have_ground_truth_boxes:
            return ("no_frames", "no_box", "box_not_annotated")
        return FAILURE_KINDS
    raise ValueError(f"crops must be none|ground_truth|detector, got {crops!r}")


def _union(boxes: Sequence[Box]) -> np.ndarray | None:
    if len(boxes) == 0:
        return None
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.array([arr[:, 0].min(), arr[:, 1].min(), arr[:, 2].max(), arr[:, 3].max()])


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (0.0 when both are empty)."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1) + max(0.0, bx2 - bx1) * max(0.0, by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def frame_iou(crop_boxes: Sequence[Box] | None, gt_boxes: Sequence[Box] | None) -> float | None:
    """The IoU of a frame's crop box (the union of its boxes, as the encoder crops) with its best
    matching ground-truth box; None when either is absent."""
    crop = _union(crop_boxes or [])
    if crop is None or not gt_boxes:
        return None
    return max(box_iou(crop, g) for g in gt_boxes)


def frame_state(
    crop_boxes: Sequence[Box] | None, gt_boxes: Sequence[Box] | None, iou: float = RIGHT_BOX_IOU
) -> str | None:
    """``no_box``, ``wrong_box`` or ``right_box`` for one frame; None when its crop box cannot be
    judged (no ground-truth box on the frame)."""
    if not crop_boxes:
        return "no_box"
    overlap = frame_iou(crop_boxes, gt_boxes)
    if overlap is None:
        return None
    return "right_box" if overlap >= iou else "wrong_box"


def classify_miss(
    frames: Sequence[tuple[Sequence[Box] | None, Sequence[Box] | None]], iou: float = RIGHT_BOX_IOU
) -> str:
    """The failure kind of a missed query from its frames' ``(crop_boxes, gt_boxes)`` pairs.

    The most common :func:`frame_state` wins, ties in pipeline order (``no_box``, ``wrong_box``,
    ``right_box``); no frame at all: ``no_frames``; only unjudged frames: ``box_not_annotated``.
    """
    if not frames:
        return "no_frames"
    counts = Counter(s for s in (frame_state(c, g, iou) for c, g in frames) if s is not None)
    if not counts:
        return "box_not_annotated"
    best = max(("no_box", "wrong_box", "right_box"), key=lambda s: counts[s])  # first of the ties
    return _STATE_KIND[best]


def classify_misses(
    ranks: Mapping[str, float],
    frame_indices: Mapping[str, Sequence[int]],
    crop_boxes: Mapping[tuple[str, int], Sequence[Box]] | None,
    gt_boxes: Mapping[tuple[str, int], Sequence[Box]] | None,
    iou: float = RIGHT_BOX_IOU,
) -> dict[str, str]:
    """The failure kind of every missed query (rank of its best ground-truth image above 1).

    Args:
        ranks: ``query_id -> rank`` (``inf``: not retrieved, e.g. no frames).
        frame_indices: ``query_id -> frame indices`` the encoder read (absent or empty: no frames).
        crop_boxes: ``(clip_id, frame_index) -> boxes`` the frames were cropped to; None: full frames.
        gt_boxes: ``(clip_id, frame_index) -> ground-truth boxes``; None: not available.
        iou: the IoU at which a crop box is right.

    Returns:
        ``query_id -> kind`` for the misses, in the order of ``ranks``.
    """
    crop_boxes = crop_boxes or {}
    gt_boxes = gt_boxes or {}
    out: dict[str, str] = {}
    for query_id, rank in ranks.items():
        if rank <= 1:
            continue
        keys = [(query_id, int(i)) for i in frame_indices.get(query_id, ())]
        out[query_id] = classify_miss([(crop_boxes.get(k), gt_boxes.get(k)) for k in keys], iou)
    return out


def count_failures(kinds: Mapping[str, str], applicable: Sequence[str]) -> dict[str, int]:
    """Misses per kind, every applicable kind present (0 when none), in ``applicable``'s order.

    Raises:
        ValueError: a miss has a kind that the crop mode cannot give (a classification bug).
    """
    counts = Counter(kinds.values())
    stray = set(counts) - set(applicable)
    if stray:
        raise ValueError(f"failure kinds {sorted(stray)} do not apply here (only {list(applicable)})")
    return {kind: counts[kind] for kind in applicable}


def failure_metrics(counts: Mapping[str, int], *, split: str = "test") -> dict[str, int]:
    """The counts as metrics: ``<split>/misses/<kind>``."""
    return {f"{split}/misses/{kind}": int(n) for kind, n in counts.items()}


def select_failures(kinds: Mapping[str, str], n: int, seed: int = 0) -> dict[str, list[str]]:
    """Up to ``n`` missed queries per kind to show: a seeded random sample, in query order.

    Returns:
        ``kind -> [query_id, ...]`` for the kinds that occur, in :data:`FAILURE_KINDS` order.
    """
    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[str]] = {}
    for query_id, kind in kinds.items():
        by_kind.setdefault(kind, []).append(query_id)
    out: dict[str, list[str]] = {}
    for kind in sorted(by_kind, key=FAILURE_KINDS.index):
        ids = by_kind[kind]
        picked = sorted(rng.choice(len(ids), size=min(n, len(ids)), replace=False).tolist())
        out[kind] = [ids[i] for i in picked]
    return out


_MODE_NOTE = {
    "none": "The encoder saw full frames (crops: none): no crop box, so every miss with frames is no_box.",
    "ground_truth": "The frames were cropped to their ground-truth boxes (crops: ground_truth, an oracle): "
    "a box is right by construction; no_box counts frames without an annotated box.",
    "detector": "The frames were cropped to the detector's boxes (crops: detector); a box is right at "
    "IoU >= 0.5 with a ground-truth box of the frame.",
}


@dataclass(frozen=True)
class FailureAnalysis:
    """The misses of an evaluation by failure kind, with what the report draws.

    Attributes:
        crops: the resolved crop mode (``none``, ``ground_truth`` or ``detector``).
        kinds: ``query_id -> kind`` of every miss (:func:`classify_misses`).
        counts: misses per applicable kind (:func:`count_failures`).
        note: how the kinds were judged under this crop mode (shown in the report).
        frame_indices: ``query_id -> frame indices`` the encoder read.
        crop_boxes: the frames' crop boxes (None: full frames).
        gt_boxes: the frames' ground-truth boxes (None: not available).
    """

    crops: str
    kinds: dict[str, str]
    counts: dict[str, int]
    note: str
    frame_indices: Mapping[str, Sequence[int]]
    crop_boxes: Mapping[tuple[str, int], Sequence[Box]] | None
    gt_boxes: Mapping[tuple[str, int], Sequence[Box]] | None


def analyse_failures(
    ranks: Mapping[str, float],
    frame_indices: Mapping[str, Sequence[int]],
    crops: str,
    crop_boxes: Mapping[tuple[str, int], Sequence[Box]] | None,
    gt_boxes: Mapping[tuple[str, int], Sequence[Box]] | None,
    iou: float = RIGHT_BOX_IOU,
) -> FailureAnalysis:
    """Classify the misses (:func:`classify_misses`) and count them per kind that applies under
    ``crops`` (:func:`failure_kinds`); arguments as there. ``crop_boxes`` is ignored for ``none``."""
    if crops == "none":
        crop_boxes = None
    kinds = classify_misses(ranks, frame_indices, crop_boxes, gt_boxes, iou)
    applicable = failure_kinds(crops, have_ground_truth_boxes=gt_boxes is not None)
    note = _MODE_NOTE[crops]
    if crops == "detector" and gt_boxes is None:
        note += " The test frames have no ground-truth box table: detector boxes are not judged."
    return FailureAnalysis(crops, kinds, count_failures(kinds, applicable), note, frame_indices, crop_boxes, gt_boxes)
