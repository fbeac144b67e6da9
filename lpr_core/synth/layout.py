"""Where a world keeps its source JPEGs (cheap to import: no numpy, no Pillow)."""

from __future__ import annotations

from pathlib import Path

from lpr_core import ids

__all__ = ["SOURCE_DIR", "source_path"]

#: Sub-directory of a world holding the source JPEGs and the hidden truth.
SOURCE_DIR = "_source"


def source_path(world_dir: str | Path, item_id: str) -> Path | None:
    """Path of the source JPEG of a frame id or image id in a world (None for a malformed id).

    Frames live in ``_source/frames/<live_id>/<frame_id>.jpg``, shop images in
    ``_source/images/<image_id>.jpg``.
    """
    root = Path(world_dir) / SOURCE_DIR
    if ids.is_frame_id(item_id):
        return root / "frames" / item_id[:36] / f"{item_id}.jpg"
    if ids.is_image_id(item_id):
        return root / "images" / f"{item_id}.jpg"
    return None
