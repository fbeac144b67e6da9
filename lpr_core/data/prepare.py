"""Prepared tables: the annotation files as Parquet, split for training, ready for every later stage.

From the LPR4M annotation files (read leniently; rejected rows are kept in ``rejects.parquet``)
and the download manifests, :func:`prepare` builds:

- ``train_clips`` / ``val_clips`` (``VIDEOINFO_SCHEMA``): the training clips, split by livestream
  (a clip's livestream is in exactly one split, so validation never sees a training shop);
  clips whose shop image or every frame failed to download are dropped and counted;
- ``test_queries``: one row per query clip: ``clip_id, live_id, gt_image_ids, asr``, and the slice
  labels ``category_name, scale_type, duration_type, number_type`` when a query-attributes file is
  given (the LPR4M release has no such columns for the test set; the synthetic world writes one);
- ``test_frame_boxes`` (``FRAME_BOXES_SCHEMA``, original pixels), ``test_gallery``
  (``GALLERY_SCHEMA``), ``test_titles`` (``TITLE_SCHEMA``).

Boxes stay in original pixels here, and this is the one place they are clipped to their frame
(:func:`lpr_core.data.boxes.clip_to_frame`, with the original sizes the frame manifests record):
a box past the frame edge (a product held at the edge of the picture) keeps its part inside the
frame, a box with no area left is dropped (a frame left with no box loses its box row). Per split
(``train``: ``training_videoinfo``; ``test``: ``test_frameid2gtbox``) the counts say how many boxes
there were, how many ran past the edge, how many were dropped and how many could not be checked
(their frame did not download; they are kept as they are and never read). The ``validate``
stage gates on the same counts. Every reader maps the boxes to the downloaded size with the
sizes recorded in the manifest (:mod:`lpr_core.data.boxes`), so one mapping serves all stages.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lpr_core.data.boxes import clip_to_frame
from lpr_core.data.datasets import manifest_path
from lpr_core.data.manifest import read_manifest
from lpr_core.formats import readers
from lpr_core.formats.discovery import find_lpr4m_files
from lpr_core.formats.report import rejects_to_table
from lpr_core.formats.schema import BOX, DURATION_TYPES, NUMBER_TYPES, SCALE_TYPES

__all__ = ["PrepareParams", "PreparedTables", "prepare", "split_livestreams", "query_table", "clip_box_lists"]


@dataclass(frozen=True)
class PrepareParams:
    """The ``prepare`` section of params.yaml.

    Attributes:
        val_fraction: share of training livestreams held out for validation (at least one when > 0
            and there are two or more livestreams).
        seed: seed of the livestream split.
        query_attributes: optional JSON ``{clip_id: {category_id, scale_type, duration_type,
            number_type}}`` relative to the annotations directory, for evaluation slices; a missing
            file means no slices but the livestream.
    """

    val_fraction: float = 0.15
    seed: int = 0
    query_attributes: str | None = "_source/clips.json"

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class PreparedTables:
    """What :func:`prepare` returns: named tables plus counts and the readers' rejects."""

    tables: dict[str, pa.Table]
    counts: dict[str, int]
    rejects: pa.Table | None = None
    notes: list[str] = field(default_factory=list)


def split_livestreams(live_ids: list[str], val_fraction: float, seed: int) -> set[str]:
    """The livestreams held out for validation: deterministic for ``seed``, independent of order."""
    unique = sorted(set(live_ids))
    if val_fraction <= 0 or len(unique) < 2:
        return set()
    n_val = min(len(unique) - 1, max(1, round(len(unique) * val_fraction)))
    keyed = sorted(unique, key=lambda lid: hashlib.sha256(f"{seed}:{lid}".encode()).hexdigest())
    return set(keyed[:n_val])


def _success_ids(manifest: pa.Table, id_column: str) -> set[str]:
    ok = manifest.filter(pc.equal(manifest.column("status"), "success"))
    return set(ok.column(id_column).to_pylist())


def _usable_clips(clips: pa.Table, frames_ok: set[str], images_ok: set[str]) -> tuple[pa.Table, dict[str, int]]:
    keep = np.zeros(clips.num_rows, dtype=bool)
    dropped = {"image_missing": 0, "no_frames": 0}
    for i, (clip_id, indices, image_id) in enumerate(zip(
        clips.column("clip_id").to_pylist(), clips.column("frame_indices").to_pylist(),
        clips.column("image_id").to_pylist(),
    )):
        if image_id not in images_ok:
            dropped["image_missing"] += 1
        elif not any(f"{clip_id}-{int(j):04d}" in frames_ok for j in indices or []):
            dropped["no_frames"] += 1
        else:
            keep[i] = True
    return clips.filter(pa.array(keep)), dropped


