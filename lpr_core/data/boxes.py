"""Map product boxes between original and downloaded (img2dataset ``keep_ratio``) coordinates.

LPR4M boxes are ``[x1, y1, x2, y2]`` in pixels of the original frame. The download stage resizes
every frame with img2dataset's ``keep_ratio`` mode: the smaller side becomes ``image_size`` (unless
``resize_only_if_bigger`` and the image is already smaller), the other side is scaled by the same
factor and rounded. The manifest records both sizes; because of the rounding, the exact mapping
uses one factor per axis: ``sx = width / original_width``, ``sy = height / original_height``.

Coordinates are continuous (a box edge lies between pixels), so scaling is exact for edges.
Everything here is vectorised: sizes are scalars or arrays broadcastable against the boxes'
leading dimensions.

Boxes past the frame edge (a product held at the edge of the picture, annotated whole) are
clipped to their frame once, by the ``prepare`` stage, with :func:`clip_to_frame`; the same
function tells the ``validate`` stage which boxes run past the edge, which keep no area once
clipped and what share of each lies outside, so both stages count the same boxes.
:func:`boxes_to_downloaded` clamps again only to absorb float rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "keep_ratio_size",
    "scale_factors",
    "boxes_to_downloaded",
    "boxes_to_original",
    "FrameClip",
    "clip_to_frame",
]


def _positive(name: str, value: ArrayLike) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    bad = ~(arr > 0)  # also catches NaN
    if bad.any():
        where = np.argwhere(bad)[0].tolist() if arr.ndim else []
        shown = arr[tuple(where)] if arr.ndim else arr
        raise ValueError(f"{name} must be positive, got {shown!r} at index {where}")
    return arr


def keep_ratio_size(
    original_width: ArrayLike,
    original_height: ArrayLike,
    image_size: int,
    resize_only_if_bigger: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The size img2dataset's ``keep_ratio`` resize gives an image, computed like img2dataset.

    img2dataset (``Resizer``, albumentations ``SmallestMaxSize``) computes
    ``scale = image_size / min(h, w)`` and ``max(1, round(side * scale))`` for each side (round
    half to even). With ``resize_only_if_bigger`` an image whose smaller side is at most
    ``image_size`` keeps its size.

    Args:
        original_width: original widths, shape ``(...)``.
        original_height: original heights, broadcastable with ``original_width``.
        image_size: img2dataset's ``image_size``.
        resize_only_if_bigger: img2dataset's ``resize_only_if_bigger``.

    Returns:
        ``(width, height)``, int64 arrays of the broadcast shape.
    """
    ow = _positive("original_width", original_width)
    oh = _positive("original_height", original_height)
    ow, oh = np.broadcast_arrays(ow, oh)
    smaller = np.minimum(ow, oh)
    scale = image_size / smaller
    width = np.maximum(1, np.round(ow * scale)).astype(np.int64)
    height = np.maximum(1, np.round(oh * scale)).astype(np.int64)
    if resize_only_if_bigger:
        keep = smaller <= image_size
        width = np.where(keep, ow.astype(np.int64), width)
        height = np.where(keep, oh.astype(np.int64), height)
    return width, height


