"""Image transforms of the encoder and detector (torchvision ``transforms.v2``), and box crops.

Training transforms draw from torch's global RNG; datasets run them inside
:func:`seeded` so a sample's augmentation is a function of its sample seed only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torchvision.transforms import v2

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLIP_MEAN",
    "CLIP_STD",
    "build_train_transform",
    "build_eval_transform",
    "build_detection_transform",
    "seeded",
    "union_box",
    "jitter_box",
    "crop_box",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build_train_transform(
    size: int,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: tuple[float, float] = (0.6, 1.0),
    color_jitter: float = 0.3,
    hflip: bool = True,
):
    """Training transform: PIL image -> normalised float tensor ``[3, size, size]``.

    Random resized crop, optional horizontal flip and colour jitter (brightness, contrast,
    saturation), then normalisation.
    """
    ops = [v2.ToImage(), v2.RandomResizedCrop(size, scale=scale, antialias=True)]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if color_jitter > 0:
        ops.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    return v2.Compose(ops)


def build_eval_transform(
    size: int, *, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
):
    """Evaluation transform: resize the smaller side to ``size``, centre crop, normalise."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def build_detection_transform(train: bool, *, hflip: bool = True, color_jitter: float = 0.0, crop_scale_min: float = 1.0):
    """Detector transform on ``(image, target)``: to a float tensor in [0, 1] (the detector
    normalises and resizes itself).

    In training (``train=True``): with ``crop_scale_min < 1``, half the frames are cropped around
    their boxes (``RandomIoUCrop``: a crop of at least this share of each side that overlaps the
    boxes; the detector then resizes it back, so products change scale); a horizontal flip when
    ``hflip``; colour jitter of brightness, contrast and saturation by ``color_jitter`` and of hue
    by a third of it (new livestreams bring new studio colours). Boxes move and are clipped with
    the image; boxes left empty are dropped.
    """
    ops: list = [v2.ToImage()]
    if train:
        if crop_scale_min < 1.0:
            ops.append(v2.RandomApply([v2.RandomIoUCrop(min_scale=crop_scale_min)], p=0.5))
        if hflip:
            ops.append(v2.RandomHorizontalFlip())
        if color_jitter > 0:
            ops.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter,
                                      hue=min(0.5, color_jitter / 3)))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes()]
    return v2.Compose(ops)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block with torch's CPU RNG seeded to ``seed``, restoring the caller's RNG after.

    ``None`` leaves the RNG alone (the block then draws from the global stream).
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def union_box(boxes: Sequence[Sequence[float]]) -> tuple[float, float, float, float] | None:
    """The smallest box ``(x1, y1, x2, y2)`` that holds all ``boxes``; None for no box."""
    if len(boxes) == 0:
        return None
    x1 = min(float(b[0]) for b in boxes)
    y1 = min(float(b[1]) for b in boxes)
    x2 = max(float(b[2]) for b in boxes)
    y2 = max(float(b[3]) for b in boxes)
    return (x1, y1, x2, y2)


def jitter_box(
    box: Sequence[float] | None, amount: float, rng: np.random.Generator
) -> tuple[float, float, float, float] | None:
    """``box`` moved and rescaled at random, as a detector's box would be.

    The centre moves by up to ``amount`` of the box's width/height and each side is scaled by
    ``exp(u)`` with ``u`` uniform in ``[-amount, amount]``; 0 (or no box) returns ``box``. Training
    on jittered ground-truth crops prepares the encoder for the test-time detector's imperfect
    boxes.
    """
    if box is None or amount <= 0:
        return None if box is None else tuple(float(v) for v in box)
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    dx, dy, sw, sh = rng.uniform(-amount, amount, 4)
    cx, cy = (x1 + x2) / 2 + dx * w, (y1 + y2) / 2 + dy * h
    w, h = w * math.exp(sw), h * math.exp(sh)
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def crop_box(image: Image.Image | torch.Tensor, box: Sequence[float] | None, padding: float = 0.0):
    """Crop ``image`` to ``box`` grown by ``padding`` (a fraction of the box size on each side).

    The box is clipped to the image; a missing or degenerate box (under 2 pixels after clipping)
    returns the full image, so a frame without a usable box falls back to the whole frame.

    Args:
        image: a PIL image or a tensor ``[..., H, W]``.
        box: ``(x1, y1, x2, y2)`` in pixels of ``image``, or None.
        padding: context kept around the box, e.g. 0.1 adds 10% of its width/height per side.
    """
    if box is None:
        return image
    if hasattr(image, "size") and not callable(image.size):  # PIL
        width, height = image.size
    else:
        height, width = int(image.shape[-2]), int(image.shape[-1])
    x1, y1, x2, y2 = (float(v) for v in box)
    pw, ph = (x2 - x1) * padding, (y2 - y1) * padding
    x1, y1 = max(0, int(x1 - pw)), max(0, int(y1 - ph))
    x2, y2 = min(width, int(round(x2 + pw))), min(height, int(round(y2 + ph)))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return image
    if hasattr(image, "crop"):
        return image.crop((x1, y1, x2, y2))
    return image[..., y1:y2, x1:x2]
