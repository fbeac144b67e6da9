"""The retrieval examples of the evaluation report, with their pictures: the query frames as the
encoder saw them (cropped the same way) and the gallery images, copied to a temporary directory
under neutral names (ids never become paths; webdataset tar members become readable files). The
misses of the error analysis show whole frames with the crop box (red) and the ground-truth box
(green) drawn, captioned with their IoU."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from lpr_core.data.datasets import ManifestImages, QueryClipDataset, sample_frame_positions
from lpr_core.data.transforms import crop_box, union_box
from lpr_core.evaluation.failures import FailureAnalysis, frame_iou, select_failures
from lpr_core.evaluation.params import EvaluateParams
from lpr_core.evaluation.queries import QuerySet
from lpr_core.evaluation.report import FailureExample, make_examples, render_report, select_examples
from lpr_core.evaluation.scoring import Evaluation
from lpr_core.ids import make_frame_id

__all__ = ["draw_boxes", "report_html", "sampled_frame_indices"]

#: Colours of the drawn boxes: the crop box the encoder saw, the annotated one.
CROP_COLOUR, TRUTH_COLOUR = (207, 34, 46), (26, 127, 55)


def sampled_frame_indices(dataset: QueryClipDataset) -> dict[str, list[int]]:
    """``clip_id -> frame indices`` the encoder read (T uniformly spaced available frames); clips
    without any downloaded frame are absent."""
    return {
        clip_id: [available[p] for p in sample_frame_positions(len(available), dataset.num_frames, "uniform")]
        for clip_id, available in zip(dataset.clip_ids, dataset.available)
    }


def draw_boxes(image: Image.Image, crop_boxes: Any, gt_boxes: Any) -> Image.Image:
    """A copy of ``image`` with the ground-truth boxes (green) and the crop box (red, the union of
    ``crop_boxes`` as the encoder crops) drawn, lines scaled to the image so they survive a
    thumbnail."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 60))
    for box in gt_boxes or []:
        draw.rectangle([float(v) for v in box], outline=TRUTH_COLOUR, width=width)
    crop = union_box(crop_boxes or [])
    if crop is not None:
        draw.rectangle(list(crop), outline=CROP_COLOUR, width=width)
    return out


def _frame_files(
    clip_ids: list[str], dataset: QueryClipDataset, frames: ManifestImages, root: Path
) -> dict[str, list[Path]]:
    """The frames each clip was embedded from, as JPEG files under ``root`` (unreadable frames skipped)."""
    position = {c: i for i, c in enumerate(dataset.clip_ids)}
    out: dict[str, list[Path]] = {}
    for n, clip_id in enumerate(clip_ids):
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
                image = crop_box(image, union_box(dataset.boxes.get((clip_id, frame_index), [])), dataset.box_padding)
            path = root / f"q{n}_{frame_index:04d}.jpg"  # the caption shows the frame index
            image.save(path, quality=85)
            paths.append(path)
        out[clip_id] = paths
    return out


def _boxed_frame_files(
    analysis: FailureAnalysis, query_ids: list[str], frames: ManifestImages, root: Path, max_frames: int
) -> dict[str, list[tuple[Path, str]]]:
    """Up to ``max_frames`` of each missed query's frames (evenly spaced over those the encoder
    read), whole, boxes drawn, captioned with the frame index and the crop box's IoU."""
    crop_boxes, gt_boxes = analysis.crop_boxes or {}, analysis.gt_boxes or {}
    out: dict[str, list[tuple[Path, str]]] = {}
    for n, query_id in enumerate(query_ids):
        indices = list(analysis.frame_indices.get(query_id, ()))
        if len(indices) > max_frames:
            indices = [indices[i] for i in np.linspace(0, len(indices) - 1, max_frames).round().astype(int)]
        shown = []
        for frame_index in indices:
            key = (query_id, frame_index)
            try:
                image = frames.open(make_frame_id(*key))
            except (OSError, ValueError, KeyError):
                continue  # the report shows what it can
            path = root / f"m{n}_{frame_index:04d}.jpg"
            draw_boxes(image, crop_boxes.get(key), gt_boxes.get(key)).save(path, quality=85)
            iou = frame_iou(crop_boxes.get(key), gt_boxes.get(key))
            if iou is not None:
                state = f"IoU {iou:.2f}"
            else:
                state = "no box" if not crop_boxes.get(key) else "no gt box"
            shown.append((path, f"{frame_index:04d} {state}"))
        out[query_id] = shown
    return out


