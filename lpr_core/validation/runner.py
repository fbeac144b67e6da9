"""Run the whole validation and turn the checkpoint result into a summary and failing ids.

:func:`validate` is the pure core of the ``validate`` stage: it reads, decodes the image sample,
builds the check tables, runs the checkpoint (which writes Data Docs inside the GX project) and
returns a :class:`ValidationOutcome`. It writes nothing else and never touches its inputs.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lpr_core.validation.images import decode_sample
from lpr_core.validation.inputs import load_inputs
from lpr_core.validation.params import ValidateParams
from lpr_core.validation.project import (
    ProjectDriftError,
    data_docs_dir,
    open_context,
    project_drift,
    run_checkpoint,
)
from lpr_core.validation.tables import build_tables

__all__ = [
    "FAILING_COLUMNS",
    "CheckResult",
    "ValidationOutcome",
    "summarize",
    "summary_metrics",
    "format_summary",
    "validate",
]

#: Columns of the failing ids table.
FAILING_COLUMNS = ("suite", "check", "expectation", "column", "severity", "id", "detail")


@dataclass
class CheckResult:
    """One expectation's outcome.

    Attributes:
        suite: the suite (= check table) name.
        check: the expectation's short name (``meta.check``).
        expectation: the great-expectations expectation type.
        column: the column (or columns) it looks at.
        description: what it checks, in words.
        success: whether it passed.
        element_count: rows evaluated.
        unexpected_count: rows that did not meet it (it may still pass with a ``mostly``).
        ids: the ids of the first of those rows (up to ``MAX_IDS_PER_EXPECTATION``), in table order.
        observed: the observed value of an aggregate expectation.
        exception: the error message when the expectation could not be evaluated.
    """

    suite: str
    check: str
    expectation: str
    column: str
    description: str
    success: bool
    element_count: int = 0
    unexpected_count: int = 0
    ids: list[str] = field(default_factory=list)
    observed: Any = None
    exception: str = ""


@dataclass
class ValidationOutcome:
    """What :func:`validate` returns.

    Attributes:
        success: every expectation passed.
        summary: the JSON-friendly metrics summary (``validation_summary.json``).
        checks: every expectation's :class:`CheckResult`.
        failing: one row per unexpected id (:data:`FAILING_COLUMNS`); ``severity`` is ``error``
            for a failed expectation and ``warning`` for one that passed within its ``mostly``.
        data_docs: the Data Docs site directory inside the GX project.
        seconds: wall-clock time per step.
        cpu_seconds: CPU time per step (this process and its worker processes).
    """

    success: bool
    summary: dict
    checks: list[CheckResult]
    failing: pd.DataFrame
    data_docs: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)


def _column_of(kwargs: dict) -> str:
    if "column" in kwargs:
        return str(kwargs["column"])
    if "column_list" in kwargs:
        return ",".join(map(str, kwargs["column_list"]))
    return ""


def _checks_of(checkpoint_result) -> list[CheckResult]:
    out = []
    for vr in checkpoint_result.run_results.values():
        suite = vr.suite_name
        for r in vr.results:
            cfg = r.expectation_config
            res = r.result or {}
            index_list = res.get("unexpected_index_list") or res.get("partial_unexpected_index_list") or []
            ids = [str(d.get("id")) if isinstance(d, dict) else str(d) for d in index_list]
            exc = r.exception_info or {}
            if "raised_exception" not in exc:  # one entry per metric
                exc = next((v for v in exc.values() if isinstance(v, dict) and v.get("raised_exception")), {})
            out.append(
                CheckResult(
                    suite=suite,
                    check=str((cfg.meta or {}).get("check", cfg.type)),
                    expectation=cfg.type,
                    column=_column_of(cfg.kwargs),
                    description=cfg.description or "",
                    success=bool(r.success),
                    element_count=int(res.get("element_count") or 0),
                    unexpected_count=int(res.get("unexpected_count") or 0),
                    ids=ids,
                    observed=res.get("observed_value"),
                    exception=str(exc.get("exception_message") or "") if exc.get("raised_exception") else "",
                )
            )
    return out


def summarize(checks: list[CheckResult], tables: dict[str, pd.DataFrame], inputs, decoded: pd.DataFrame):
    """The metrics summary and the failing ids of a run.

    Args:
        checks: every expectation's outcome.
        tables: the check tables (for row counts and ``detail`` columns).
        inputs: the :class:`ValidationInputs` (reader rejects).
        decoded: the decode results.

    Returns:
        ``(summary dict, failing ids DataFrame)``.
    """
    suites: dict[str, dict] = {}
    for name, df in tables.items():
        suites[name] = {"success": True, "rows": int(len(df)), "expectations": 0, "failed": 0}
    for c in checks:
        s = suites.setdefault(c.suite, {"success": True, "rows": 0, "expectations": 0, "failed": 0})
        s["expectations"] += 1
        if not c.success:
            s["success"] = False
            s["failed"] += 1

    rows = []
    for c in checks:
        if c.success and not c.ids:
            continue
        severity = "warning" if c.success else "error"
        details = tables.get(c.suite)
        detail_of: dict = {}
        if details is not None and "detail" in details.columns and c.ids:
            text = details["detail"].astype(object)
            detail_of = dict(zip(details["id"].astype(str), text.where(text.notna(), "").astype(str)))
        if not c.ids:
            what = c.exception or (f"observed {c.observed}" if c.observed is not None else "")
            rows.append((c.suite, c.check, c.expectation, c.column, severity, "", what))
        for i in c.ids:
            rows.append((c.suite, c.check, c.expectation, c.column, severity, i, detail_of.get(i, "")))
        if c.suite == "files" and c.check == "reader_rejects" and not c.success:
            for name in c.ids:  # the rejected rows themselves
                info = inputs.sources.get(name)
                for file, line, why in info.rejects if info is not None else []:
                    rows.append((c.suite, c.check, c.expectation, c.column, severity, f"{file}:{line}", why))
    failing = pd.DataFrame(rows, columns=list(FAILING_COLUMNS))

    files = tables["files"]
    rates = files.loc[files["success_rate"].notna(), ["id", "success_rate"]]
    manifests = tables["manifests"]
    n_decoded = int(len(decoded))
    summary = {
        "success": all(c.success for c in checks),
        "suites": suites,
        "failed_checks": [f"{c.suite}.{c.check}" for c in checks if not c.success],
        "counts": {
            "test_queries": int(len(tables["test_queries"])),
            "test_livestreams": int(len(tables["test_livestreams"])),
            "test_gallery_images": int(len(tables["test_gallery"])),
            "train_clips": int(len(tables["train_clips"])),
            "boxes": int(len(tables["boxes"])),
            "manifest_rows": int(len(manifests)),
            "reader_rejects": int(files["rows_rejected"].sum()),
            "decoded": n_decoded,
            "decode_failures": int((~decoded["decoded"].astype(bool)).sum()) if n_decoded else 0,
            "duplicate_images": int((manifests["sha_unique"] == False).sum()),  # noqa: E712 (NA-aware)
            "failing_ids": int((failing["severity"] == "error").sum()),
            "warning_ids": int((failing["severity"] == "warning").sum()),
        },
        "download_success_rate": {
            str(i).removeprefix("manifest/").replace("_", "/", 1): round(float(r), 6)
            for i, r in zip(rates["id"], rates["success_rate"])
        },
        "boxes": _box_edges(tables.get("box_edges")),
    }
    return summary, failing


_EDGE_COUNTS = ("boxes", "checked", "past_edge", "no_area_left", "mostly_outside")


def _box_edges(edges: pd.DataFrame | None) -> dict[str, dict[str, float]]:
    """Per split: boxes, checked, past the frame edge, no area left, mostly outside, share past the edge."""
    if edges is None:
        return {}
    out = {}
    for row in edges.to_dict("records"):
        counts: dict[str, float] = {k: int(row[k]) for k in _EDGE_COUNTS}
        counts["past_edge_fraction"] = round(float(row["past_edge_fraction"]), 6)
        out[str(row["id"])] = counts
    return out


def summary_metrics(summary: dict) -> dict[str, float]:
    """Flat numeric metrics of a summary (``validate/...`` names), for MLflow and DVC.

    ``validate/success`` and ``validate/suite/<name>`` are 1.0 (passed) or 0.0 (failed);
    ``validate/boxes/<split>/<count>`` say per split how many boxes run past the frame edge (and
    the share, ``past_edge_fraction``), keep no area once clipped, or lie mostly outside.
    """
    metrics: dict[str, float] = {"validate/success": float(bool(summary["success"]))}
    metrics["validate/failed_checks"] = float(len(summary["failed_checks"]))
    for name, s in summary["suites"].items():
        metrics[f"validate/suite/{name}"] = float(bool(s["success"]))
    for name, n in summary["counts"].items():
        metrics[f"validate/count/{name}"] = float(n)
    for name, rate in summary["download_success_rate"].items():
        metrics[f"validate/download_success_rate/{name.replace('/', '_')}"] = float(rate)
    for split, counts in summary.get("boxes", {}).items():
        for name, value in counts.items():
            metrics[f"validate/boxes/{split}/{name}"] = float(value)
    return metrics


def format_summary(outcome: ValidationOutcome, *, max_ids: int = 5, out_dir: str | Path | None = None) -> str:
    """A short readable report: each failed expectation, how many rows, the first offending ids."""
    failed = [c for c in outcome.checks if not c.success]
    n_suites = len(outcome.summary["suites"])
    bad_suites = sorted({c.suite for c in failed})
    lines = []
    if outcome.success:
        lines.append(f"validation passed: {len(outcome.checks)} expectations in {n_suites} suites")
    else:
        lines.append(
            f"validation FAILED: {len(failed)} of {len(outcome.checks)} expectations in "
            f"{len(bad_suites)} of {n_suites} suites ({', '.join(bad_suites)})"
        )
    for c in failed:
        lines.append(f"- {c.suite}.{c.check}: {c.expectation}({c.column})")
        lines.append(f"    {c.description}")
        if c.exception:
            lines.append(f"    could not be evaluated: {c.exception}")
        elif c.ids or c.unexpected_count:
            share = f" of {c.element_count}" if c.element_count else ""
            listed = f", {len(c.ids)} listed" if len(c.ids) < c.unexpected_count else ""
            lines.append(
                f"    {c.unexpected_count}{share} rows unexpected{listed}; first ids: {', '.join(c.ids[:max_ids])}"
            )
            fail = outcome.failing
            rows = fail.loc[(fail["suite"] == c.suite) & (fail["check"] == c.check) & (fail["detail"] != "")]
            for i, d in zip(rows["id"].head(min(3, max_ids)), rows["detail"]):
                lines.append(f"      {i}: {d}")
        elif c.observed is not None:
            lines.append(f"    observed: {c.observed}")
    warned = [c for c in outcome.checks if c.success and c.ids]
    for c in warned:
        lines.append(
            f"  (warning) {c.suite}.{c.check}: {c.unexpected_count} rows within the allowed share; "
            f"first ids: {', '.join(c.ids[:max_ids])}"
        )
    if out_dir is not None:
        lines.append(f"details: {Path(out_dir) / 'failing_ids.csv'}, Data Docs: {Path(out_dir) / 'data_docs' / 'index.html'}")
    return "\n".join(lines)


def _cpu() -> float:
    """CPU seconds of this process and its finished workers."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def validate(
    annotations_dir: str | Path,
    download_dir: str | Path,
    gx_dir: str | Path,
    params: ValidateParams,
    *,
    data_docs: bool = True,
    progress: bool = False,
) -> ValidationOutcome:
    """Validate annotations, download manifests and images with the GX project at ``gx_dir``.

    Args:
        annotations_dir: the LPR4M files.
        download_dir: the download stage's output (manifests and files).
        gx_dir: the great-expectations project (must be in sync with the code).
        params: the ``validate`` section.
        data_docs: run the checkpoint's actions, which build the Data Docs site.
        progress: show progress bars.

    Raises:
        InputError: an input directory is missing.
        ProjectDriftError: the GX project differs from the code.
    """
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    opened: list = []

    def open_project() -> None:
        # importing great_expectations takes seconds: this runs while worker processes read the files
        context = open_context(gx_dir)
        drift = project_drift(context)
        if drift:
            raise ProjectDriftError(
                f"the great-expectations project at {gx_dir} differs from the code ({'; '.join(drift[:5])}); "
                f"update it with `python -m lpr_core.validation.project --gx-dir {gx_dir}` and commit it"
            )
        opened.append(context)

    t, c = time.perf_counter(), _cpu()
    inputs = load_inputs(
        annotations_dir, download_dir, workers=params.workers, max_examples=1000, meanwhile=open_project
    )
    (context,) = opened
    seconds["read_and_gx_setup"], cpu["read_and_gx_setup"] = time.perf_counter() - t, _cpu() - c

    t, c = time.perf_counter(), _cpu()
    decoded = decode_sample(
        inputs.manifests,
        inputs.download_dir,
        sample=params.decode_sample,
        seed=params.seed,
        workers=params.workers,
        progress=progress,
    )
    seconds["decode"], cpu["decode"] = time.perf_counter() - t, _cpu() - c

    t, c = time.perf_counter(), _cpu()
    tables = build_tables(inputs, decoded, params)
    seconds["tables"], cpu["tables"] = time.perf_counter() - t, _cpu() - c

    t, c = time.perf_counter(), _cpu()
    result = run_checkpoint(context, tables, params.expectation_parameters(), run_actions=data_docs)
    seconds["checkpoint"], cpu["checkpoint"] = time.perf_counter() - t, _cpu() - c

    checks = _checks_of(result)
    summary, failing = summarize(checks, tables, inputs, decoded)
    summary["success"] = bool(result.success) and bool(summary["success"])
    return ValidationOutcome(
        success=summary["success"],
        summary=summary,
        checks=checks,
        failing=failing,
        data_docs=data_docs_dir(context) if data_docs else None,
        seconds=seconds,
        cpu_seconds=cpu,
    )
