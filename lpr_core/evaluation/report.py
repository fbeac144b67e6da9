"""A self-contained HTML evaluation report, for a person to open.

Contents: the headline metrics with their bootstrap intervals, the rank-k curve, a table and a bar
chart per slice column, and retrieval examples: for a random sample of queries and for the worst
ones, the query's frames in a strip, its top-5 gallery images (ground truth framed in green) and,
when the ground truth is not among them, the ground-truth image with its rank. The error analysis
shows the misses by failure kind (:mod:`lpr_core.evaluation.failures`): how many of each, and a few
of each with their frames (crop box and ground-truth box drawn), the image ranked first and the
right one.

Everything is embedded (charts as PNG, images as JPEG thumbnails, both base64), so the single
file can be attached to an MLflow run or mailed. Image paths come from the caller; an image that
cannot be read shows as a grey "missing" box instead of failing the report. The page is the
Jinja2 template ``templates/report.html.j2`` (autoescaped: ids, titles and labels are always
text); this module computes what it shows.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from lpr_core.evaluation.failures import KIND_TEXT
from lpr_core.evaluation.ranking import QueryResults
from lpr_core.evaluation.slices import SliceMetrics
from lpr_core.io import atomic_write_text

__all__ = ["FailureExample", "RetrievalExample", "select_examples", "make_examples", "render_report", "write_report"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class RetrievalExample:
    """One query as shown in the report.

    Attributes:
        query_id: the query clip id.
        rank: 1-based rank of its best ground-truth image (``inf``: not retrieved).
        frame_paths: the clip's frame image files, in time order.
        top: its best gallery images, ``(image_id, score)``, best first.
        gt_image_ids: its ground-truth images.
    """

    query_id: str
    rank: float
    frame_paths: tuple[PathLike, ...]
    top: tuple[tuple[str, float], ...]
    gt_image_ids: tuple[str, ...]


@dataclass(frozen=True)
class FailureExample:
    """A missed query as the error analysis shows it.

    Attributes:
        query_id: the query clip id.
        rank: 1-based rank of its best ground-truth image (``inf``: not retrieved).
        frames: ``(frame file, caption)`` of the frames shown, boxes drawn on them.
        top1: the image ranked first, ``(image_id, score)`` (None: no prediction).
        gt_image_id: the right image (None: unknown).
    """

    query_id: str
    rank: float
    frames: tuple[tuple[PathLike, str], ...]
    top1: tuple[str, float] | None
    gt_image_id: str | None


def select_examples(
    results: QueryResults, *, n_random: int = 6, n_worst: int = 6, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Pick query ids to show: a seeded random sample, and the worst queries.

    Only queries with a prediction are candidates. "Worst" means the largest rank of the best
    ground-truth image (not retrieved at all first), ties in ground-truth order.

    Returns:
        ``(random_query_ids, worst_query_ids)``.
    """
    candidates = np.flatnonzero(results.has_prediction)
    rng = np.random.default_rng(seed)
    picked = rng.choice(candidates, size=min(n_random, len(candidates)), replace=False) if len(candidates) else []
    order = candidates[np.argsort(-results.rank[candidates], kind="stable")][:n_worst]
    ids = results.query_ids
    return [str(ids[i]) for i in picked], [str(ids[i]) for i in order]


def make_examples(
    query_ids: Sequence[str],
    results: QueryResults,
    predictions: Mapping[str, Sequence[tuple[str, float]]],
    gt: Mapping[str, Sequence[str]],
    frame_paths: Mapping[str, Sequence[PathLike]],
    *,
    top: int = 5,
) -> list[RetrievalExample]:
    """Assemble :class:`RetrievalExample` rows for ``query_ids``.

    Args:
        query_ids: the queries to show (e.g. from :func:`select_examples`).
        results: per-query results (for the rank).
        predictions: ``query_id -> [(image_id, score), ...]`` best first (at least ``top`` each,
            e.g. from :func:`lpr_core.evaluation.top_k_predictions`).
        gt: ``query_id -> [image_id, ...]``.
        frame_paths: ``query_id -> [frame file, ...]`` (a query without frames shows none).
        top: gallery images shown per query.
    """
    rank_of = dict(zip(results.query_ids.tolist(), results.rank.tolist()))
    out = []
    for query_id in query_ids:
        if query_id not in rank_of:
            raise KeyError(f"query {query_id} is not in the results")
        out.append(
            RetrievalExample(
                query_id=query_id,
                rank=rank_of[query_id],
                frame_paths=tuple(frame_paths.get(query_id, ())),
                top=tuple((str(i), float(s)) for i, s in list(predictions.get(query_id, ()))[:top]),
                gt_image_ids=tuple(gt.get(query_id, ())),
            )
        )
    return out


