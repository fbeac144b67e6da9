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

Boxes stay in original pixels here; every reader maps them to the downloaded size with the sizes
recorded in the manifest (:mod:`lpr_core.data.boxes`), so one mapping serves all stages.
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

from lpr_core.formats import readers
from lpr_core.formats.schema import DURATION_TYPES, NUMBER_TYPES, SCALE_TYPES

__all__ = ["PrepareParams", "PreparedTables", "prepare", "split_livestreams", "query_table"]


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
    query_attributes: str | None = None

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
    from lpr_core.data.datasets import manifest_path
    from lpr_core.data.manifest import read_manifest
    from lpr_core.formats.report import rejects_to_table

    annotations_dir, download_dir = Path(annotations_dir), Path(download_dir)
    files = readers.find_lpr4m_files(annotations_dir)
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
    for split, kind, col in (("train", "frames", "frame_id"), ("train", "images", "image_id")):
        path = manifest_path(download_dir, split, kind)
        if not path.exists():
            raise FileNotFoundError(f"{path}: download manifest missing (run the download stage)")
        manifests[(split, kind)] = _success_ids(read_manifest(path, kind), col)
    usable, dropped = _usable_clips(videoinfo, manifests[("train", "frames")], manifests[("train", "images")])

    val_lives = split_livestreams(usable.column("live_id").to_pylist(), params.val_fraction, params.seed)
    is_val = pc.is_in(usable.column("live_id"), value_set=pa.array(sorted(val_lives), pa.string()))
    train_clips, val_clips = usable.filter(pc.invert(is_val)), usable.filter(is_val)

    notes: list[str] = []
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
