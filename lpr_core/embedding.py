"""Run a trained encoder over shop images and query clips: the one embedding path of the project.

Training validation (:func:`lpr_core.evaluation.retrieval.score_clips`), the ``index_gallery``
stage (shop images) and the ``evaluate`` stage (query clips) all embed through here, with the
encoder's own evaluation transform (its input size and normalisation) and the same loader
settings, so a clip or an image gets the same vector wherever it is embedded.

Example::

    device, amp = resolve_embed_device(params)
    model, path = load_encoder_checkpoint("data/models/encoder", device)
    ids, emb, missing = embed_shop_images(model, image_ids, images, params, device, amp)
    queries, q_emb = embed_query_clips(model, clip_ids, frames, params, device, amp, boxes=boxes)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpr_core.data.datasets import GalleryImageDataset, ManifestImages, QueryClipDataset, build_dataloader
from lpr_core.data.transforms import build_eval_transform
from lpr_core.inputs import StageInputError
from lpr_core.models.encoder import RiceModel, embed_clips, embed_images, load_encoder
from lpr_core.training.distributed import resolve_device

__all__ = [
    "ENCODER_FILE",
    "EmbedParams",
    "usable_cores",
    "resolve_embed_device",
    "load_encoder_checkpoint",
    "eval_transform",
    "embed_dataset",
    "embed_shop_images",
    "embed_query_clips",
]

#: The encoder checkpoint inside an encoder directory (written by the train_encoder stage).
ENCODER_FILE = "encoder.pt"


@dataclass(frozen=True)
class EmbedParams:
    """How a stage runs the encoder over images or clips.

    Attributes:
        batch_size: images (or clips) per forward pass.
        num_workers: DataLoader worker processes that read and decode JPEGs (0: the main process).
        prefetch_factor: batches each worker prepares ahead.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: ``auto`` (bf16 autocast on CUDA, full precision on CPU), ``bf16`` or ``off`` (YAML
            reads a bare ``off`` as false, ``on`` as true: both are understood).
    """

    batch_size: int = 64
    num_workers: int = 1
    prefetch_factor: int = 4
    device: str = "auto"
    amp: str | bool = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_workers < 0 or self.prefetch_factor < 1:
            raise ValueError("batch_size and prefetch_factor must be >= 1, num_workers >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto|cpu|cuda, got {self.device!r}")
        if isinstance(self.amp, bool):
            object.__setattr__(self, "amp", "bf16" if self.amp else "off")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be auto|bf16|off, got {self.amp!r}")


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_embed_device(params: EmbedParams) -> tuple[torch.device, bool]:
    """The torch device and whether to autocast to bf16; uses every usable core on the CPU."""
    device = resolve_device(params.device)
    if device.type == "cpu":
        torch.set_num_threads(usable_cores())
    amp = params.amp == "bf16" or (params.amp == "auto" and device.type == "cuda")
    return device, amp


def load_encoder_checkpoint(
    encoder_dir: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[RiceModel, Path]:
    """The encoder of ``<encoder_dir>/encoder.pt`` in eval mode on ``device``, and its path.

    Raises:
        StageInputError: the checkpoint is missing.
    """
    path = Path(encoder_dir) / ENCODER_FILE
    if not path.is_file():
        raise StageInputError(f"{path}: encoder checkpoint missing (run the train_encoder stage)")
    return load_encoder(path).to(device).eval(), path


def eval_transform(model: RiceModel) -> Callable:
    """The encoder's evaluation transform (its input size and normalisation)."""
    return build_eval_transform(model.config.image_size, mean=model.mean, std=model.std)


def embed_dataset(
    model: RiceModel,
    dataset: Any,
    embed: Callable[..., np.ndarray],
    params: EmbedParams,
    device: torch.device,
    amp: bool,
) -> np.ndarray:
    """``(len(dataset), d)`` float32 embeddings of a dataset, in order.

    Args:
        model: the encoder (eval mode).
        dataset: a :class:`~lpr_core.data.datasets.GalleryImageDataset` or
            :class:`~lpr_core.data.datasets.QueryClipDataset`.
        embed: ``embed_images`` or ``embed_clips`` of :mod:`lpr_core.models.encoder`.
        params: batch size and loader settings (workers, prefetch).
        device: where the encoder runs.
        amp: bf16 autocast.
    """
    if len(dataset) == 0:
        return np.zeros((0, model.config.embed_dim), np.float32)
    loader = build_dataloader(
        dataset,
        batch_size=params.batch_size,
        num_workers=params.num_workers,
        device=str(device),
        prefetch_factor=params.prefetch_factor,
        persistent_workers=False,
    )
    return np.ascontiguousarray(embed(model, loader, device=device, amp=amp), dtype=np.float32)


def embed_shop_images(
    model: RiceModel,
    image_ids: Sequence[str],
    images: ManifestImages,
    params: EmbedParams,
    device: torch.device,
    amp: bool,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Embed shop images with the encoder.

    Args:
        model: the encoder (eval mode).
        image_ids: the images to embed (distinct).
        images: reader of the image manifest.
        params: batch size and loader settings.
        device: where the encoder runs.
        amp: bf16 autocast.

    Returns:
        ``(embedded_ids, embeddings (n, d) float32, missing_ids)``: images that were not
        downloaded are left out and listed in ``missing_ids``.
    """
    dataset = GalleryImageDataset(list(image_ids), images, transform=eval_transform(model))
    emb = embed_dataset(model, dataset, embed_images, params, device, amp)
    return list(dataset.image_ids), emb, list(dataset.missing)


def embed_query_clips(
    model: RiceModel,
    clip_ids: Sequence[str],
    frames: ManifestImages,
    params: EmbedParams,
    device: torch.device,
    amp: bool,
    *,
    num_frames: int | None = None,
    boxes: Mapping[tuple[str, int], list] | None = None,
    box_padding: float = 0.1,
) -> tuple[QueryClipDataset, np.ndarray]:
    """Embed query clips from T uniformly spaced downloaded frames each.

    Args:
        model: the encoder (eval mode).
        clip_ids: the queries.
        frames: reader of the frame manifest.
        params: batch size and loader settings.
        device: where the encoder runs.
        amp: bf16 autocast.
        num_frames: T; None: the encoder's ``num_frames``.
        boxes: ``(clip_id, frame_index) -> boxes`` (downloaded pixels) to crop frames to, or None
            for full frames.
        box_padding: context kept around a box.

    Returns:
        ``(dataset, embeddings (m, d) float32)``: row i belongs to ``dataset.clip_ids[i]``; clips
        without any downloaded frame are left out and listed in ``dataset.missing``.
    """
    dataset = QueryClipDataset(
        list(clip_ids),
        frames,
        num_frames=num_frames or model.config.num_frames,
        transform=eval_transform(model),
        boxes=boxes,
        box_padding=box_padding,
    )
    return dataset, embed_dataset(model, dataset, embed_clips, params, device, amp)
