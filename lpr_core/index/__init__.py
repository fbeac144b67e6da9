"""Gallery indexes: one faiss index per livestream, saved with its id map (see :mod:`.gallery`).

faiss is imported only when an index is built, loaded or searched.
"""

from lpr_core.index.gallery import (
    DEVICES,
    INDEX_KINDS,
    GalleryIndex,
    IndexFileError,
    IndexSpec,
    build_gallery_indexes,
    build_index,
    faiss_gpu_available,
    load_gallery_indexes,
    load_index,
    save_gallery_indexes,
    save_index,
    search_predictions,
)

__all__ = [
    "DEVICES",
    "INDEX_KINDS",
    "GalleryIndex",
    "IndexFileError",
    "IndexSpec",
    "build_gallery_indexes",
    "build_index",
    "faiss_gpu_available",
    "load_gallery_indexes",
    "load_index",
    "save_gallery_indexes",
    "save_index",
    "search_predictions",
]
