"""The gallery the ``index_gallery`` stage saved, read back for scoring: its faiss indexes and,
beside them, the exact per-livestream embeddings that :func:`lpr_core.evaluation.score_embeddings`
ranks against."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lpr_core.evaluation.ranking import Gallery, galleries_from_embeddings
from lpr_core.index.gallery import GalleryIndex, load_gallery_indexes
from lpr_core.index.store import load_gallery_embeddings, read_index_summary
from lpr_core.inputs import StageInputError

__all__ = ["load_gallery"]


def load_gallery(
    index_dir: str | os.PathLike[str], device: str = "auto"
) -> tuple[dict[str, GalleryIndex], dict[str, Gallery], dict[str, Any]]:
    """The saved indexes and, per livestream, the exact gallery embeddings in index order.

    Returns:
        ``(indexes, galleries, summary)``; ``summary`` is the directory's ``index_summary.json``
        ({} when absent).

    Raises:
        StageInputError: an index lists an image that has no saved embedding, or the index and
            the embeddings differ in dimension (a stale or mixed index directory).
    """
    root = Path(index_dir)
    indexes = load_gallery_indexes(root, device=device)
    ids, emb = load_gallery_embeddings(root)
    known = set(ids)
    for live_id, gi in indexes.items():
        absent = [i for i in gi.image_ids if i not in known]
        if absent:
            raise StageInputError(f"{root}: the index of {live_id} holds image {absent[0]}, which has no saved embedding")
        if gi.ntotal and gi.dim != emb.shape[1]:
            raise StageInputError(f"{root}: the index of {live_id} has dimension {gi.dim}, the embeddings {emb.shape[1]}")
    galleries = galleries_from_embeddings({live: gi.image_ids for live, gi in indexes.items()}, ids, emb)
    return indexes, galleries, read_index_summary(root)
