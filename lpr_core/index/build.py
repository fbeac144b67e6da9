"""Embed the test gallery and build one faiss index per livestream (the ``index_gallery`` stage).

Every distinct gallery image of ``<prepared>/test_gallery.parquet`` that was downloaded is
embedded once (L2-normalised, the encoder's evaluation transform, :mod:`lpr_core.embedding`);
each livestream's gallery becomes an index (:mod:`lpr_core.index.gallery`, exact inner product by
default) holding its images in gallery-table order. :func:`lpr_core.index.store.write_index_outputs`
writes the result.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpr_core.data.datasets import ManifestImages
from lpr_core.embedding import EmbedParams, embed_shop_images, load_encoder_checkpoint, resolve_embed_device
from lpr_core.ids import parse_image_id, parse_live_id
from lpr_core.index.gallery import GalleryIndex, IndexSpec, build_gallery_indexes
from lpr_core.inputs import StageInputError, file_sha256, read_table

__all__ = ["IndexGalleryParams", "GalleryIndexResult", "read_galleries", "index_gallery"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexGalleryParams:
    """The ``index_gallery`` section of params.yaml.

    Attributes:
        index: how each livestream's index is built (:class:`lpr_core.index.IndexSpec`:
            ``kind`` flat|ivf|hnsw, ``nlist``, ``nprobe``, ``hnsw_m``, ``ef_construction``,
            ``ef_search``, ``device``, ``batch_size``, ``train_size``, ``seed``).
        embed: how the gallery images are embedded.
        skip_missing: leave gallery images that were not downloaded out of the index (recorded
            in the summary and the index meta); false makes one an error.
    """

    index: IndexSpec = field(default_factory=IndexSpec)
    embed: EmbedParams = field(default_factory=EmbedParams)
    skip_missing: bool = True


@dataclass
class GalleryIndexResult:
    """What :func:`index_gallery` returns.

    Attributes:
        indexes: ``live_id -> GalleryIndex``, in gallery-table order.
        image_ids: the ``N`` embedded images, row order of ``embeddings``.
        embeddings: ``(N, d)`` float32, L2-normalised.
        missing_image_ids: gallery images that were not downloaded (left out).
        summary: JSON-ready counts, timings and provenance.
    """

    indexes: dict[str, GalleryIndex]
    image_ids: list[str]
    embeddings: np.ndarray
    missing_image_ids: list[str]
    summary: dict[str, Any]


def read_galleries(prepared: str | os.PathLike[str]) -> dict[str, list[str]]:
    """``live_id -> [image_id, ...]`` from ``<prepared>/test_gallery.parquet``, in table order.

    Raises:
        StageInputError: the table is missing, or a row holds an invalid id (named with its row)
            or lists an image twice in one gallery.
    """
    path = Path(prepared) / "test_gallery.parquet"
    table = read_table(path, ["live_id", "image_id"])
    galleries: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for row, (live_id, image_id) in enumerate(
        zip(table.column("live_id").to_pylist(), table.column("image_id").to_pylist())
    ):
        try:
            parse_live_id(live_id)
            parse_image_id(image_id)
        except ValueError as exc:
            raise StageInputError(f"{path}: row {row}: {exc}") from None
        if (live_id, image_id) in seen:
            raise StageInputError(f"{path}: row {row}: image_id {image_id} listed twice in the gallery of {live_id}")
        seen.add((live_id, image_id))
        galleries.setdefault(live_id, []).append(image_id)
    return galleries


def index_gallery(
    prepared: str | os.PathLike[str],
    download: str | os.PathLike[str],
    encoder_dir: str | os.PathLike[str],
    params: IndexGalleryParams = IndexGalleryParams(),
    *,
    progress: bool = True,
) -> GalleryIndexResult:
    """Embed the test gallery and build one index per livestream (see the module docstring).

    Args:
        prepared: the prepare stage's output (``test_gallery.parquet``).
        download: the download stage's output (the test image manifest).
        encoder_dir: the directory holding ``encoder.pt``.
        params: the ``index_gallery`` section.
        progress: progress bars.

    Raises:
        StageInputError: a missing or malformed input.
        ValueError: a gallery image was not downloaded and ``params.skip_missing`` is false.
    """
    start = time.perf_counter()
    galleries = read_galleries(prepared)
    images = ManifestImages.from_download(download, "test", "images")
    device, amp = resolve_embed_device(params.embed)
    model, encoder_path = load_encoder_checkpoint(encoder_dir, device)
    distinct = list(dict.fromkeys(i for members in galleries.values() for i in members))
    not_downloaded = [i for i in distinct if i not in images]
    if not_downloaded and not params.skip_missing:
        raise ValueError(
            f"{len(not_downloaded)} gallery image(s) were not downloaded, first {not_downloaded[0]} "
            "(set index_gallery.skip_missing: true to leave them out)"
        )
    t0 = time.perf_counter()
    load_s = t0 - start  # inputs, encoder (and the imports of torch and torchvision)
    log.info("embedding %d gallery images on %s", len(distinct) - len(not_downloaded), device)
    image_ids, embeddings, missing = embed_shop_images(model, distinct, images, params.embed, device, amp)
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    indexes = build_gallery_indexes(galleries, image_ids, embeddings, params.index, skip_missing=True, progress=progress)
    index_s = time.perf_counter() - t0
    summary = {
        "num_livestreams": len(indexes),
        "num_gallery_entries": sum(len(m) for m in galleries.values()),
        "num_images": len(distinct),
        "num_embedded": len(image_ids),
        "num_missing_images": len(missing),
        "missing_image_ids": missing,
        "embedding_dim": int(embeddings.shape[1]),
        "index": params.index.to_dict(),
        "index_on_gpu": any(g.on_gpu for g in indexes.values()),
        "embed_device": str(device),
        "amp_bf16": amp,
        "encoder": str(encoder_path),
        "encoder_sha256": file_sha256(encoder_path),
        "timings_s": {"load": load_s, "embed": embed_s, "index": index_s, "total": time.perf_counter() - start},
    }
    return GalleryIndexResult(indexes, image_ids, embeddings, missing, summary)
