"""The directory the ``index_gallery`` stage writes, and how it is read back.

Layout (the whole directory is replaced at once, :func:`lpr_core.io.atomic_dir`)::

    manifest.json, <live_id>/...    the indexes and their id maps (lpr_core.index.save_gallery_indexes)
    gallery_embeddings.npy          (N, d) float32, row i belongs to row i of gallery_images.parquet
    gallery_images.parquet          image_id: the embedded images, each once
    index_summary.json              counts, images left out (not downloaded), encoder hash, timings
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lpr_core import io
from lpr_core.ids import parse_image_id
from lpr_core.index.gallery import save_gallery_indexes
from lpr_core.inputs import StageInputError, read_table

if TYPE_CHECKING:
    from lpr_core.index.build import GalleryIndexResult

__all__ = [
    "EMBEDDINGS_FILE",
    "IMAGES_FILE",
    "SUMMARY_FILE",
    "write_index_outputs",
    "load_gallery_embeddings",
    "read_index_summary",
]

EMBEDDINGS_FILE = "gallery_embeddings.npy"
IMAGES_FILE = "gallery_images.parquet"
SUMMARY_FILE = "index_summary.json"


def write_index_outputs(result: GalleryIndexResult, out: str | os.PathLike[str]) -> Path:
    """Write the indexes, the gallery embeddings and the summary; ``out`` is replaced at once."""
    out = Path(out)
    with io.atomic_dir(out) as tmp:
        save_gallery_indexes(result.indexes, tmp)
        np.save(tmp / EMBEDDINGS_FILE, result.embeddings)
        pq.write_table(pa.table({"image_id": pa.array(result.image_ids, pa.string())}), tmp / IMAGES_FILE)
        (tmp / SUMMARY_FILE).write_text(json.dumps(result.summary, indent=1) + "\n", encoding="utf-8")
    return out


def load_gallery_embeddings(index_dir: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """The gallery embeddings written by :func:`write_index_outputs`: ``(image_ids, (N, d) float32)``.

    Raises:
        StageInputError: a file is missing or the two files disagree.
    """
    root = Path(index_dir)
    table = read_table(root / IMAGES_FILE, ["image_id"], made_by="index_gallery")
    ids = table.column("image_id").to_pylist()
    for row, image_id in enumerate(ids):
        try:
            parse_image_id(image_id)
        except ValueError as exc:
            raise StageInputError(f"{root / IMAGES_FILE}: row {row}: {exc}") from None
    path = root / EMBEDDINGS_FILE
    if not path.is_file():
        raise StageInputError(f"{path}: missing (run the index_gallery stage)")
    try:
        emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StageInputError(f"{path}: unreadable ({exc})") from None
    if emb.ndim != 2 or emb.shape[0] != len(ids):
        raise StageInputError(f"{path}: shape {emb.shape} does not fit the {len(ids)} ids of {root / IMAGES_FILE}")
    return ids, np.ascontiguousarray(emb, dtype=np.float32)


def read_index_summary(index_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``index_summary.json`` of an index directory ({} when absent)."""
    path = Path(index_dir) / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
