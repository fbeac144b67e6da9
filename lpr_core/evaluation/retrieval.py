"""Score an encoder end to end on a set of clips with the LPR protocol: embed the query clips and
the gallery images (:mod:`lpr_core.embedding`), rank each clip within its own livestream's
gallery (:func:`lpr_core.evaluation.score_embeddings`). Validation during training and the
ablation benchmark's test scores use it; the ``evaluate`` stage runs the same embedding and
scoring with the saved gallery indexes (:mod:`lpr_core.evaluation.run`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from lpr_core.data.datasets import ManifestImages
from lpr_core.embedding import EmbedParams, embed_query_clips, embed_shop_images
from lpr_core.evaluation.metrics import summarize
from lpr_core.evaluation.ranking import QueryResults, galleries_from_embeddings, score_embeddings
from lpr_core.models.encoder import RiceModel

__all__ = ["RetrievalEval", "score_clips"]


@dataclass
class RetrievalEval:
    """Outcome of :func:`score_clips`.

    Attributes:
        summary: ``rank1``, ``rank3``, ``rank5``, ``rank10``, ``mAP``, ``MRR``, counts.
        results: the per-query results.
        missing_queries: queries without a downloaded frame (misses).
        missing_images: gallery images that were not downloaded (never retrieved).
    """

    summary: dict[str, float]
    results: QueryResults
    missing_queries: list[str] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)


def score_clips(
    model: RiceModel,
    *,
    gt: Mapping[str, Sequence[str]],
    galleries: Mapping[str, Sequence[str]],
    frames: ManifestImages,
    images: ManifestImages,
    boxes: Mapping[tuple[str, int], list] | None,
    box_padding: float = 0.1,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> RetrievalEval:
    """Embed query clips and gallery images with an encoder and score the LPR protocol (each
    clip ranked within its own livestream's gallery).

    Args:
        model: the encoder.
        gt: ``clip_id -> [image_id, ...]``; its keys are the queries.
        galleries: ``live_id -> [image_id, ...]`` in gallery order.
        frames: reader of the queries' frame manifest.
        images: reader of the galleries' image manifest.
        boxes: ``(clip_id, frame_index) -> boxes`` (downloaded pixels) to crop frames to, or None
            for full frames.
        box_padding: context kept around a box.
        batch_size: clips / images per forward pass.
        num_workers: DataLoader workers.
        device: where to run the encoder (full precision).
    """
    params = EmbedParams(batch_size=batch_size, num_workers=num_workers)
    device = torch.device(device)
    queries, q_emb = embed_query_clips(
        model, list(gt), frames, params, device, amp=False, boxes=boxes, box_padding=box_padding
    )
    image_ids = sorted({i for ids in galleries.values() for i in ids})
    embedded, g_emb, missing_images = embed_shop_images(model, image_ids, images, params, device, amp=False)
    results = score_embeddings(gt, queries.clip_ids, q_emb, galleries_from_embeddings(galleries, embedded, g_emb))
    return RetrievalEval(summarize(results), results, list(queries.missing), missing_images)
