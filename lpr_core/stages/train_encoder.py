"""DVC stage ``train_encoder``: the RICE clip/image encoder on the prepared training clips.

    python -m lpr_core.stages.train_encoder --prepared DIR --download DIR --out DIR --plots DIR \
        --metrics FILE [--params params.yaml] [--resume auto|never]
    torchrun --nproc-per-node N -m lpr_core.stages.train_encoder ...   (DDP: NCCL on GPU, gloo on CPU)

Reads the ``train_encoder`` section of ``params.yaml``
(:class:`lpr_core.training.tasks.TrainEncoderParams`), trains on ``<prepared>/train_clips.parquet``
with the training frame and shop image manifests of ``--download`` (boxes mapped to the
downloaded size; frames cropped to their ground-truth boxes when ``data.crop_boxes``), then, on
rank 0, checks retrieval on ``<prepared>/val_clips.parquet``: each validation clip ranked among
the shop images of its own livestream's validation clips (ground-truth box crops when
``data.crop_boxes``; the test-time detector crops are the ``evaluate`` stage's business).

Writes (rank 0 only):

- ``<out>/encoder.pt``: :func:`lpr_core.models.encoder.save_encoder`, loadable with
  :func:`~lpr_core.models.encoder.load_encoder`; its ``extra`` holds the ``data`` part of the
  section (``crop_boxes``, ``box_padding``: how query frames must be cropped), the step and the
  params hash;
- ``<out>/train_summary.json``: params, hash, steps, resume note, final training and
  validation metrics, dataset counts, timings;
- ``<out>/checkpoints/``: the resumable checkpoint and the params stamp; ``<out>/plots/``: the
  curves as the training loop writes them;
- ``--plots``: DVC plots, one ``step<TAB>metric`` TSV per training metric (``train_loss.tsv``,
  ``train_lr.tsv``, ...);
- ``--metrics``: ``encoder/val_rank1``, ``encoder/val_rank5``, ``encoder/val_mAP``,
  ``encoder/train_loss`` (and the other final losses), ``encoder/steps``, ``encoder/train_seconds``.

Everything is logged to one MLflow run (the params section, per-step ``train/*`` metrics, the
final metrics, the summary and plots as artifacts).

Restart: a checkpoint is written every ``train.checkpoint_every`` steps. With ``--resume auto``
(the default) a rerun on the same ``--out`` continues from it when it was made with the same
params section and world size (a stamp in ``<out>/checkpoints/``); otherwise it starts fresh and
says why. Note that ``dvc repro`` deletes a stage's outputs before running it: resuming happens
when the command is rerun directly (as above, or by the Airflow/Kubernetes retry of the same
command), or under DVC when the output is marked ``persist: true``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lpr_core.config import to_mapping
from lpr_core.data.datasets import ManifestImages, frame_boxes_lookup, videoinfo_frame_boxes
from lpr_core.evaluation.queries import clip_ground_truth
from lpr_core.evaluation.retrieval import score_clips
from lpr_core.inputs import read_table
from lpr_core.models.encoder import save_encoder
from lpr_core.runner import parse_args, run_stage
from lpr_core.training.flow import StageOutcome, run_training_stage
from lpr_core.training.resume import RESUME_MODES, params_sha256
from lpr_core.training.tasks import TrainEncoderParams, build_encoder_task

__all__ = ["STAGE", "EncoderStage", "add_arguments", "run", "main"]

STAGE = "train_encoder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stage's command-line options."""
    parser.add_argument("--prepared", required=True, type=Path, help="output directory of the prepare stage")
    parser.add_argument("--download", required=True, type=Path, help="output directory of the download stage")
    parser.add_argument("--out", required=True, type=Path, help="model directory (encoder.pt, checkpoints, summary)")
    parser.add_argument("--plots", required=True, type=Path, help="DVC plots directory (per-step TSVs)")
    parser.add_argument("--metrics", required=True, type=Path, help="DVC metrics file (JSON)")
    parser.add_argument("--resume", default="auto", choices=RESUME_MODES,
                        help="auto: continue a checkpoint made with the same params (default); never: start fresh")


class EncoderStage:
    """The encoder-specific part of the stage (:class:`lpr_core.training.flow.TrainingStage`)."""

    name, prefix = STAGE, "encoder"

    def __init__(self, args: argparse.Namespace, params: TrainEncoderParams) -> None:
        self.args, self.params = args, params

    def load(self) -> None:
        """Read the prepared clips and the training manifests."""
        self.train_clips = read_table(self.args.prepared / "train_clips.parquet")
        self.val_clips = read_table(self.args.prepared / "val_clips.parquet")
        self.frames = ManifestImages.from_download(self.args.download, "train", "frames")
        self.images = ManifestImages.from_download(self.args.download, "train", "images")

    def build(self):
        """The encoder task on the training pairs."""
        return build_encoder_task(self.params, self.train_clips, self.frames, self.images)

    def finish(self, task, result, device) -> StageOutcome:
        """Validation rank-k, then ``encoder.pt``."""
        params, section = self.params, to_mapping(self.params)
        metrics: dict[str, float] = {}
        val_summary = None
        if self.val_clips.num_rows:
            gt, galleries = clip_ground_truth(self.val_clips)
            boxes = frame_boxes_lookup(videoinfo_frame_boxes(self.val_clips), self.frames) if params.data.crop_boxes else None
            val = score_clips(
                task.model, gt=gt, galleries=galleries, frames=self.frames, images=self.images, boxes=boxes,
                box_padding=params.data.box_padding, batch_size=params.train.batch_size,
                num_workers=params.train.num_workers, device=str(device),
            )
            metrics = {f"encoder/val_{k}": val.summary[k] for k in ("rank1", "rank3", "rank5", "rank10", "mAP", "MRR")}
            val_summary = {
                "metrics": val.summary,
                "boxes": "ground truth" if params.data.crop_boxes else "none (full frames)",
                "livestreams": len(galleries),
                "missing_queries": len(val.missing_queries),
                "missing_images": len(val.missing_images),
            }
        save_encoder(
            task.model,
            Path(self.args.out) / "encoder.pt",
            extra={"data": section["data"], "step": result.step, "params_sha256": params_sha256(section)},
        )
        dataset = {"train_pairs": len(task.dataset), "dropped": task.dataset.dropped, "shop_images": len(task.dataset.image_ids)}
        return StageOutcome(metrics, {"val": val_summary, "dataset": dataset, "encoder": "encoder.pt"})


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit status."""
    return run_stage(STAGE, args, lambda ctx: run_training_stage(EncoderStage(args, ctx.params), ctx),
                     params=TrainEncoderParams, errors=(FileNotFoundError, ValueError))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lpr_core.stages.train_encoder``."""
    return run(parse_args(STAGE, __doc__, add_arguments, argv))


if __name__ == "__main__":
    sys.exit(main())
