"""The retrieval examples of the evaluation report, with their pictures: the query frames as the
encoder saw them (cropped the same way) and the gallery images, copied to a temporary directory
under neutral names (ids never become paths; webdataset tar members become readable files)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lpr_core.data.datasets import ManifestImages, QueryClipDataset, sample_frame_positions
from lpr_core.data.transforms import crop_box, union_box
from lpr_core.evaluation.params import EvaluateParams
from lpr_core.evaluation.queries import QuerySet
from lpr_core.evaluation.report import make_examples, render_report, select_examples
from lpr_core.evaluation.scoring import Evaluation
from lpr_core.ids import make_frame_id

__all__ = ["report_html"]


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
    """
    rp = params.report
    random_ids, worst_ids = select_examples(evaluation.results, n_random=rp.n_random, n_worst=rp.n_worst, seed=rp.seed)
    shown_queries = random_ids + worst_ids
    with tempfile.TemporaryDirectory(prefix="lpr-report-") as tmp:
        root = Path(tmp)
        frame_paths = _frame_files(list(dict.fromkeys(shown_queries)), dataset, frames, root)
        shown = {i for q in shown_queries for i, _ in evaluation.predictions.get(q, [])[: rp.top]}
        shown |= {queries.gt[q][0] for q in shown_queries}
        image_paths = _image_files(shown, images, root)
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
        )
