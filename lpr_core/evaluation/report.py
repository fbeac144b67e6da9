"""A self-contained HTML evaluation report, for a person to open.

Contents: the headline metrics with their bootstrap intervals, the rank-k curve, a table and a bar
chart per slice column, and retrieval examples: for a random sample of queries and for the worst
ones, the query's frames in a strip, its top-5 gallery images (ground truth framed in green) and,
when the ground truth is not among them, the ground-truth image with its rank.

Everything is embedded (charts as PNG, images as JPEG thumbnails, both base64), so the single
file can be attached to an MLflow run or mailed. Image paths come from the caller; an image that
cannot be read shows as a grey "missing" box instead of failing the report.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpr_core.evaluation.ranking import QueryResults
from lpr_core.evaluation.slices import SliceMetrics
from lpr_core.io import atomic_write_text

__all__ = ["RetrievalExample", "select_examples", "make_examples", "render_report", "write_report"]

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


class _Thumbs:
    """Base64 JPEG thumbnails, cached by path (a gallery image can appear many times)."""

    def __init__(self, height: int) -> None:
        self.height = height
        self.cache: dict[str, str | None] = {}
        self.missing = 0

    def tag(self, path: PathLike | None, caption: str, css: str = "") -> str:
        uri = self._uri(path) if path is not None else None
        title = html.escape(caption)
        if uri is None:
            self.missing += 1
            return (
                f'<figure class="thumb {css}"><div class="missing" style="height:{self.height}px;'
                f'width:{self.height}px">missing</div><figcaption>{title}</figcaption></figure>'
            )
        return f'<figure class="thumb {css}"><img src="{uri}" alt="{title}"><figcaption>{title}</figcaption></figure>'

    def _uri(self, path: PathLike) -> str | None:
        key = os.fspath(path)
        if key not in self.cache:
            self.cache[key] = self._encode(Path(key))
        return self.cache[key]

    def _encode(self, path: Path) -> str | None:
        from PIL import Image, UnidentifiedImageError

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
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)  # type: ignore[arg-type]
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _curve_chart(curve: Sequence[tuple[int, float]], ks: Sequence[int]) -> str:
    from matplotlib.figure import Figure

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
    from matplotlib.figure import Figure

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

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1f2328;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th{background:#f6f8fa}td.l,th.l{text-align:left;font-family:ui-monospace,monospace}
.info td{text-align:left}
.ci{color:#57606a;font-size:11px}
.example{border:1px solid #d0d7de;border-radius:6px;padding:8px;margin:10px 0}
.example .head{font-family:ui-monospace,monospace;font-size:12px;margin-bottom:4px}
.badge{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-size:11px;margin-left:6px}
.badge.hit{background:#1a7f37}.badge.miss{background:#cf222e}
.row{display:flex;flex-wrap:wrap;gap:4px;align-items:flex-start}
.strip{background:#f6f8fa;padding:4px;border-radius:4px;margin-bottom:4px}
.label{font-size:11px;color:#57606a;width:64px}
figure.thumb{margin:0;text-align:center;font-size:10px;color:#57606a}
figure.thumb img,figure.thumb .missing{border:3px solid transparent;display:block}
figure.thumb.gt img,figure.thumb.gt .missing{border-color:#1a7f37}
figure.thumb.truth img,figure.thumb.truth .missing{border-color:#bf8700}
figure.thumb figcaption{max-width:140px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.missing{background:#d0d7de;color:#57606a;display:flex;align-items:center;justify-content:center;font-size:11px}
details summary{cursor:pointer;color:#0969da}
"""


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _ci(ci: tuple[float, float] | None) -> str:
    if ci is None:
        return ""
    return f'<span class="ci">[{_pct(ci[0])}, {_pct(ci[1])}]</span>'


def _summary_html(summary: Mapping[str, float], ci: Mapping[str, tuple[float, float]], level: float) -> str:
    metrics = [k for k in summary if not k.startswith("num_")]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    vals = "".join(f"<td><b>{_pct(summary[m])}</b><br>{_ci(ci.get(m))}</td>" for m in metrics)
    counts = ", ".join(f"{html.escape(k[4:].replace('_', ' '))}: {int(v)}" for k, v in summary.items() if k.startswith("num_"))
    return (
        f"<table><tr>{head}</tr><tr>{vals}</tr></table>"
        f'<p class="ci">Values in %; brackets: {int(round(level * 100))}% bootstrap interval over livestreams. {counts}.</p>'
    )