def _image_files(image_ids: set[str], images: ManifestImages, root: Path) -> dict[str, Path]:
    """The shop images as files under ``root`` (images not downloaded or unreadable are skipped)."""
    out: dict[str, Path] = {}
    for n, image_id in enumerate(sorted(image_ids)):
        if image_id in images:
            try:
                data = images.read_bytes(image_id)
            except OSError:
                continue
            path = root / f"g{n}.jpg"
            path.write_bytes(data)
            out[image_id] = path
    return out


def report_html(
    evaluation: Evaluation,
    queries: QuerySet,
    dataset: QueryClipDataset,
    frames: ManifestImages,
    images: ManifestImages,
    params: EvaluateParams,
    info: Mapping[str, Any],
    failures: FailureAnalysis | None = None,
) -> str:
    """The self-contained HTML report of an evaluation (:func:`lpr_core.evaluation.render_report`).

    Args:
        evaluation: the scores.
        queries: the queries and their ground truth.
        dataset: the embedded query clips (which frames, which crops).
        frames: reader of the test frame manifest.
        images: reader of the test image manifest.
        params: the ``evaluate`` section (report settings, ks, interval level).
        info: key/value lines shown under the title.
        failures: the misses by failure kind (None: no error analysis); up to
            ``report.n_per_failure`` of each kind are shown.
    """
    rp = params.report
    random_ids, worst_ids = select_examples(evaluation.results, n_random=rp.n_random, n_worst=rp.n_worst, seed=rp.seed)
    shown_queries = random_ids + worst_ids
    with tempfile.TemporaryDirectory(prefix="lpr-report-") as tmp:
        root = Path(tmp)
        frame_paths = _frame_files(list(dict.fromkeys(shown_queries)), dataset, frames, root)
        shown = {i for q in shown_queries for i, _ in evaluation.predictions.get(q, [])[: rp.top]}
        shown |= {queries.gt[q][0] for q in shown_queries}
        picked = select_failures(failures.kinds, rp.n_per_failure, rp.seed) if failures is not None else {}
        missed = [q for ids in picked.values() for q in ids]
        boxed = _boxed_frame_files(failures, missed, frames, root, rp.max_frames) if failures is not None else {}
        shown |= {evaluation.predictions[q][0][0] for q in missed if evaluation.predictions.get(q)}
        shown |= {queries.gt[q][0] for q in missed if queries.gt.get(q)}
        image_paths = _image_files(shown, images, root)
        rank_of = dict(zip(evaluation.results.query_ids.tolist(), evaluation.results.rank.tolist()))
        failure_examples = {
            kind: [_failure_example(q, rank_of[q], boxed, evaluation.predictions, queries.gt) for q in ids]
            for kind, ids in picked.items()
        }
        examples = make_examples(
            random_ids, evaluation.results, evaluation.predictions, queries.gt, frame_paths, top=rp.top
        )
        worst = make_examples(worst_ids, evaluation.results, evaluation.predictions, queries.gt, frame_paths, top=rp.top)
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
            failure_counts=failures.counts if failures is not None else None,
            failure_examples=failure_examples,
            failure_note=failures.note if failures is not None else "",
        )


def _failure_example(
    query_id: str,
    rank: float,
    boxed: Mapping[str, list[tuple[Path, str]]],
    predictions: Mapping[str, Any],
    gt: Mapping[str, Any],
) -> FailureExample:
    top = predictions.get(query_id) or []
    truth = gt.get(query_id) or []
    return FailureExample(
        query_id=query_id,
        rank=rank,
        frames=tuple(boxed.get(query_id, ())),
        top1=(str(top[0][0]), float(top[0][1])) if top else None,
        gt_image_id=str(truth[0]) if truth else None,
    )
