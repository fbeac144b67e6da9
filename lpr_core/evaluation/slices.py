"""Metrics per slice: per category, product-scale type, visible-duration type, product-number
type, livestream, or any other per-query label the caller passes as a column.

Each slice value gets its metrics and bootstrap intervals (resampling the livestreams that have
queries in the slice; see :mod:`lpr_core.evaluation.bootstrap`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lpr_core.evaluation.bootstrap import bootstrap_ci
from lpr_core.evaluation.metrics import DEFAULT_KS, metric_names, per_query_metrics
from lpr_core.evaluation.ranking import QueryResults

__all__ = ["LIVESTREAM", "MISSING_LABEL", "SliceMetrics", "slice_metrics"]

#: Column name of the per-livestream slice (taken from the results, not passed in).
LIVESTREAM = "livestream"
#: Label shown for a query whose slice label is None or NaN.
MISSING_LABEL = "(missing)"


@dataclass(frozen=True)
class SliceMetrics:
    """The metrics of one slice value.

    Attributes:
        column: the slice column, e.g. ``"category"`` or ``"livestream"``.
        value: the label, as a string.
        num_queries: queries with this label.
        num_livestreams: livestreams those queries come from.
        metrics: ``{"rank1": ..., ..., "mAP": ..., "MRR": ...}`` (fractions).
        ci: ``{metric: (low, high)}``.
    """

    column: str
    value: str
    num_queries: int
    num_livestreams: int
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]


def _label(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING_LABEL
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


def _order_key(label: str) -> tuple[int, float, str]:
    # numbers in numeric order, then text, the missing label last
    if label == MISSING_LABEL:
        return (2, 0.0, label)
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def slice_metrics(
    results: QueryResults,
    labels: Mapping[str, Sequence[object]] | None = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    by_livestream: bool = True,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> list[SliceMetrics]:
    """Metrics and intervals per value of each slice column.

    Args:
        results: per-query results.
        labels: ``column -> per-query labels``, each aligned with ``results.query_ids`` (for
            instance ``{"category": [...], "scale_type": [...]}``; map codes to names first if
            names should show). None/NaN labels form the ``"(missing)"`` slice.
        ks: rank-k cut-offs.
        by_livestream: add the ``"livestream"`` column (from ``results.live_ids``).
        n_boot, level, seed: bootstrap settings.

    Returns:
        Rows ordered by column (as given, livestream last) then value (numeric, then text).
    """
    columns: dict[str, np.ndarray] = {}
    for column, values in (labels or {}).items():
        if len(values) != len(results):
            raise ValueError(f"slice column {column!r} has {len(values)} labels for {len(results)} queries")
        if column == LIVESTREAM and by_livestream:
            raise ValueError(f"slice column name {LIVESTREAM!r} is reserved for the per-livestream slice")
        columns[column] = np.asarray([_label(v) for v in values], dtype=str)
    if by_livestream:
        columns[LIVESTREAM] = results.live_ids
    names = metric_names(ks)
    values = per_query_metrics(results, ks)
    rows: list[SliceMetrics] = []
    for column, column_labels in columns.items():
        for label in sorted(set(column_labels.tolist()), key=_order_key):
            mask = column_labels == label
            sub, groups = values[mask], results.live_ids[mask]
            ci = bootstrap_ci(sub, groups, n_boot=n_boot, level=level, seed=seed)
            rows.append(
                SliceMetrics(
                    column=column,
                    value=label,
                    num_queries=int(mask.sum()),
                    num_livestreams=len(set(groups.tolist())),
                    metrics={n: float(v) for n, v in zip(names, sub.mean(axis=0))},
                    ci={n: (float(lo), float(hi)) for n, (lo, hi) in zip(names, ci)},
                )
            )
    return rows
