"""Evaluate a trained encoder (and detector) on the test queries: what the ``evaluate`` stage does.

Each query clip of ``<prepared>/test_queries.parquet`` is embedded from T uniformly spaced frames
(T: the encoder's ``num_frames`` unless ``evaluate.num_frames`` says otherwise), its frames
cropped as the encoder was trained (:mod:`lpr_core.evaluation.crops`). A query is ranked only
against its own livestream's gallery: exactly, with the gallery embeddings of the
``index_gallery`` stage (:func:`lpr_core.evaluation.scoring.evaluate_embeddings`: rank-k, mAP,
MRR, bootstrap intervals over livestreams, slices); its top-k list comes from the saved faiss
index of its livestream, and both must agree. A query without any downloaded frame (or whose
livestream has no index) has no prediction and counts as a miss. Every miss at rank 1 gets a
failure kind (:mod:`lpr_core.evaluation.failures`: no frames, no box, wrong box, right box but
wrong image), judged against the annotated test boxes; the counts are metrics
(``test/misses/<kind>``) and the report shows a few misses of each kind.

:func:`evaluate` builds every output in memory; :func:`write_evaluation_outputs` writes them:
``report.html``, ``per_query.csv``, ``predictions.json`` (the official format
``{video_id: [[image_id, score], ...]}``), ``candidate.json`` (the evaluated model for the
registry gate) and the DVC plot tables.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpr_core import io
from lpr_core.data.datasets import ManifestImages
from lpr_core.embedding import embed_query_clips, load_encoder_checkpoint, resolve_embed_device
from lpr_core.evaluation.candidate import evaluation_data_version, read_validation_passed
from lpr_core.evaluation.crops import (
    DETECTOR_FILE,
    ground_truth_boxes,
    query_boxes,
    resolve_crops,
    trained_crop_settings,
)
from lpr_core.evaluation.examples import report_html, sampled_frame_indices
from lpr_core.evaluation.failures import FailureAnalysis, analyse_failures, failure_metrics
from lpr_core.evaluation.galleries import load_gallery
from lpr_core.evaluation.outputs import (
    metrics_dict,
    predictions_json,
    write_json,
    write_per_query,
    write_rank_k_curve,
    write_slice_tables,
)
from lpr_core.evaluation.params import EvaluateParams
from lpr_core.evaluation.queries import read_test_queries
from lpr_core.evaluation.report import write_report
from lpr_core.evaluation.scoring import Evaluation, evaluate_embeddings
from lpr_core.inputs import StageInputError, file_sha256

__all__ = ["DEFAULT_VALIDATION", "EvaluationRun", "evaluate", "write_evaluation_outputs"]

log = logging.getLogger(__name__)

#: Where the pipeline's validation summary of the test data lies.
DEFAULT_VALIDATION = Path("data/validate/validation_summary.json")


@dataclass
class EvaluationRun:
    """Everything the ``evaluate`` stage writes (:func:`evaluate`).

    Attributes:
        evaluation: the scores.
        metrics: the DVC metrics (:func:`lpr_core.evaluation.outputs.metrics_dict`, and the
            misses per failure kind ``test/misses/<kind>``).
        report_html: the self-contained report.
        candidate: the evaluated model for the registry gate (``candidate.json``).
        info: provenance, crop facts, timings, queries without frames.
        failures: the misses by failure kind.
    """

    evaluation: Evaluation
    metrics: dict[str, float]
    report_html: str
    candidate: dict[str, Any]
    info: dict[str, Any]
    failures: FailureAnalysis


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

    Args:
        prepared: the prepare stage's output (``test_queries``, ``test_frame_boxes``, ...).
        download: the download stage's output (the test manifests).
        encoder_dir: the directory holding ``encoder.pt``.
        detector_dir: the directory holding ``detector.pt`` (needed for detector crops).
        index_dir: the index_gallery stage's output.
        params: the ``evaluate`` section.
        validation: the validation summary of the test data (missing: not passed).
        progress: progress bars.

    Raises:
        StageInputError: a missing or malformed input, or an index built with another encoder.
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}
    queries = read_test_queries(prepared, params.slices)
    indexes, galleries, index_summary = load_gallery(index_dir, params.index_device)
    device, amp = resolve_embed_device(params.embed)
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
    if params.box_padding is not None:
        padding = params.box_padding
    else:
        padding = trained_padding if trained_padding is not None else 0.1
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
        score_threshold=params.detector_score_threshold,
        batch_size=params.detector_batch_size,
        device=device,
    )
    timings["boxes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    log.info("embedding %d query clips (crops %s) on %s", len(queries.clip_ids), crops, device)
    dataset, embeddings = embed_query_clips(
        model, queries.clip_ids, frames, params.embed, device, amp, num_frames=num_frames, boxes=boxes, box_padding=padding
    )
    timings["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluation = evaluate_embeddings(
        queries.gt, dataset.clip_ids, embeddings, indexes, galleries, params, queries.labels, progress=progress
    )
    timings["score"] = time.perf_counter() - t0
    if evaluation.index_agreement < 1 and all(g.spec.kind == "flat" for g in indexes.values()):
        log.warning(
            "exact faiss search and exact scoring agree on only %.4f of the queries (score ties?)",
            evaluation.index_agreement,
        )
    if crops == "ground_truth":
        truth_boxes = boxes
    else:  # judge the detector's boxes (and draw the annotated ones) when the table is there
        truth_boxes = ground_truth_boxes(prepared, frames, required=False)
    ranks = dict(zip(evaluation.results.query_ids.tolist(), evaluation.results.rank.tolist()))
    failures = analyse_failures(ranks, sampled_frame_indices(dataset), crops, boxes, truth_boxes)
    metrics = metrics_dict(evaluation, num_without_frames=len(dataset.missing))
    metrics.update(failure_metrics(failures.counts))
    data_version = evaluation_data_version(prepared, download)
    detector_path = Path(detector_dir) / DETECTOR_FILE if crops == "detector" and detector_dir is not None else None
    info: dict[str, Any] = {
        "encoder": encoder_path,
        "encoder_sha256": encoder_sha,
        "detector": detector_path if detector_path is not None else "not used",
        "crops": crops + (f" (from {crop_source})" if params.crops == "auto" and crop_source else ""),
        "box_padding": padding if crops != "none" else "-",
        "frames_per_query": num_frames,
        "index": ", ".join(sorted({g.spec.kind for g in indexes.values()})) + f" over {len(indexes)} livestreams",
        "queries without frames": len(dataset.missing),
        "data_version": data_version,
        **{f"detector {k}": v for k, v in box_facts.items()},
    }
    if queries.absent_columns:
        info["slice columns absent"] = ", ".join(queries.absent_columns)
    if params.crops == "auto" and not crop_source:
        log.warning("the encoder checkpoint does not record crop_boxes: full frames (crops: none)")
    t0 = time.perf_counter()
    report = report_html(evaluation, queries, dataset, frames, images, params, info, failures)
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
    return EvaluationRun(evaluation, metrics, report, candidate, info, failures)


def write_evaluation_outputs(
    run: EvaluationRun, out: str | os.PathLike[str], plots: str | os.PathLike[str], *, top_k: int = 10
) -> None:
    """Write ``out`` (report, per-query table, predictions, candidate) and ``plots`` (rank-k
    curve, slice tables), each directory replaced as a whole (:func:`lpr_core.io.atomic_dir`).
    The metrics file is the caller's, written last."""
    ev = run.evaluation
    with io.atomic_dir(out) as d:
        write_report(d / "report.html", run.report_html)
        write_per_query(d / "per_query.csv", ev.results)
        io.atomic_write_text(d / "predictions.json", predictions_json(ev.predictions, top_k))
        write_json(d / "candidate.json", run.candidate)
    with io.atomic_dir(plots) as d:
        write_rank_k_curve(d / "rank_k.csv", ev.results, max_k=len(ev.curve))
        if ev.slices:
            write_slice_tables(d / "slices", ev.slices)
