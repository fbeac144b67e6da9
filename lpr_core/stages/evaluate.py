"""DVC stage ``evaluate``: rank the test query clips against their livestream's gallery (LPR protocol).

    python -m lpr_core.stages.evaluate --prepared DIR --download DIR --encoder DIR --detector DIR
        --index DIR --out DIR --plots DIR --metrics FILE [--validation FILE] [--params params.yaml]

Each query clip of ``<prepared>/test_queries.parquet`` is embedded from T uniformly spaced frames
(T: the encoder's ``num_frames`` unless ``evaluate.num_frames`` says otherwise). Frames are cropped
to the product as the encoder was trained (``evaluate.crops``): ``auto`` follows the encoder
checkpoint (trained with ``crop_boxes``: detector boxes, else full frames), ``detector`` uses the
boxes of ``<detector>/detector.pt`` (a frame without a detection stays whole), ``ground_truth``
the annotated test boxes (an oracle, for comparison), ``none`` full frames.

A query is ranked only against its own livestream's gallery: exactly, with the gallery embeddings
of the ``index_gallery`` stage (:func:`lpr_core.evaluation.score_embeddings`: rank-k, mAP, MRR,
bootstrap intervals over livestreams, slices); its top-k list comes from the saved faiss index of
its livestream, and the stage checks that both agree. A query without any downloaded frame (or
whose livestream has no index) has no prediction and counts as a miss.

Writes (each directory built in a temporary sibling and renamed into place, the metrics file last):

- ``--metrics``: ``test/rank1``, ``test/rank3``, ``test/rank5``, ``test/rank10``, ``test/mAP``,
  ``test/MRR`` with ``_ci_low`` / ``_ci_high`` bounds, counts, and per slice value
  ``test/<column>/<value>/<metric>`` (e.g. ``test/scale_type/small/rank1``) for the gate;
- ``--plots``: ``rank_k.csv`` (``k, accuracy``) and ``slices/<column>.csv`` per slice column;
- ``--out``: ``report.html`` (self-contained: metrics, curve, slices, retrieval examples and the
  worst queries), ``per_query.csv``, ``predictions.json`` (the official format
  ``{video_id: [[image_id, score], ...]}``, best first, ``top_k`` entries) and ``candidate.json``
  (the evaluated model for the registry gate: encoder and detector paths, metrics, the
  ``data_version`` of the test data and whether its validation passed).

Reads the ``evaluate`` section of params.yaml (:class:`EvaluateParams`); logs it, every metric and
the report, predictions and candidate files to MLflow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lpr_core.evaluation.metrics import DEFAULT_KS
from lpr_core.stages.index_gallery import EmbedParams, StageInputError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from lpr_core.data.datasets import ManifestImages, QueryClipDataset
    from lpr_core.evaluation.ranking import Gallery, QueryResults
    from lpr_core.evaluation.slices import SliceMetrics
    from lpr_core.index.gallery import GalleryIndex

__all__ = [
    "DETECTOR_FILE",
    "CROP_MODES",
    "SLICE_COLUMNS",
    "BootstrapParams",
    "ReportParams",
    "EvaluateParams",
    "QuerySet",
    "Evaluation",
    "EvaluationRun",
    "read_test_queries",
    "load_gallery",
    "trained_crop_settings",
    "resolve_crops",
    "query_boxes",
    "embed_queries",
    "evaluate_embeddings",
    "metrics_dict",
    "evaluation_data_version",
    "read_validation_passed",
    "evaluate",
    "predictions_json",
    "write_evaluation_outputs",
    "add_arguments",
    "run",
    "main",
]

#: The detector checkpoint inside ``--detector`` (written by the train_detector stage).
DETECTOR_FILE = "detector.pt"
CROP_MODES = ("auto", "detector", "ground_truth", "none")
#: The optional per-query label columns of ``test_queries`` (see :mod:`lpr_core.data.prepare`).
SLICE_COLUMNS = ("category_name", "scale_type", "duration_type", "number_type")
DEFAULT_VALIDATION = Path("data/validate/validation_summary.json")


@dataclass(frozen=True)
class BootstrapParams:
    """Bootstrap over livestreams (:func:`lpr_core.evaluation.metric_cis`).

    Attributes:
        n_boot: replicates.
        level: coverage of the intervals.
        seed: seed of the resampling.
    """

    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_boot < 1 or not 0 < self.level < 1:
            raise ValueError(
                f"bootstrap needs n_boot >= 1 and 0 < level < 1, got {self.n_boot}, {self.level}"
            )


@dataclass(frozen=True)
class ReportParams:
    """The HTML report.

    Attributes:
        n_random: randomly chosen queries shown.
        n_worst: worst queries shown (largest rank of their ground truth).
        max_frames: frames shown per query.
        top: gallery images shown per query (the hit/miss badge is at this k).
        thumb_height: thumbnail height in pixels.
        seed: seed of the random sample.
    """

    n_random: int = 6
    n_worst: int = 6
    max_frames: int = 8
    top: int = 5
    thumb_height: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.n_random, self.n_worst) < 0 or min(self.max_frames, self.top, self.thumb_height) < 1:
            raise ValueError("report: n_random/n_worst must be >= 0, max_frames/top/thumb_height >= 1")


@dataclass(frozen=True)
class EvaluateParams:
    """The ``evaluate`` section of params.yaml.

    Attributes:
        ks: rank-k cut-offs of the headline metrics (the paper's 1, 3, 5, 10).
        curve_max_k: the rank-k curve goes from 1 to this.
        top_k: entries per query in ``predictions.json``.
        num_frames: T frames per query clip; None: the encoder's ``num_frames``.
        crops: ``auto`` | ``detector`` | ``ground_truth`` | ``none`` (see the module docstring).
        box_padding: context kept around a crop box; None: what the encoder was trained with
            (0.1 when the checkpoint does not say).
        detector_score_threshold: None: the detector's own ``score_threshold``.
        detector_batch_size: frames per detector forward pass.
        index_device: where the faiss indexes are searched: ``auto``, ``cpu`` or ``gpu``.
        slices: ``test_queries`` label columns to slice by (absent columns are skipped: the LPR4M
            release has none for the test set).
        slice_by_livestream: add the per-livestream slice (plots and report; not in the metrics
            file, which stays small at 110 livestreams).
        bootstrap: interval settings.
        report: report settings.
        embed: how the query clips are embedded.
    """

    ks: tuple[int, ...] = DEFAULT_KS
    curve_max_k: int = 20
    top_k: int = 10
    num_frames: int | None = None
    crops: str = "auto"
    box_padding: float | None = None
    detector_score_threshold: float | None = None
    detector_batch_size: int = 16
    index_device: str = field(default="auto", metadata={"runtime": True})
    slices: tuple[str, ...] = SLICE_COLUMNS
    slice_by_livestream: bool = True
    bootstrap: BootstrapParams = field(default_factory=BootstrapParams)
    report: ReportParams = field(default_factory=ReportParams)
    embed: EmbedParams = field(default_factory=EmbedParams)

    def __post_init__(self) -> None:
        from lpr_core.evaluation.metrics import metric_names

        metric_names(self.ks)  # positive, distinct
        if self.crops not in CROP_MODES:
            raise ValueError(f"crops must be one of {'|'.join(CROP_MODES)}, got {self.crops!r}")
        if self.index_device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"index_device must be auto|cpu|gpu, got {self.index_device!r}")
        if min(self.curve_max_k, self.top_k, self.detector_batch_size) < 1:
            raise ValueError("curve_max_k, top_k and detector_batch_size must be >= 1")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1 or null, got {self.num_frames}")
        if self.box_padding is not None and self.box_padding < 0:
            raise ValueError(f"box_padding must be >= 0 or null, got {self.box_padding}")


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


@dataclass
class Evaluation:
    """The scores of one set of query embeddings (:func:`evaluate_embeddings`).

    Attributes:
        results: per-query ranks from the exact scoring, in ground-truth order.
        summary: headline metrics (:func:`lpr_core.evaluation.summarize`).
        ci: their bootstrap intervals.
        slices: per-slice metrics.
        curve: ``[(k, accuracy)]`` for k = 1..curve_max_k.
        predictions: ``query_id -> [(image_id, score), ...]`` from the faiss indexes, best first.
        index_results: the per-query ranks of ``predictions`` (within their length).
        index_agreement: share of queries whose rank within the top ``top_k`` is the same both
            ways (1.0 for exact indexes).
    """

    results: QueryResults
    summary: dict[str, float]
    ci: dict[str, tuple[float, float]]
    slices: list[SliceMetrics]
    curve: list[tuple[int, float]]
    predictions: dict[str, list[tuple[str, float]]]
    index_results: QueryResults
    index_agreement: float


@dataclass
class EvaluationRun:
    """Everything the stage writes (:func:`evaluate`)."""

    evaluation: Evaluation
    metrics: dict[str, float]
    report_html: str
    candidate: dict[str, Any]
    info: dict[str, Any]


# ------------------------------------------------------------------------------------------ inputs


def _read_table(path: Path, columns: Sequence[str]) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise StageInputError(f"{path}: missing (run the prepare stage)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise StageInputError(f"{path}: unreadable Parquet ({exc})") from None
    absent = [c for c in columns if c not in table.column_names]
    if absent:
        raise StageInputError(f"{path}: missing column(s) {absent} (has {table.column_names})")
    return table


def read_test_queries(prepared: str | os.PathLike[str], slices: Sequence[str] = SLICE_COLUMNS) -> QuerySet:
    """The queries of ``<prepared>/test_queries.parquet`` with their ground truth and slice labels.

    Raises:
        StageInputError: a missing table or column, an invalid or repeated clip id, or a query
            without ground-truth images (named with its row).
    """
    from lpr_core.ids import parse_clip_id, parse_image_id

    path = Path(prepared) / "test_queries.parquet"
    table = _read_table(path, ["clip_id", "gt_image_ids"])
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


def load_gallery(
    index_dir: str | os.PathLike[str], device: str = "auto"
) -> tuple[dict[str, GalleryIndex], dict[str, Gallery], dict[str, Any]]:
    """The saved indexes and, per livestream, the exact gallery embeddings in index order.

    Returns:
        ``(indexes, galleries, summary)``; ``summary`` is the stage's ``index_summary.json`` ({}
        when absent).

    Raises:
        StageInputError: an index lists an image that has no saved embedding, or the index and
            the embeddings differ in dimension (a stale or mixed index directory).
    """
    import numpy as np

    from lpr_core.evaluation.ranking import Gallery
    from lpr_core.index.gallery import load_gallery_indexes
    from lpr_core.stages.index_gallery import SUMMARY_FILE, load_gallery_embeddings

    root = Path(index_dir)
    indexes = load_gallery_indexes(root, device=device)
    ids, emb = load_gallery_embeddings(root)
    row_of = {image_id: i for i, image_id in enumerate(ids)}
    galleries: dict[str, Gallery] = {}
    for live_id, gi in indexes.items():
        absent = [i for i in gi.image_ids if i not in row_of]
        if absent:
            raise StageInputError(
                f"{root}: the index of {live_id} holds image {absent[0]}, which has no saved embedding"
            )
        if gi.ntotal and gi.dim != emb.shape[1]:
            raise StageInputError(
                f"{root}: the index of {live_id} has dimension {gi.dim}, the embeddings {emb.shape[1]}"
            )
        rows = np.fromiter((row_of[i] for i in gi.image_ids), np.int64, count=len(gi.image_ids))
        galleries[live_id] = Gallery(gi.image_ids, emb[rows])
    summary_path = root / SUMMARY_FILE
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    return indexes, galleries, summary


def _find_key(obj: Any, key: str, depth: int = 4) -> Any:
    """The value of ``key`` in a nested mapping, breadth first (None when absent)."""
    level = [obj]
    for _ in range(depth):
        nxt = []
        for m in level:
            if isinstance(m, Mapping):
                if key in m:
                    return m[key]
                nxt += [v for v in m.values() if isinstance(v, Mapping)]
        level = nxt
    return None


def trained_crop_settings(encoder_path: str | os.PathLike[str]) -> tuple[bool | None, float | None, str]:
    """Whether the encoder was trained on box crops, with which padding, and where that was read.

    Looked up as ``crop_boxes`` / ``box_padding`` (at any depth, e.g. ``{"data": {"crop_boxes":
    true}}``) in the checkpoint's ``extra`` record, then in the JSON files beside the checkpoint
    (the training summary), in name order.

    Returns:
        ``(crop_boxes, box_padding, source)``; ``(None, None, "")`` when nothing records it.
    """
    import torch

    path = Path(encoder_path)
    sources: list[tuple[str, Any]] = []
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(obj, Mapping):
        sources.append((f"{path} (extra)", obj.get("extra")))
    for js in sorted(path.parent.glob("*.json")):
        try:
            sources.append((str(js), json.loads(js.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    for where, record in sources:
        crop = _find_key(record, "crop_boxes")
        if isinstance(crop, bool):
            padding = _find_key(record, "box_padding")
            number = isinstance(padding, int | float) and not isinstance(padding, bool)
            return crop, float(padding) if number else None, where
    return None, None, ""


def resolve_crops(requested: str, trained: bool | None) -> str:
    """The crop mode to use: ``requested`` unless ``auto``, which follows training (detector boxes
    for an encoder trained on box crops, full frames otherwise or when unknown)."""
    if requested not in CROP_MODES:
        raise ValueError(f"crops must be one of {'|'.join(CROP_MODES)}, got {requested!r}")
    if requested != "auto":
        return requested
    return "detector" if trained else "none"


def query_boxes(
    mode: str,
    clip_ids: Sequence[str],
    frames: ManifestImages,
    *,
    prepared: str | os.PathLike[str],
    detector_dir: str | os.PathLike[str] | None,
    num_frames: int,
    params: EvaluateParams,
    device: Any = "cpu",
) -> tuple[dict[tuple[str, int], list] | None, dict[str, Any]]:
    """The crop boxes of the query frames for ``mode`` (None: full frames) and facts to log.

    ``detector``: the boxes of ``<detector_dir>/detector.pt`` on the T frames each clip will use;
    ``ground_truth``: the annotated boxes of ``<prepared>/test_frame_boxes.parquet``.
    """
    if mode == "none":
        return None, {}
    if mode == "ground_truth":
        from lpr_core.data.datasets import frame_boxes_lookup

        table = _read_table(Path(prepared) / "test_frame_boxes.parquet", ["clip_id", "frame_index", "boxes"])
        boxes = frame_boxes_lookup(table, frames)
        return boxes, {"frames_with_box": len(boxes)}
    from lpr_core.models.detector import load_detector, query_frame_boxes

    if detector_dir is None:
        raise StageInputError("crops 'detector' needs --detector")
    path = Path(detector_dir) / DETECTOR_FILE
    if not path.is_file():
        raise StageInputError(f"{path}: detector checkpoint missing (run the train_detector stage)")
    model, config = load_detector(path)
    model.to(device)
    threshold = (
        config.score_threshold if params.detector_score_threshold is None else params.detector_score_threshold
    )
    boxes = query_frame_boxes(
        model,
        clip_ids,
        frames,
        num_frames=num_frames,
        score_threshold=threshold,
        mode=config.crop_mode,
        batch_size=params.detector_batch_size,
    )
    return boxes, {"frames_with_box": len(boxes), "score_threshold": threshold, "crop_mode": config.crop_mode}


def embed_queries(
    model: Any, dataset: QueryClipDataset, params: EmbedParams, device: Any, amp: bool
) -> np.ndarray:
    """``(len(dataset), d)`` float32 clip embeddings, in dataset order."""
    from lpr_core.models.encoder import embed_clips
    from lpr_core.stages.index_gallery import embed_dataset

    return embed_dataset(model, dataset, embed_clips, params, device, amp)


# ------------------------------------------------------------------------------------------ scoring


def evaluate_embeddings(
    gt: Mapping[str, Sequence[str]],
    query_ids: Sequence[str],
    query_embeddings: np.ndarray,
    indexes: Mapping[str, GalleryIndex],
    galleries: Mapping[str, Gallery],
    params: EvaluateParams = EvaluateParams(),
    labels: Mapping[str, Sequence[Any]] | None = None,
    *,
    progress: bool = False,
) -> Evaluation:
    """Score query embeddings with the LPR protocol, exactly and through the faiss indexes.

    Args:
        gt: ``clip_id -> [image_id, ...]``: every key is a query (a query missing from
            ``query_ids`` has no prediction: a miss).
        query_ids: the ``m`` embedded queries.
        query_embeddings: ``(m, d)`` float32, L2-normalised.
        indexes: ``live_id -> GalleryIndex`` (the top-k lists of ``predictions``).
        galleries: ``live_id -> Gallery`` with the same images in the same order (exact ranks).
        params: ks, bootstrap and list lengths.
        labels: slice labels aligned with the keys of ``gt``.
        progress: progress bars.
    """
    import numpy as np

    from lpr_core.evaluation import (
        metric_cis,
        rank_k_curve,
        score_embeddings,
        score_predictions,
        slice_metrics,
        summarize,
    )
    from lpr_core.ids import parse_clip_id
    from lpr_core.index.gallery import search_predictions

    b = params.bootstrap
    results = score_embeddings(gt, query_ids, query_embeddings, galleries, progress=progress)
    summary = summarize(results, params.ks)
    ci = metric_cis(results, params.ks, n_boot=b.n_boot, level=b.level, seed=b.seed)
    slices = slice_metrics(
        results,
        labels or {},
        ks=params.ks,
        by_livestream=params.slice_by_livestream,
        n_boot=b.n_boot,
        level=b.level,
        seed=b.seed,
    )
    k = max(params.top_k, params.report.top)
    live_ids = [parse_clip_id(q).live_id for q in query_ids]
    predictions = search_predictions(indexes, list(query_ids), live_ids, query_embeddings, k)
    index_results = score_predictions(gt, {q: p[: params.top_k] for q, p in predictions.items()})
    exact = np.where(results.rank <= params.top_k, results.rank, np.inf)
    agreement = float(np.mean(exact == index_results.rank)) if len(results) else float("nan")
    return Evaluation(
        results,
        summary,
        ci,
        slices,
        rank_k_curve(results, params.curve_max_k),
        predictions,
        index_results,
        agreement,
    )


_UNSAFE_KEY = re.compile(r"[^\w.\- ]+")


def _key_part(value: str) -> str:
    """A slice column or value as one segment of an MLflow/DVC metric name: only word characters,
    ``.``, ``-`` and spaces; never empty, ``.`` or ``..`` (MLflow refuses those paths)."""
    from lpr_core.evaluation.slices import MISSING_LABEL

    if value == MISSING_LABEL:
        return "missing"
    part = _UNSAFE_KEY.sub("_", value).strip()
    return part if part.strip(".") else part.replace(".", "_") or "_"


def metrics_dict(
    evaluation: Evaluation, *, num_without_frames: int = 0, split: str = "test"
) -> dict[str, float]:
    """The metrics file: headline metrics with bounds, counts, slice metrics (not per livestream)
    as ``split/<column>/<value>/<metric>`` and the index agreement."""
    from lpr_core.evaluation.outputs import dvc_metrics
    from lpr_core.evaluation.slices import LIVESTREAM

    out: dict[str, float] = dict(dvc_metrics(evaluation.summary, evaluation.ci, split=split))
    out[f"{split}/num_queries_without_frames"] = num_without_frames
    out[f"{split}/index_agreement"] = evaluation.index_agreement
    taken: dict[str, str] = {}
    for row in evaluation.slices:
        if row.column == LIVESTREAM:
            continue
        prefix = f"{split}/{_key_part(row.column)}/{_key_part(row.value)}"
        base, n = prefix, 1
        while taken.setdefault(prefix, f"{row.column}={row.value}") != f"{row.column}={row.value}":
            n += 1  # two labels that read the same once made safe ("a/b", "a_b") keep apart
            prefix = f"{base}_{n}"
        for name, value in row.metrics.items():
            out[f"{prefix}/{name}"] = value
        out[f"{prefix}/num_queries"] = row.num_queries
    return out


# ------------------------------------------------------------------------------------------ lineage


def _hash_table(h: Any, name: str, table: pa.Table) -> None:
    import pyarrow as pa

    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    h.update(name.encode() + b"\0")
    h.update(sink.getvalue().to_pybytes())


def evaluation_data_version(prepared: str | os.PathLike[str], download: str | os.PathLike[str]) -> str:
    """A content hash of the test data: the prepared test tables and the test download manifests.

    The manifests count by content only (id, status, image sha256 and sizes, sorted by id): a
    re-download of the same images from another server or into other shards keeps the version.

    Returns:
        64 hex digits.
    """
    import pyarrow.compute as pc

    from lpr_core.data.datasets import manifest_path
    from lpr_core.data.manifest import ManifestError, read_manifest

    h = hashlib.sha256(b"lpr-test-data/1\0")
    for name in ("test_queries", "test_gallery", "test_frame_boxes"):
        path = Path(prepared) / f"{name}.parquet"
        _hash_table(h, name, _read_table(path, []))
    for kind, id_column in (("frames", "frame_id"), ("images", "image_id")):
        path = manifest_path(download, "test", kind)
        try:
            table = read_manifest(path, kind)
        except ManifestError as exc:
            raise StageInputError(str(exc)) from None
        table = table.select(
            [id_column, "status", "sha256", "width", "height", "original_width", "original_height"]
        )
        table = table.take(pc.sort_indices(table, sort_keys=[(id_column, "ascending")]))
        _hash_table(h, f"manifest/test_{kind}", table)
    return h.hexdigest()


def read_validation_passed(path: str | os.PathLike[str] | None) -> bool:
    """``success`` of a ``validation_summary.json``; False when the file does not exist.

    Raises:
        StageInputError: the file exists but is not a JSON object with a boolean ``success``.
    """
    if path is None or not Path(path).is_file():
        return False
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageInputError(f"{path}: unreadable validation summary ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
        raise StageInputError(f"{path}: a validation summary needs a boolean 'success'")
    return data["success"]


# ------------------------------------------------------------------------------------------ report


def _report_html(
    evaluation: Evaluation,
    queries: QuerySet,
    dataset: QueryClipDataset,
    frames: ManifestImages,
    images: ManifestImages,
    params: EvaluateParams,
    info: Mapping[str, Any],
) -> str:
    """The report, with the example images copied to a temporary directory under neutral names
    (ids never become paths; webdataset tar members become readable files)."""
    from lpr_core.data.datasets import sample_frame_positions
    from lpr_core.data.transforms import crop_box, union_box
    from lpr_core.evaluation import make_examples, render_report, select_examples
    from lpr_core.ids import make_frame_id

    rp = params.report
    random_ids, worst_ids = select_examples(
        evaluation.results, n_random=rp.n_random, n_worst=rp.n_worst, seed=rp.seed
    )
    position = {c: i for i, c in enumerate(dataset.clip_ids)}
    with tempfile.TemporaryDirectory(prefix="lpr-report-") as tmp:
        root = Path(tmp)
        frame_paths: dict[str, list[Path]] = {}
        for n, clip_id in enumerate(dict.fromkeys(random_ids + worst_ids)):
            i = position.get(clip_id)
            if i is None:
                continue
            available = dataset.available[i]
            paths = []
            for pos in sample_frame_positions(len(available), dataset.num_frames, "uniform"):
                frame_index = available[pos]
                try:
                    image = frames.open(make_frame_id(clip_id, frame_index))
                except (OSError, ValueError, KeyError):
                    continue  # the report shows what it can
                if dataset.boxes is not None:
                    image = crop_box(
                        image, union_box(dataset.boxes.get((clip_id, frame_index), [])), dataset.box_padding
                    )
                path = root / f"q{n}_{frame_index:04d}.jpg"  # the caption shows the frame index
                image.save(path, quality=85)
                paths.append(path)
            frame_paths[clip_id] = paths
        shown = {i for q in random_ids + worst_ids for i, _ in evaluation.predictions.get(q, [])[: rp.top]}
        shown |= {queries.gt[q][0] for q in random_ids + worst_ids}
        image_paths: dict[str, Path] = {}
        for n, image_id in enumerate(sorted(shown)):
            if image_id in images:
                try:
                    data = images.read_bytes(image_id)
                except OSError:
                    continue
                path = root / f"g{n}.jpg"
                path.write_bytes(data)
                image_paths[image_id] = path
        examples = make_examples(
            random_ids, evaluation.results, evaluation.predictions, queries.gt, frame_paths, top=rp.top
        )
        worst = make_examples(
            worst_ids, evaluation.results, evaluation.predictions, queries.gt, frame_paths, top=rp.top
        )
        return render_report(
            summary=evaluation.summary,
            ci=evaluation.ci,
            curve=evaluation.curve,
            slices=evaluation.slices,
            examples=examples,
            worst_examples=worst,
            image_paths=image_paths,
            title="LPR evaluation: test queries",
            info={k: str(v) for k, v in info.items()},
            ks=params.ks,
            level=params.bootstrap.level,
            thumb_height=rp.thumb_height,
            max_frames=rp.max_frames,
            shown_k=rp.top,
        )


# ------------------------------------------------------------------------------------------ the stage


def evaluate(
    prepared: str | os.PathLike[str],
    download: str | os.PathLike[str],
    encoder_dir: str | os.PathLike[str],
    detector_dir: str | os.PathLike[str] | None,
    index_dir: str | os.PathLike[str],
    params: EvaluateParams = EvaluateParams(),
    *,
    validation: str | os.PathLike[str] | None = DEFAULT_VALIDATION,
    progress: bool = True,
) -> EvaluationRun:
    """Run the evaluation (see the module docstring) and build every output in memory.

    Raises:
        StageInputError: a missing or malformed input, or an index built with another encoder.
    """
    from lpr_core.data.datasets import ManifestImages, QueryClipDataset
    from lpr_core.stages.index_gallery import (
        eval_transform,
        file_sha256,
        load_encoder_checkpoint,
        resolve_device,
    )

    start = time.perf_counter()
    timings: dict[str, float] = {}
    queries = read_test_queries(prepared, params.slices)
    indexes, galleries, index_summary = load_gallery(index_dir, params.index_device)
    device, amp = resolve_device(params.embed)
    model, encoder_path = load_encoder_checkpoint(encoder_dir, device)
    encoder_sha = file_sha256(encoder_path)
    built_with = index_summary.get("encoder_sha256")
    if built_with and built_with != encoder_sha:
        raise StageInputError(
            f"{index_dir} was built with encoder {built_with[:12]}, not {encoder_path} "
            f"({encoder_sha[:12]}): rerun index_gallery"
        )
    dims = {g.dim for g in indexes.values() if g.ntotal}
    if dims - {model.config.embed_dim}:
        raise StageInputError(
            f"{index_dir}: index dimension {sorted(dims)} differs from the encoder's {model.config.embed_dim}"
        )
    trained, trained_padding, crop_source = trained_crop_settings(encoder_path)
    crops = resolve_crops(params.crops, trained)
    padding = (
        params.box_padding
        if params.box_padding is not None
        else (trained_padding if trained_padding is not None else 0.1)
    )
    num_frames = params.num_frames or model.config.num_frames

    frames = ManifestImages.from_download(download, "test", "frames")
    images = ManifestImages.from_download(download, "test", "images")
    t0 = time.perf_counter()
    timings["load"] = t0 - start  # inputs, index, encoder (and the imports of torch and faiss)
    boxes, box_facts = query_boxes(
        crops,
        queries.clip_ids,
        frames,
        prepared=prepared,
        detector_dir=detector_dir,
        num_frames=num_frames,
        params=params,
        device=device,
    )
    timings["boxes"] = time.perf_counter() - t0
    dataset = QueryClipDataset(
        queries.clip_ids,
        frames,
        num_frames=num_frames,
        transform=eval_transform(model),
        boxes=boxes,
        box_padding=padding,
    )
    t0 = time.perf_counter()
    embeddings = embed_queries(model, dataset, params.embed, device, amp)
    timings["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluation = evaluate_embeddings(
        queries.gt,
        dataset.clip_ids,
        embeddings,
        indexes,
        galleries,
        params,
        queries.labels,
        progress=progress,
    )
    timings["score"] = time.perf_counter() - t0
    if evaluation.index_agreement < 1 and all(g.spec.kind == "flat" for g in indexes.values()):
        print(
            "evaluate: warning: exact faiss search and exact scoring agree on only "
            f"{evaluation.index_agreement:.4f} "
            "of the queries (score ties?)",
            file=sys.stderr,
        )
    metrics = metrics_dict(evaluation, num_without_frames=len(dataset.missing))
    data_version = evaluation_data_version(prepared, download)
    detector_path = (
        Path(detector_dir) / DETECTOR_FILE if crops == "detector" and detector_dir is not None else None
    )
    info: dict[str, Any] = {
        "encoder": encoder_path,
        "encoder_sha256": encoder_sha,
        "detector": detector_path if detector_path is not None else "not used",
        "crops": crops + (f" (from {crop_source})" if params.crops == "auto" and crop_source else ""),
        "box_padding": padding if crops != "none" else "-",
        "frames_per_query": num_frames,
        "index": ", ".join(sorted({g.spec.kind for g in indexes.values()}))
        + f" over {len(indexes)} livestreams",
        "queries without frames": len(dataset.missing),
        "data_version": data_version,
        **{f"detector {k}": v for k, v in box_facts.items()},
    }
    if queries.absent_columns:
        info["slice columns absent"] = ", ".join(queries.absent_columns)
    if params.crops == "auto" and not crop_source:
        print(
            "evaluate: note: the encoder checkpoint does not record crop_boxes: full frames (crops: none)",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    report = _report_html(evaluation, queries, dataset, frames, images, params, info)
    timings["report"] = time.perf_counter() - t0
    candidate = {
        "encoder": str(encoder_dir),
        "encoder_sha256": encoder_sha,
        "detector": str(detector_dir) if detector_path is not None else None,
        "detector_sha256": file_sha256(detector_path) if detector_path is not None else None,
        "crops": crops,
        "metrics": metrics,
        "data_version": data_version,
        "validation_passed": read_validation_passed(validation),
        "validation_summary": str(validation) if validation is not None else None,
    }
    timings["total"] = time.perf_counter() - start
    info["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    info["missing_query_ids"] = list(dataset.missing)
    info["box_facts"] = box_facts
    return EvaluationRun(evaluation, metrics, report, candidate, info)


def predictions_json(predictions: Mapping[str, Sequence[tuple[str, float]]], top_k: int = 10) -> str:
    """The official prediction file ``{video_id: [[image_id, score], ...]}``, one query per line.

    Scores keep 6 decimals: rounding is monotonic, so each list stays best first.
    """
    lines = [
        f"{json.dumps(q)}: {json.dumps([[i, round(float(s), 6)] for i, s in p[:top_k]])}"
        for q, p in predictions.items()
    ]
    return "{\n" + ",\n".join(lines) + ("\n}\n" if lines else "}\n")


def write_evaluation_outputs(
    run: EvaluationRun,
    out: str | os.PathLike[str],
    plots: str | os.PathLike[str],
    metrics_path: str | os.PathLike[str],
    *,
    top_k: int = 10,
) -> None:
    """Write ``--out``, ``--plots`` (each replaced as a whole) and then the metrics file."""
    from lpr_core.evaluation.outputs import (
        write_json,
        write_per_query,
        write_rank_k_curve,
        write_slice_tables,
        write_text_atomic,
    )
    from lpr_core.evaluation.report import write_report
    from lpr_core.stages.index_gallery import fresh_tmp_dir, replace_dir

    ev = run.evaluation

    def fill_out(d: Path) -> None:
        write_report(d / "report.html", run.report_html)
        write_per_query(d / "per_query.csv", ev.results)
        write_text_atomic(d / "predictions.json", predictions_json(ev.predictions, top_k))
        write_json(d / "candidate.json", run.candidate)

    def fill_plots(d: Path) -> None:
        write_rank_k_curve(d / "rank_k.csv", ev.results, max_k=len(ev.curve))
        if ev.slices:
            write_slice_tables(d / "slices", ev.slices)

    for target, fill in ((Path(out), fill_out), (Path(plots), fill_plots)):
        tmp = fresh_tmp_dir(target)
        try:
            fill(tmp)
            replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    write_json(metrics_path, run.metrics)


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stage's command-line options."""
    parser.add_argument("--prepared", required=True, type=Path, help="output directory of the prepare stage")
    parser.add_argument("--download", required=True, type=Path, help="output directory of the download stage")
    parser.add_argument("--encoder", required=True, type=Path, help="directory holding encoder.pt")
    parser.add_argument(
        "--detector", type=Path, help=f"directory holding {DETECTOR_FILE} (needed for detector crops)"
    )
    parser.add_argument(
        "--index", required=True, type=Path, help="output directory of the index_gallery stage"
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="report, per-query table, predictions, candidate (replaced atomically)",
    )
    parser.add_argument("--plots", required=True, type=Path, help="DVC plot tables (replaced atomically)")
    parser.add_argument("--metrics", required=True, type=Path, help="DVC metrics JSON")
    parser.add_argument(
        "--validation",
        type=Path,
        default=DEFAULT_VALIDATION,
        help=f"validation summary of the test data (default {DEFAULT_VALIDATION}; "
        "missing: validation_passed false)",
    )
    parser.add_argument("--params", default=Path("params.yaml"), type=Path, help="parameter file")


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit status (1 with a message on bad input)."""
    from lpr_core.config import ConfigError, load_section, to_mapping
    from lpr_core.index.gallery import IndexFileError
    from lpr_core.tracking.run import stage_run

    try:
        params = load_section(EvaluateParams, "evaluate", args.params)
    except ConfigError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 1
    try:
        with stage_run("evaluate", {"evaluate": to_mapping(params)}) as tracker:
            result = evaluate(
                args.prepared,
                args.download,
                args.encoder,
                args.detector,
                args.index,
                params,
                validation=args.validation,
            )
            write_evaluation_outputs(result, args.out, args.plots, args.metrics, top_k=params.top_k)
            tracker.log_metrics(
                {
                    k: v
                    for k, v in result.metrics.items()
                    if v is not None and not (isinstance(v, float) and math.isnan(v))
                }
            )
            tracker.log_metrics({f"evaluate/time_{k}_s": v for k, v in result.info["timings_s"].items()})
            tracker.set_tags(
                {
                    "lpr.encoder_sha256": result.candidate["encoder_sha256"],
                    "lpr.test_data_version": result.candidate["data_version"],
                    "lpr.validation_passed": str(result.candidate["validation_passed"]).lower(),
                    "lpr.crops": result.candidate["crops"],
                }
            )
            for name in ("report.html", "predictions.json", "candidate.json", "per_query.csv"):
                tracker.log_artifact(Path(args.out) / name)
    except (StageInputError, IndexFileError, FileNotFoundError, ValueError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 1
    s = result.evaluation.summary
    ci = result.evaluation.ci
    print(
        f"evaluate: {int(s['num_queries'])} queries, {len(result.info['missing_query_ids'])} without frames, "
        f"crops {result.candidate['crops']}"
    )
    for name in (f"rank{k}" for k in params.ks):
        print(f"  test/{name:<7} {100 * s[name]:6.2f}%  [{100 * ci[name][0]:.2f}, {100 * ci[name][1]:.2f}]")
    print(f"  test/mAP     {100 * s['mAP']:6.2f}%   test/MRR {100 * s['MRR']:6.2f}%")
    print(f"  report: {Path(args.out) / 'report.html'}   ({result.info['timings_s']['total']:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lpr_core.stages.evaluate``."""
    parser = argparse.ArgumentParser(
        prog="python -m lpr_core.stages.evaluate", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