def query_table(gt: pa.Table, asr: pa.Table, attributes: Mapping[str, Mapping] | None,
                category_names: Mapping[int, str]) -> pa.Table:
    """One row per query clip with its ground truth, ASR and (optional) slice labels."""
    asr_of = dict(zip(asr.column("clip_id").to_pylist(), asr.column("asr").to_pylist()))
    clip_ids = gt.column("clip_id").to_pylist()
    cols: dict[str, pa.Array] = {
        "clip_id": gt.column("clip_id").combine_chunks(),
        "live_id": gt.column("live_id").combine_chunks(),
        "gt_image_ids": gt.column("gt_image_ids").combine_chunks(),
        "asr": pa.array([asr_of.get(c) for c in clip_ids], pa.string()),
    }
    if attributes:
        def label(clip: str, key: str, names: Mapping[int, str]) -> str | None:
            code = (attributes.get(clip) or {}).get(key)
            return None if code is None else names.get(int(code), str(code))

        cols["category_name"] = pa.array([label(c, "category_id", category_names) for c in clip_ids], pa.string())
        cols["scale_type"] = pa.array([label(c, "scale_type", SCALE_TYPES) for c in clip_ids], pa.string())
        cols["duration_type"] = pa.array([label(c, "duration_type", DURATION_TYPES) for c in clip_ids], pa.string())
        cols["number_type"] = pa.array([label(c, "number_type", NUMBER_TYPES) for c in clip_ids], pa.string())
    return pa.table(cols)


def _frame_id_array(clip_ids: pa.Array, frame_index: pa.Array) -> pa.Array:
    """``<clip_id>-NNNN`` for every row (Arrow kernels, no Python loop)."""
    padded = pc.utf8_lpad(pc.cast(frame_index, pa.string()), 4, "0")
    return pc.binary_join_element_wise(clip_ids, padded, "-")


def _original_sizes(manifest: pa.Table | None, frame_ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Original width and height of each frame id, from the manifest's downloaded rows (NaN where unknown)."""
    n = len(frame_ids)
    if manifest is None or n == 0:
        return np.full(n, np.nan), np.full(n, np.nan)
    ok = manifest.filter(pc.equal(manifest.column("status"), "success"))
    pos = pc.index_in(frame_ids, value_set=ok.column("frame_id").combine_chunks())
    known = pos.is_valid().to_numpy(zero_copy_only=False)
    at = pos.fill_null(0).to_numpy(zero_copy_only=False)
    sizes = []
    for column in ("original_width", "original_height"):
        values = ok.column(column).combine_chunks().cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        sizes.append(np.where(known, values[at] if len(values) else np.nan, np.nan))
    return sizes[0], sizes[1]


def clip_box_lists(boxes: pa.Array, frame_ids: pa.Array, manifest: pa.Table | None) -> tuple[pa.Array, np.ndarray, dict[str, int]]:
    """Clip a list column of boxes to their frames (see the module docstring).

    Args:
        boxes: ``list<[x1, y1, x2, y2]>``, one list per row, in original pixels.
        frame_ids: the frame id of every box, in flattened order.
        manifest: the frames manifest of the split (None: no box can be checked).

    Returns:
        ``(clipped list column, kept mask over the flattened boxes, counts)``; counts are
        ``boxes``, ``boxes_past_edge``, ``boxes_dropped_no_area``, ``boxes_unchecked``.
    """
    parent = pc.list_parent_indices(boxes).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(pc.list_flatten(boxes)).to_numpy(zero_copy_only=False)
    coords = flat.astype(np.float64).reshape(-1, 4)
    width, height = _original_sizes(manifest, frame_ids)
    clip = clip_to_frame(coords, width, height)
    keep = ~clip.known | clip.keeps_area
    offsets = np.zeros(len(boxes) + 1, dtype=np.int32)
    np.cumsum(np.bincount(parent[keep], minlength=len(boxes)), out=offsets[1:])
    values = pa.FixedSizeListArray.from_arrays(pa.array(clip.boxes[keep].reshape(-1), pa.float32()), 4)
    clipped = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values.cast(BOX))
    counts = {
        "boxes": int(len(coords)),
        "boxes_past_edge": int(clip.past_edge.sum()),
        "boxes_dropped_no_area": int((clip.known & ~clip.keeps_area).sum()),
        "boxes_unchecked": int((~clip.known).sum()),
    }
    return clipped, keep, counts


def _clip_videoinfo(videoinfo: pa.Table, manifest: pa.Table | None) -> tuple[pa.Table, dict[str, int]]:
    """Training clips with their boxes clipped to the frames (and their frame indices kept in step)."""
    vi = videoinfo.combine_chunks()
    boxes = vi.column("boxes").combine_chunks()
    frame_index = vi.column("box_frame_indices").combine_chunks()
    owner = pc.take(vi.column("clip_id").combine_chunks(), pc.list_parent_indices(boxes))
    clipped, keep, counts = clip_box_lists(boxes, _frame_id_array(owner, pc.list_flatten(frame_index)), manifest)
    kept_index = pc.list_flatten(frame_index).filter(pa.array(keep))
    indices = pa.ListArray.from_arrays(clipped.offsets, kept_index)
    vi = vi.set_column(vi.schema.get_field_index("boxes"), vi.schema.field("boxes"), clipped)
    vi = vi.set_column(vi.schema.get_field_index("box_frame_indices"), vi.schema.field("box_frame_indices"), indices)
    return vi, counts


