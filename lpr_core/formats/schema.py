"""Arrow schemas of the tables the LPR4M readers produce, and the LPR4M file names.

Every reader returns a ``pyarrow.Table`` with exactly one of the schemas below; they are the
contract between the formats layer and every later stage.

Boxes are ``[x1, y1, x2, y2]`` in pixels of the *original* frame (before img2dataset resized it).
Frame lists are stored compactly: a clip row keeps its ``clip_id`` and a ``list<uint16>`` of frame
indices, never the ~118 frame-id strings of a real clip.
"""

from __future__ import annotations

import pyarrow as pa

BOX = pa.list_(pa.float32(), 4)

#: Product scale type (column 9 of training_videoinfo): code -> name.
SCALE_TYPES: dict[int, str] = {0: "small", 1: "medium", 2: "large"}
#: Visible duration type (column 10): share of the clip in which the product is visible.
DURATION_TYPES: dict[int, str] = {0: "short", 1: "medium", 2: "long"}
#: Product number type (column 11): how many products appear in the clip.
NUMBER_TYPES: dict[int, str] = {0: "single", 1: "multiple"}

VIDEOINFO_COLUMNS = (
    "video_id",
    "frame_ids",
    "boxes",
    "image_id",
    "image_title",
    "category_id",
    "category_name",
    "asr",
    "scale_type",
    "duration_type",
    "number_type",
)

#: training_videoinfo: one row per training clip.
#: ``box_frame_indices[i]`` is the frame index that ``boxes[i]`` belongs to (frames may have 0..n
#: boxes); a frame with no box simply does not appear there.
VIDEOINFO_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("live_id", pa.string()),
        ("start_ms", pa.int64()),
        ("end_ms", pa.int64()),
        ("frame_indices", pa.list_(pa.uint16())),
        ("box_frame_indices", pa.list_(pa.uint16())),
        ("boxes", pa.list_(BOX)),
        ("image_id", pa.string()),
        ("image_title", pa.string()),
        ("category_id", pa.int16()),
        ("category_name", pa.string()),
        ("asr", pa.string()),
        ("scale_type", pa.int8()),
        ("duration_type", pa.int8()),
        ("number_type", pa.int8()),
    ]
)

#: A frame URL list: one row per URL.
FRAME_URLS_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("clip_id", pa.string()),
        ("frame_index", pa.uint16()),
    ]
)

#: A shop image URL list: one row per URL.
IMAGE_URLS_SCHEMA = pa.schema([("url", pa.string()), ("image_id", pa.string())])

#: test_videoid_asr: clip -> ASR text.
ASR_SCHEMA = pa.schema([("clip_id", pa.string()), ("asr", pa.string())])

#: test_image_title: image -> title.
TITLE_SCHEMA = pa.schema([("image_id", pa.string()), ("title", pa.string())])

#: test_videoid_to_gtimage: one row per query clip, its ground-truth images.
GT_IMAGES_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("live_id", pa.string()),
        ("gt_image_ids", pa.list_(pa.string())),
    ]
)

#: test_frameid2gtbox: one row per annotated frame.
FRAME_BOXES_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("frame_index", pa.uint16()),
        ("boxes", pa.list_(BOX)),
    ]
)

#: test_liveid_to_gallery: one row per (livestream, gallery image).
GALLERY_SCHEMA = pa.schema([("live_id", pa.string()), ("image_id", pa.string())])

#: The rejects file written in lenient mode: one row per rejected input row.
REJECTS_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("line", pa.int64()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)

#: File-name patterns of the LPR4M release (glob patterns; training_videoinfo may come in parts).
FILE_PATTERNS: dict[str, str] = {
    "train_frame_urls": "training_frame_url_*.txt",
    "train_image_urls": "training_image_url_*.txt",
    "test_frame_urls": "test_frame_url_*.txt",
    "test_image_urls": "test_image_url_*.txt",
    "videoinfo": "training_videoinfo*.txt",
    "test_asr": "test_videoid_asr_*.txt",
    "test_titles": "test_image_title_*.txt",
    "test_gt_images": "test_videoid_to_gtimage_*.json",
    "test_frame_boxes": "test_frameid2gtbox_*.json",
    "test_gallery": "test_liveid_to_gallery_*.json",
}

#: URL list kind -> (split, kind) of the download manifests.
URL_LISTS: dict[str, tuple[str, str]] = {
    "train_frame_urls": ("train", "frames"),
    "train_image_urls": ("train", "images"),
    "test_frame_urls": ("test", "frames"),
    "test_image_urls": ("test", "images"),
}

#: Download manifest columns shared by frames and shop images (see ``lpr_core.data.manifest``).
#: ``path`` is relative to the download output directory: the JPEG file in ``files`` format, the
#: tar file in ``webdataset`` format (then ``tar_member`` names the JPEG inside it).
#: ``status`` is ``"success"`` or ``"failed"``; ``error`` says why for a failed row.
_MANIFEST_COMMON = [
    ("url", pa.string()),
    ("path", pa.string()),
    ("tar_member", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("original_width", pa.int32()),
    ("original_height", pa.int32()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("sha256", pa.string()),
]

#: Manifest of a frame URL list: ``<out>/manifests/<split>_frames.parquet``.
FRAME_MANIFEST_SCHEMA = pa.schema(
    [("frame_id", pa.string()), ("clip_id", pa.string()), ("frame_index", pa.uint16())] + _MANIFEST_COMMON
)
#: Manifest of a shop image URL list: ``<out>/manifests/<split>_images.parquet``.
IMAGE_MANIFEST_SCHEMA = pa.schema([("image_id", pa.string())] + _MANIFEST_COMMON)