def _slice_section(rows: Sequence[SliceMetrics], metric: str, collapse_over: int) -> str:
    column = rows[0].column
    names = list(rows[0].metrics)
    head = '<th class="l">value</th><th>queries</th><th>livestreams</th>' + "".join(
        f"<th>{html.escape(n)}</th>" for n in names
    )
    body = []
    for r in rows:
        cells = "".join(f"<td>{_pct(r.metrics[n])}<br>{_ci(r.ci[n])}</td>" for n in names)
        body.append(
            f'<tr><td class="l">{html.escape(r.value)}</td><td>{r.num_queries}</td><td>{r.num_livestreams}</td>{cells}</tr>'
        )
    table = f"<table><tr>{head}</tr>{''.join(body)}</table>"
    chart = f'<img alt="{html.escape(metric)} by {html.escape(column)}" src="{_slice_chart(rows, metric)}">'
    if len(rows) > collapse_over:
        table = f"<details><summary>table of {len(rows)} values</summary>{table}</details>"
    return f"<h3>by {html.escape(column)}</h3><div>{chart}</div>{table}"


def _example_html(
    ex: RetrievalExample, thumbs: _Thumbs, image_paths: Mapping[str, PathLike], max_frames: int, hit_k: int
) -> str:
    gt = set(ex.gt_image_ids)
    is_hit = ex.rank <= hit_k
    rank_txt = "not retrieved" if math.isinf(ex.rank) else f"rank {int(ex.rank)}"
    badge = f'<span class="badge {"hit" if is_hit else "miss"}">{"hit" if is_hit else "miss"}@{hit_k}</span>'
    frames = list(ex.frame_paths)
    if len(frames) > max_frames:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    strip = "".join(thumbs.tag(p, Path(os.fspath(p)).stem[-4:]) for p in frames) or '<span class="ci">no frames</span>'
    tops = "".join(
        thumbs.tag(image_paths.get(i), f"#{n} {s:.3f}", "gt" if i in gt else "")
        for n, (i, s) in enumerate(ex.top, 1)
    )
    truth = ""
    if not is_hit and ex.gt_image_ids:
        first = ex.gt_image_ids[0]
        truth = '<div class="label">ground truth</div>' + thumbs.tag(image_paths.get(first), f"{rank_txt}", "truth")
    return (
        f'<div class="example"><div class="head">{html.escape(ex.query_id)} — {rank_txt}{badge}</div>'
        f'<div class="row strip"><div class="label">query frames</div>{strip}</div>'
        f'<div class="row"><div class="label">top {hit_k}</div>{tops}{truth}</div></div>'
    )


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
) -> str:
    """Render the report as one self-contained HTML string.

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
    """
    ci = dict(ci or {})
    image_paths = image_paths or {}
    thumbs = _Thumbs(thumb_height)
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if info:
        rows = "".join(f'<tr><th class="l">{html.escape(str(k))}</th><td class="l">{html.escape(str(v))}</td></tr>' for k, v in info.items())
        parts.append(f'<table class="info">{rows}</table>')
    parts.append("<h2>Summary</h2>")
    parts.append(_summary_html(summary, ci, level))
    if curve:
        parts.append(f'<h2>Rank-k curve</h2><img alt="rank-k curve" src="{_curve_chart(curve, ks)}">')
    if slices:
        parts.append(f"<h2>Slices ({html.escape(primary_metric)})</h2>")
        by_column: dict[str, list[SliceMetrics]] = {}
        for row in slices:
            by_column.setdefault(row.column, []).append(row)
        for rows in by_column.values():
            parts.append(_slice_section(rows, primary_metric, collapse_over=20))
    if examples or worst_examples:
        parts.append(
            f'<p class="ci">Each query: its frames, then its top {shown_k} gallery images with their scores. '
            "Green frame: a ground-truth image in the top; amber: the ground-truth image outside it, with its rank.</p>"
        )
    for heading, group in (("Retrieval examples (random)", examples), ("Worst queries", worst_examples)):
        if group:
            parts.append(f"<h2>{heading}</h2>")
            parts.extend(_example_html(ex, thumbs, image_paths, max_frames, shown_k) for ex in group)
    if thumbs.missing:
        parts.append(f'<p class="ci">{thumbs.missing} image(s) could not be read and show as "missing".</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: PathLike, report_html: str) -> Path:
    """Write the report atomically."""
    return atomic_write_text(path, report_html)