def _clip_frame_boxes(frame_boxes: pa.Table, manifest: pa.Table | None) -> tuple[pa.Table, dict[str, int]]:
    """Test frame boxes clipped to the frames; a frame left with no box is dropped."""
    fb = frame_boxes.combine_chunks()
    boxes = fb.column("boxes").combine_chunks()
    frame_ids = _frame_id_array(fb.column("clip_id").combine_chunks(), fb.column("frame_index").combine_chunks())
    per_box = pc.take(frame_ids, pc.list_parent_indices(boxes))
    clipped, _, counts = clip_box_lists(boxes, per_box, manifest)
    fb = fb.set_column(fb.schema.get_field_index("boxes"), fb.schema.field("boxes"), clipped)
    return fb.filter(pc.greater(pc.list_value_length(clipped), 0)), counts


def _read(kind: str, files: dict[str, list[Path]], reports: list, progress: bool) -> pa.Table:
    result = readers.read_kind(kind, files.get(kind, []), strict=False, progress=progress)
    reports.append(result.report)
    return result.table


def prepare(annotations_dir: str | Path, download_dir: str | Path, params: PrepareParams = PrepareParams(),
            *, progress: bool = False) -> PreparedTables:
    """Build the prepared tables (see the module docstring).

    Raises:
        FileNotFoundError: a required annotation file or manifest is missing.
    """
    annotations_dir, download_dir = Path(annotations_dir), Path(download_dir)
    files = find_lpr4m_files(annotations_dir)
    required = ("videoinfo", "test_gt_images", "test_gallery")
    missing = [k for k in required if not files.get(k)]
    if missing:
        raise FileNotFoundError(f"{annotations_dir}: no {', '.join(missing)} file(s) found")
    reports: list = []
    videoinfo = _read("videoinfo", files, reports, progress)
    gt = _read("test_gt_images", files, reports, progress)
    asr = _read("test_asr", files, reports, progress)
    frame_boxes = _read("test_frame_boxes", files, reports, progress)
    gallery = _read("test_gallery", files, reports, progress)
    titles = _read("test_titles", files, reports, progress)

    manifests = {}
    for split, kind in (("train", "frames"), ("train", "images")):
        path = manifest_path(download_dir, split, kind)
        if not path.exists():
            raise FileNotFoundError(f"{path}: download manifest missing (run the download stage)")
        manifests[(split, kind)] = read_manifest(path, kind)
    notes: list[str] = []
    test_frames_path = manifest_path(download_dir, "test", "frames")
    if test_frames_path.exists():
        manifests[("test", "frames")] = read_manifest(test_frames_path, "frames")
    else:
        notes.append(f"no {test_frames_path}: test boxes are not clipped to their frames")
    videoinfo, train_edges = _clip_videoinfo(videoinfo, manifests[("train", "frames")])
    frame_boxes, test_edges = _clip_frame_boxes(frame_boxes, manifests.get(("test", "frames")))
    usable, dropped = _usable_clips(videoinfo, _success_ids(manifests[("train", "frames")], "frame_id"),
                                    _success_ids(manifests[("train", "images")], "image_id"))

    val_lives = split_livestreams(usable.column("live_id").to_pylist(), params.val_fraction, params.seed)
    is_val = pc.is_in(usable.column("live_id"), value_set=pa.array(sorted(val_lives), pa.string()))
    train_clips, val_clips = usable.filter(pc.invert(is_val)), usable.filter(is_val)

    attributes = None
    if params.query_attributes:
        path = annotations_dir / params.query_attributes
        if path.exists():
            attributes = json.loads(path.read_text(encoding="utf-8"))
        else:
            notes.append(f"no query attributes at {path}: slices by livestream only")
    names = dict(zip(videoinfo.column("category_id").to_pylist(), videoinfo.column("category_name").to_pylist()))
    queries = query_table(gt, asr, attributes, names)

    all_rejects = [r for rep in reports for r in rep.rejects]
    counts = {
        "train_clips": train_clips.num_rows,
        "val_clips": val_clips.num_rows,
        "val_livestreams": len(val_lives),
        "dropped_clips_image_missing": dropped["image_missing"],
        "dropped_clips_no_frames": dropped["no_frames"],
        "test_queries": queries.num_rows,
        "test_gallery_images": gallery.num_rows,
        "test_livestreams": len(set(gallery.column("live_id").to_pylist())),
        "rejected_rows": len(all_rejects),
        **{f"train/{k}": v for k, v in train_edges.items()},
        **{f"test/{k}": v for k, v in test_edges.items()},
    }
    tables = {
        "train_clips": train_clips,
        "val_clips": val_clips,
        "test_queries": queries,
        "test_frame_boxes": frame_boxes,
        "test_gallery": gallery,
        "test_titles": titles,
    }
    return PreparedTables(tables, counts, rejects_to_table(all_rejects) if all_rejects else None, notes)