def scale_factors(
    original_width: ArrayLike,
    original_height: ArrayLike,
    width: ArrayLike,
    height: ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis factors from original to downloaded pixels: ``(width / ow, height / oh)``.

    Args:
        original_width, original_height: original sizes (the manifest's ``original_*``).
        width, height: downloaded sizes (the manifest's ``width`` / ``height``).

    Returns:
        ``(sx, sy)`` float64 arrays of the broadcast shape.

    Raises:
        ValueError: when a size is not positive (e.g. a failed download with null sizes).
    """
    return (
        _positive("width", width) / _positive("original_width", original_width),
        _positive("height", height) / _positive("original_height", original_height),
    )


def _apply(boxes: ArrayLike, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4) as [x1, y1, x2, y2], got {b.shape}")
    factors = np.stack(np.broadcast_arrays(sx, sy, sx, sy), axis=-1)
    return b * factors


def boxes_to_downloaded(
    boxes: ArrayLike,
    original_width: ArrayLike,
    original_height: ArrayLike,
    width: ArrayLike,
    height: ArrayLike,
    clip: bool = True,
) -> np.ndarray:
    """Map boxes from original-frame pixels to downloaded-image pixels.

    Args:
        boxes: ``(..., 4)`` boxes ``[x1, y1, x2, y2]`` in original pixels.
        original_width, original_height: original sizes, broadcastable to ``boxes.shape[:-1]``
            (one per box, or one per frame with boxes of shape ``(frames, boxes, 4)`` and sizes
            of shape ``(frames, 1)``).
        width, height: downloaded sizes, same broadcasting.
        clip: clamp the result to ``[0, width] x [0, height]``.

    Returns:
        ``(..., 4)`` float32 boxes in downloaded pixels.

    Raises:
        ValueError: on a box array whose last dimension is not 4 or a non-positive size.
    """
    sx, sy = scale_factors(original_width, original_height, width, height)
    out = _apply(boxes, sx, sy)
    if clip:
        w = np.asarray(width, dtype=np.float64)
        h = np.asarray(height, dtype=np.float64)
        limits = np.stack(np.broadcast_arrays(w, h, w, h), axis=-1)
        out = np.clip(out, 0.0, limits)
    return out.astype(np.float32)


def boxes_to_original(
    boxes: ArrayLike,
    original_width: ArrayLike,
    original_height: ArrayLike,
    width: ArrayLike,
    height: ArrayLike,
) -> np.ndarray:
    """Map boxes from downloaded-image pixels back to original-frame pixels.

    The inverse of :func:`boxes_to_downloaded` (without clipping); arguments as there.

    Returns:
        ``(..., 4)`` float32 boxes in original pixels.
    """
    sx, sy = scale_factors(original_width, original_height, width, height)
    return _apply(boxes, 1.0 / sx, 1.0 / sy).astype(np.float32)


class FrameClip(NamedTuple):
    """Boxes clipped to their frames, and what clipping did (see :func:`clip_to_frame`).

    Attributes:
        boxes: ``(n, 4)`` float64 boxes inside ``[0, width] x [0, height]``; a box whose frame
            size is unknown (NaN) is left as it was.
        known: ``(n,)`` whether the frame size is known (positive and finite), so the box was checked.
        past_edge: ``(n,)`` the box runs past the frame edge (clipping moved at least one side).
        keeps_area: ``(n,)`` the clipped box still has a positive width and height.
        outside_fraction: ``(n,)`` the share of the box's area outside the frame (0 inside, 1
            wholly outside); NaN for an unknown frame size or a box with no area of its own.
    """

    boxes: np.ndarray
    known: np.ndarray
    past_edge: np.ndarray
    keeps_area: np.ndarray
    outside_fraction: np.ndarray


def clip_to_frame(boxes: ArrayLike, width: ArrayLike, height: ArrayLike) -> FrameClip:
    """Clip boxes to their frames and say how much of each lay outside.

    Args:
        boxes: ``(n, 4)`` boxes ``[x1, y1, x2, y2]`` in pixels of their frames (original pixels
            for LPR4M annotations).
        width, height: the frames' sizes, scalars or ``(n,)``; NaN (or not positive) where a
            frame's size is unknown (a frame that did not download): its boxes are not checked.

    Returns:
        A :class:`FrameClip`. Exact: no tolerance, a box whose edge lies on the frame border is
        inside; a box past the edge by any amount is counted as clipped.

    Raises:
        ValueError: on a box array that is not ``(n, 4)``.
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (n, 4) as [x1, y1, x2, y2], got {b.shape}")
    n = len(b)
    w = np.broadcast_to(np.asarray(width, dtype=np.float64), (n,))
    h = np.broadcast_to(np.asarray(height, dtype=np.float64), (n,))
    known = np.isfinite(w) & np.isfinite(h) & (w > 0) & (h > 0)
    ws, hs = np.where(known, w, np.inf), np.where(known, h, np.inf)  # unknown: nothing to clip against
    clipped = np.stack([np.maximum(b[:, 0], 0.0), np.maximum(b[:, 1], 0.0),
                        np.minimum(b[:, 2], ws), np.minimum(b[:, 3], hs)], axis=1)
    clipped = np.where(known[:, None], clipped, b)
    with np.errstate(invalid="ignore"):
        past = known & ((b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h))
        keeps = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        inside = np.clip(clipped[:, 2] - clipped[:, 0], 0, None) * np.clip(clipped[:, 3] - clipped[:, 1], 0, None)
        outside = np.where(known & (area > 0) & np.isfinite(area), 1.0 - inside / area, np.nan)
    return FrameClip(clipped, known, past, keeps, outside)