# --------------------------------------------------------------------------- images and charts


@dataclass(frozen=True)
class _Figure:
    """A thumbnail as the template draws it: a data URI (None: the image could not be read)."""

    uri: str | None
    caption: str
    css: str = ""


class _Thumbs:
    """Base64 JPEG thumbnails, cached by path (a gallery image can appear many times)."""

    def __init__(self, height: int) -> None:
        self.height = height
        self.cache: dict[str, str | None] = {}
        self.missing = 0

    def figure(self, path: PathLike | None, caption: str, css: str = "") -> _Figure:
        uri = self._uri(path) if path is not None else None
        if uri is None:
            self.missing += 1
        return _Figure(uri, caption, css)

    def _uri(self, path: PathLike) -> str | None:
        key = os.fspath(path)
        if key not in self.cache:
            self.cache[key] = self._encode(Path(key))
        return self.cache[key]

    def _encode(self, path: Path) -> str | None:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((self.height * 4, self.height))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=80)
        except (OSError, UnidentifiedImageError, ValueError):
            return None
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _png_uri(fig: object) -> str:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)  # type: ignore[arg-type]
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _curve_chart(curve: Sequence[tuple[int, float]], ks: Sequence[int]) -> str:
    fig = Figure(figsize=(5.5, 3.2), dpi=100)
    ax = fig.add_subplot()
    xs = [k for k, _ in curve]
    ys = [100 * a for _, a in curve]
    ax.plot(xs, ys, marker=".", color="#1f6feb")
    for k, a in curve:
        if k in ks:
            ax.annotate(f"{100 * a:.1f}", (k, 100 * a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xlabel("k")
    ax.set_ylabel("rank-k accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks([k for k in xs if k in ks or k % 5 == 0])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png_uri(fig)


def _slice_chart(rows: Sequence[SliceMetrics], metric: str) -> str:
    if len(rows) > 20:  # many values (livestreams): best first reads better than by id
        rows = sorted(rows, key=lambda r: -r.metrics[metric] if not math.isnan(r.metrics[metric]) else math.inf)
    labels = [(r.value[:8] + "…" if len(r.value) > 12 else r.value) + f" (n={r.num_queries})" for r in rows]
    vals = np.array([100 * r.metrics[metric] for r in rows])
    lows = np.array([100 * r.ci[metric][0] for r in rows])
    highs = np.array([100 * r.ci[metric][1] for r in rows])
    err = np.nan_to_num(np.vstack([vals - lows, highs - vals]).clip(min=0))
    height = max(1.6, (0.22 if len(rows) <= 30 else 0.15) * len(rows) + 0.8)
    fig = Figure(figsize=(6.5, height), dpi=100)
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.barh(y, vals, xerr=err, color="#54aeff", ecolor="#444", capsize=2)
    ax.set_yticks(y, labels, fontsize=7 if len(rows) > 30 else 9)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"{metric} (%) with 95% interval")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png_uri(fig)


# --------------------------------------------------------------------------- HTML

_TEMPLATES = Environment(
    loader=PackageLoader("lpr_core.evaluation", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


@dataclass(frozen=True)
class _ExampleView:
    query_id: str
    rank_text: str
    hit: bool
    frames: list[_Figure]
    top: list[_Figure]
    truth: _Figure | None


def _example_view(
    ex: RetrievalExample, thumbs: _Thumbs, image_paths: Mapping[str, PathLike], max_frames: int, hit_k: int
) -> _ExampleView:
    gt = set(ex.gt_image_ids)
    hit = ex.rank <= hit_k
    rank_text = "not retrieved" if math.isinf(ex.rank) else f"rank {int(ex.rank)}"
    frames = list(ex.frame_paths)
    if len(frames) > max_frames:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    strip = [thumbs.figure(p, Path(os.fspath(p)).stem[-4:]) for p in frames]
    top = [
        thumbs.figure(image_paths.get(i), f"#{n} {s:.3f}", "gt" if i in gt else "") for n, (i, s) in enumerate(ex.top, 1)
    ]
    truth = None
    if not hit and ex.gt_image_ids:
        truth = thumbs.figure(image_paths.get(ex.gt_image_ids[0]), rank_text, "truth")
    return _ExampleView(ex.query_id, rank_text, bool(hit), strip, top, truth)


@dataclass(frozen=True)
class _FailureView:
    query_id: str
    rank_text: str
    frames: list[_Figure]
    wrong: _Figure | None
    truth: _Figure | None


def _failure_sections(
    counts: Mapping[str, int],
    examples: Mapping[str, Sequence[FailureExample]],
    thumbs: _Thumbs,
    image_paths: Mapping[str, PathLike],
) -> list[dict]:
    total = sum(counts.values())
    sections = []
    for kind, n in counts.items():
        views = []
        for ex in examples.get(kind, ()):
            rank_text = "not retrieved" if math.isinf(ex.rank) else f"rank {int(ex.rank)}"
            frames = [thumbs.figure(path, caption) for path, caption in ex.frames]
            wrong = thumbs.figure(image_paths.get(ex.top1[0]), f"#1 {ex.top1[1]:.3f}") if ex.top1 else None
            truth = thumbs.figure(image_paths.get(ex.gt_image_id), rank_text, "truth") if ex.gt_image_id else None
            views.append(_FailureView(ex.query_id, rank_text, frames, wrong, truth))
        share = f"{100 * n / total:.1f}" if total else "–"
        sections.append({"kind": kind, "count": n, "share": share, "text": KIND_TEXT.get(kind, ""), "examples": views})
    return sections


def render_report(
    *,
    summary: Mapping[str, float],
    ci: Mapping[str, tuple[float, float]] | None = None,
    curve: Sequence[tuple[int, float]] = (),
    slices: Sequence[SliceMetrics] = (),
    examples: Sequence[RetrievalExample] = (),
    worst_examples: Sequence[RetrievalExample] = (),
    image_paths: Mapping[str, PathLike] | None = None,
    title: str = "LPR evaluation",
    info: Mapping[str, str] | None = None,
    ks: Sequence[int] = (1, 3, 5, 10),
    primary_metric: str = "rank1",
    level: float = 0.95,
    thumb_height: int = 96,
    max_frames: int = 8,
    shown_k: int = 5,
    failure_counts: Mapping[str, int] | None = None,
    failure_examples: Mapping[str, Sequence[FailureExample]] | None = None,
    failure_note: str = "",
) -> str:
    """Render the report as one self-contained HTML string (``templates/report.html.j2``,
    autoescaped: ids, titles and labels are always text).

    Args:
        summary: headline metrics (:func:`lpr_core.evaluation.summarize`).
        ci: their intervals (:func:`lpr_core.evaluation.metric_cis`).
        curve: the rank-k curve (:func:`lpr_core.evaluation.rank_k_curve`).
        slices: per-slice rows (:func:`lpr_core.evaluation.slice_metrics`).
        examples: random retrieval examples (:func:`make_examples`).
        worst_examples: the worst queries, same form.
        image_paths: ``image_id -> file`` of gallery images.
        title: page title.
        info: extra key/value lines shown under the title (model version, data version, ...).
        ks: the k values marked on the curve.
        primary_metric: the metric of the slice bar charts.
        level: the interval level (for the legend).
        thumb_height: thumbnail height in pixels.
        max_frames: frames shown per query (evenly spaced over the clip).
        shown_k: the k of the examples' hit/miss badge (the examples' ``top`` length).
        failure_counts: misses per failure kind, every kind that applies (None: no error analysis;
            :func:`lpr_core.evaluation.failures.count_failures`).
        failure_examples: ``kind -> misses shown``.
        failure_note: how the kinds were judged (the crop mode).
    """
    image_paths = image_paths or {}
    thumbs = _Thumbs(thumb_height)
    by_column: dict[str, list[SliceMetrics]] = {}
    for row in slices:
        by_column.setdefault(row.column, []).append(row)
    sections = [
        {"column": column, "names": list(rows[0].metrics), "rows": rows, "chart": _slice_chart(rows, primary_metric)}
        for column, rows in by_column.items()
    ]
    groups = [
        (heading, [_example_view(ex, thumbs, image_paths, max_frames, shown_k) for ex in group])
        for heading, group in (("Retrieval examples (random)", examples), ("Worst queries", worst_examples))
        if group
    ]
    failures = _failure_sections(failure_counts or {}, failure_examples or {}, thumbs, image_paths)
    return _TEMPLATES.get_template("report.html.j2").render(
        title=title,
        info={str(k): str(v) for k, v in (info or {}).items()},
        metrics=[k for k in summary if not k.startswith("num_")],
        summary=summary,
        intervals=dict(ci or {}),
        counts=", ".join(f"{k[4:].replace('_', ' ')}: {int(v)}" for k, v in summary.items() if k.startswith("num_")),
        level_pct=int(round(level * 100)),
        curve_chart=_curve_chart(curve, ks) if curve else None,
        primary_metric=primary_metric,
        slice_sections=sections,
        collapse_over=20,
        groups=groups,
        failures=failures,
        failure_note=failure_note,
        shown_k=shown_k,
        thumb_height=thumb_height,
        missing=thumbs.missing,
        pct=_pct,
    )


def write_report(path: PathLike, report_html: str) -> Path:
    """Write the report atomically."""
    return atomic_write_text(path, report_html)
