"""DVC stage ``train_detector``: the one-class product detector on the annotated training frames.

    python -m lpr_core.stages.train_detector --prepared DIR --download DIR --out DIR --plots DIR \
        --metrics FILE [--params params.yaml] [--resume auto|never]

Reads the ``train_detector`` section of ``params.yaml``
(:class:`lpr_core.training.tasks.TrainDetectorParams`). Trains on the frames of
``<prepared>/train_clips.parquet`` that carry boxes (boxes mapped from original to downloaded
pixels with the sizes of the training frame manifest; ``data.val_fraction`` of the clips held out
for a validation mAP), then evaluates COCO mAP@0.5 and mAP@[.5:.95] (torchmetrics) on the test
frames with boxes (``<prepared>/test_frame_boxes.parquet`` with the test frame manifest). Runs
under ``torchrun`` as well (DDP through the shared training loop; rank 0 evaluates and writes).

Writes:

- ``<out>/detector.pt``: :func:`lpr_core.models.detector.save_detector`, loadable with
  :func:`~lpr_core.models.detector.load_detector`;
- ``<out>/train_summary.json``: params, hash, steps, resume note, all metrics, frame counts;
- ``<out>/checkpoints/`` (resumable checkpoint and params stamp), ``<out>/plots/``;
- ``--plots``: DVC plots, one ``step<TAB>metric`` TSV per training metric (``train_loss.tsv``,
  ``train_lr.tsv`` and the detector's own losses: ``train_classification.tsv``,
  ``train_bbox_regression.tsv``, ``train_bbox_ctrness.tsv`` for FCOS, ``train_loss_classifier.tsv``,
  ``train_loss_box_reg.tsv``, ... for Faster R-CNN);
- ``--metrics``: ``detector/map50``, ``detector/map`` (test), ``detector/map75``,
  ``detector/mar10``, ``detector/top_box_iou50`` (share of test frames whose crop box, the top
  detection over ``score_threshold``, has IoU >= 0.5 with the product: what ``evaluate`` crops), ``detector/val_map50``, ``detector/val_map``, ``detector/train_loss`` (and
  the other final losses), ``detector/steps``, ``detector/train_seconds``, ``detector/test_frames``.

Everything is logged to one MLflow run (params section, per-step ``train/*`` metrics, final
metrics, summary and plots as artifacts).

Restart: as ``train_encoder``: with ``--resume auto`` (default) a rerun on the same ``--out``
continues the last checkpoint (every ``train.checkpoint_every`` steps) when it was made with the
same params section and world size, else starts fresh and says why. ``dvc repro`` deletes a
stage's outputs before running it, so under DVC a resume needs ``persist: true`` on the output;
rerunning the command directly (or a retry by the orchestrator) resumes as is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lpr_core.data.datasets import DetectionDataset, ManifestImages, build_dataloader, detection_collate
from lpr_core.data.transforms import build_detection_transform
from lpr_core.inputs import read_table
from lpr_core.models.detector import evaluate_detector, save_detector
from lpr_core.runner import parse_args, run_stage
from lpr_core.training.flow import StageOutcome, run_training_stage
from lpr_core.training.resume import RESUME_MODES
from lpr_core.training.tasks import TrainDetectorParams, build_detector_task

__all__ = ["STAGE", "DetectorStage", "add_arguments", "run", "main"]

STAGE = "train_detector"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stage's command-line options."""
    parser.add_argument("--prepared", required=True, type=Path, help="output directory of the prepare stage")
    parser.add_argument("--download", required=True, type=Path, help="output directory of the download stage")
    parser.add_argument("--out", required=True, type=Path, help="model directory (detector.pt, checkpoints, summary)")
    parser.add_argument("--plots", required=True, type=Path, help="DVC plots directory (per-step TSVs)")
    parser.add_argument("--metrics", required=True, type=Path, help="DVC metrics file (JSON)")
    parser.add_argument("--resume", default="auto", choices=RESUME_MODES,
                        help="auto: continue a checkpoint made with the same params (default); never: start fresh")


def _map_metrics(values: dict[str, float], prefix: str) -> dict[str, float]:
    names = {"map_50": "map50", "map": "map", "map_75": "map75", "mar_10": "mar10", "top_box_iou50": "top_box_iou50"}
    return {f"detector/{prefix}{names[k.rsplit('/', 1)[-1]]}": v for k, v in values.items()}


class DetectorStage:
    """The detector-specific part of the stage (:class:`lpr_core.training.flow.TrainingStage`)."""

    name, prefix = STAGE, "detector"

    def __init__(self, args: argparse.Namespace, params: TrainDetectorParams) -> None:
        self.args, self.params = args, params

    def load(self) -> None:
        """Read the prepared tables and manifests; the test frames that carry boxes."""
        self.train_clips = read_table(self.args.prepared / "train_clips.parquet")
        test_boxes = read_table(self.args.prepared / "test_frame_boxes.parquet")
        self.frames = ManifestImages.from_download(self.args.download, "train", "frames")
        test_frames = ManifestImages.from_download(self.args.download, "test", "frames")
        self.test = DetectionDataset(test_boxes, test_frames, transform=build_detection_transform(train=False))

    def build(self):
        """The detector task on the annotated training frames (and the held-out frames)."""
        task, self.val = build_detector_task(self.params, self.train_clips, self.frames)
        return task

    def finish(self, task, result, device) -> StageOutcome:
        """Test (and validation) mAP, then ``detector.pt``."""

        def evaluate(dataset, prefix: str) -> dict[str, float]:
            loader = build_dataloader(
                dataset, batch_size=self.params.train.batch_size, num_workers=self.params.train.num_workers,
                device=str(device), collate_fn=detection_collate, persistent_workers=False,
            )
            threshold = self.params.model.score_threshold
            return _map_metrics(evaluate_detector(task.model, loader, device, score_threshold=threshold), prefix)

        metrics = evaluate(self.test, "")
        if self.val is not None:
            metrics.update(evaluate(self.val, "val_"))
        metrics["detector/test_frames"] = len(self.test)
        save_detector(task.model, self.params.model, Path(self.args.out) / "detector.pt")
        frames = {
            "train": len(task.dataset), "val": 0 if self.val is None else len(self.val), "test": len(self.test),
            "train_dropped": task.dataset.dropped, "test_dropped": self.test.dropped,
        }
        return StageOutcome(metrics, {"frames": frames, "detector": "detector.pt"})


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit status."""
    return run_stage(STAGE, args, lambda ctx: run_training_stage(DetectorStage(args, ctx.params), ctx),
                     params=TrainDetectorParams, errors=(FileNotFoundError, ValueError))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lpr_core.stages.train_detector``."""
    return run(parse_args(STAGE, __doc__, add_arguments, argv))


if __name__ == "__main__":
    sys.exit(main())
