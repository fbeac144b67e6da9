"""Query clips and their ground truth: the prepared test queries, and training-format clips scored
the same way (validation during training)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from lpr_core.evaluation.params import SLICE_COLUMNS
from lpr_core.ids import parse_clip_id, parse_image_id
from lpr_core.inputs import StageInputError, read_table

__all__ = ["QuerySet", "read_test_queries", "clip_ground_truth"]


@dataclass
class QuerySet:
    """The test queries.

    Attributes:
        clip_ids: query clip ids, in table order.
        gt: ``clip_id -> [image_id, ...]``.
        labels: ``column -> per-query labels`` (aligned with ``clip_ids``) of the slice columns found.
        absent_columns: requested slice columns the table does not have.
    """

    clip_ids: list[str]
    gt: dict[str, list[str]]
    labels: dict[str, list[Any]]
    absent_columns: list[str]


def read_test_queries(prepared: str | os.PathLike[str], slices: Sequence[str] = SLICE_COLUMNS) -> QuerySet:
    """The queries of ``<prepared>/test_queries.parquet`` with their ground truth and slice labels.

    Raises:
        StageInputError: a missing table or column, an invalid or repeated clip id, or a query
            without ground-truth images (named with its row).
    """
    path = Path(prepared) / "test_queries.parquet"
    table = read_table(path, ["clip_id", "gt_image_ids"])
    clip_ids = table.column("clip_id").to_pylist()
    gt: dict[str, list[str]] = {}
    for row, (clip_id, images) in enumerate(zip(clip_ids, table.column("gt_image_ids").to_pylist())):
        try:
            parse_clip_id(clip_id)
            for image_id in images or ():
                parse_image_id(image_id)
        except ValueError as exc:
            raise StageInputError(f"{path}: row {row}: {exc}") from None
        if not images:
            raise StageInputError(f"{path}: row {row}: query {clip_id} has no ground-truth image")
        if clip_id in gt:
            raise StageInputError(f"{path}: row {row}: query {clip_id} appears twice")
        gt[clip_id] = list(images)
    labels = {c: table.column(c).to_pylist() for c in slices if c in table.column_names}
    absent = [c for c in slices if c not in table.column_names]
    return QuerySet(clip_ids, gt, labels, absent)


def clip_ground_truth(clips: pa.Table) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Ground truth and galleries of training-format clips (``VIDEOINFO_SCHEMA``): each clip's
    shop image, and per livestream the sorted set of its clips' shop images (the gallery a clip
    is ranked in, as for test queries)."""
    gt: dict[str, list[str]] = {}
    galleries: dict[str, set[str]] = {}
    for clip_id, live_id, image_id in zip(
        clips.column("clip_id").to_pylist(), clips.column("live_id").to_pylist(), clips.column("image_id").to_pylist()
    ):
        gt[clip_id] = [image_id]
        galleries.setdefault(live_id, set()).add(image_id)
    return gt, {live: sorted(ids) for live, ids in galleries.items()}
