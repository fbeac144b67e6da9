"""Files the ``evaluate`` stage writes for DVC: a metrics JSON and plot data tables.

- :func:`write_metrics`: ``{"test/rank1": 0.31, ..., "test/rank1_ci_low": ..., ...}`` (fractions).
- :func:`write_rank_k_curve`: one row per k: ``k,accuracy`` (CSV, or JSON records by suffix);
  a ``dvc.yaml`` plot with ``x: k, y: accuracy``.
- :func:`write_slice_tables`: one CSV per slice column (``<dir>/<column>.csv``: value,
  num_queries, each metric with its interval); a ``bar_horizontal`` plot with ``x: rank1, y: value``.
- :func:`write_per_query`: one row per query (rank, AP, ...) for drill-down and comparison of runs.
- :func:`metrics_dict`: the ``evaluate`` stage's metrics (headline, bounds, counts, slices) with
  names safe for MLflow and DVC; :func:`predictions_json`: the official prediction file.

Every file is written atomically (:mod:`lpr_core.io`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lpr_core.evaluation.metrics import rank_k_curve
from lpr_core.evaluation.ranking import QueryResults
from lpr_core.evaluation.slices import LIVESTREAM, MISSING_LABEL, SliceMetrics
from lpr_core.io import atomic_write_text

if TYPE_CHECKING:
    from lpr_core.evaluation.scoring import Evaluation

__all__ = [
    "dvc_metrics",
    "metrics_dict",
    "predictions_json",
    "write_json",
    "write_metrics",
    "write_rank_k_curve",
    "write_slice_tables",
    "write_per_query",
]


def _jsonable(value: Any) -> Any:
    # JSON has no NaN/inf: write null (DVC and browsers choke on bare NaN).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (non-finite floats as null), atomically."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def dvc_metrics(
    summary: Mapping[str, float],
    ci: Mapping[str, tuple[float, float]] | None = None,
    *,
    split: str = "test",
) -> dict[str, float | int]:
    """Flat metrics named ``split/metric``, with ``split/metric_ci_low`` / ``_ci_high`` bounds."""
    out: dict[str, float | int] = {f"{split}/{name}": value for name, value in summary.items()}
    for name, (low, high) in (ci or {}).items():
        out[f"{split}/{name}_ci_low"] = low
        out[f"{split}/{name}_ci_high"] = high
    return out


def write_metrics(
    path: str | os.PathLike[str],
    summary: Mapping[str, float],
    ci: Mapping[str, tuple[float, float]] | None = None,
    *,
    split: str = "test",
) -> Path:
    """Write the DVC metrics JSON (see :func:`dvc_metrics`)."""
    return write_json(path, dvc_metrics(summary, ci, split=split))


def _table(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    if path.suffix == ".json":
        return write_json(path, [dict(zip(header, row)) for row in rows])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def write_rank_k_curve(path: str | os.PathLike[str], results: QueryResults, *, max_k: int = 20) -> Path:
    """Write the rank-k curve (``k, accuracy`` for k = 1..max_k); JSON records if ``path`` ends in .json."""
    rows = [(k, acc) for k, acc in rank_k_curve(results, max_k)]
    return _table(Path(path), ("k", "accuracy"), rows)


def _safe_file_stem(column: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in column).strip("_.")
    if not stem:
        raise ValueError(f"slice column {column!r} gives no usable file name")
    return stem


def write_slice_tables(
    directory: str | os.PathLike[str],
    slices: Sequence[SliceMetrics],
    *,
    suffix: str = ".csv",
) -> list[Path]:
    """Write one table per slice column: ``<directory>/<column><suffix>``.

    Columns: ``value, num_queries, num_livestreams``, then for each metric ``m``:
    ``m, m_ci_low, m_ci_high``.

    Returns:
        The files written, in column order.
    """
    by_column: dict[str, list[SliceMetrics]] = {}
    for row in slices:
        by_column.setdefault(row.column, []).append(row)
    written = []
    stems: dict[str, str] = {}
    for column, rows in by_column.items():
        stem = _safe_file_stem(column)
        if stem in stems:
            raise ValueError(f"slice columns {stems[stem]!r} and {column!r} map to the same file {stem}{suffix}")
        stems[stem] = column
        names = list(rows[0].metrics)
        header = ["value", "num_queries", "num_livestreams"]
        for name in names:
            header += [name, f"{name}_ci_low", f"{name}_ci_high"]
        table = []
        for row in rows:
            line: list[Any] = [row.value, row.num_queries, row.num_livestreams]
            for name in names:
                line += [row.metrics[name], *row.ci[name]]
            table.append(line)
        written.append(_table(Path(directory) / f"{stem}{suffix}", header, table))
    return written


def write_per_query(path: str | os.PathLike[str], results: QueryResults) -> Path:
    """Write one row per query: ``query_id, live_id, rank, average_precision, has_prediction,
    num_gt, num_gt_ranked`` (rank empty for a miss)."""
    rows = [
        (q, live, "" if math.isinf(r) else int(r), ap, int(has), int(ng), int(nr))
        for q, live, r, ap, has, ng, nr in zip(
            results.query_ids.tolist(),
            results.live_ids.tolist(),
            results.rank.tolist(),
            results.average_precision.tolist(),
            results.has_prediction.tolist(),
            results.num_gt.tolist(),
            results.num_gt_ranked.tolist(),
        )
    ]
    header = ("query_id", "live_id", "rank", "average_precision", "has_prediction", "num_gt", "num_gt_ranked")
    return _table(Path(path), header, rows)


_UNSAFE_KEY = re.compile(r"[^\w.\- ]+")


def _key_part(value: str) -> str:
    """A slice column or value as one segment of an MLflow/DVC metric name: only word characters,
    ``.``, ``-`` and spaces; never empty, ``.`` or ``..`` (MLflow refuses those paths)."""
    if value == MISSING_LABEL:
        return "missing"
    part = _UNSAFE_KEY.sub("_", value).strip()
    return part if part.strip(".") else part.replace(".", "_") or "_"


def metrics_dict(evaluation: Evaluation, *, num_without_frames: int = 0, split: str = "test") -> dict[str, float]:
    """The metrics file: headline metrics with bounds, counts, slice metrics (not per livestream)
    as ``split/<column>/<value>/<metric>`` and the index agreement.

    Args:
        evaluation: what :func:`lpr_core.evaluation.scoring.evaluate_embeddings` returned.
        num_without_frames: queries that had no downloaded frame (recorded as a count).
        split: the metric names' prefix.
    """
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


def predictions_json(predictions: Mapping[str, Sequence[tuple[str, float]]], top_k: int = 10) -> str:
    """The official prediction file ``{video_id: [[image_id, score], ...]}``, one query per line.

    Scores keep 6 decimals: rounding is monotonic, so each list stays best first.
    """
    lines = [
        f"{json.dumps(q)}: {json.dumps([[i, round(float(s), 6)] for i, s in p[:top_k]])}"
        for q, p in predictions.items()
    ]
    return "{\n" + ",\n".join(lines) + ("\n}\n" if lines else "}\n")
