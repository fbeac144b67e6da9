"""What the two training stages (``train_detector``, ``train_encoder``) share: thread setup,
MLflow on rank 0, DVC plots and metrics files, and the retrieval scoring of an encoder on a set
of clips (validation in the stage, test queries in the ablation benchmark). The resume rule
lives in :mod:`lpr_core.training.resume`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lpr_core.training.resume import params_sha256, prepare_run

if TYPE_CHECKING:
    import numpy as np

    from lpr_core.data.datasets import ManifestImages
    from lpr_core.evaluation import QueryResults
    from lpr_core.tracking.run import StageRun
    from lpr_core.training.distributed import DistEnv
    from lpr_core.training.engine import FitResult, TrainTask

__all__ = [
    "run_stage_from_args",
    "configure_threads",
    "stage_tracking",
    "mlflow_step_logger",
    "last_plot_values",
    "publish_plots",
    "write_json_atomic",
    "read_table",
    "clip_ground_truth",
    "RetrievalEval",
    "score_clips",
    "TrainingStage",
    "StageOutcome",
    "run_training_stage",
]


def configure_threads(device: Any, env: DistEnv) -> int:
    """Give torch every usable core on CPU, shared evenly by the ranks of this machine; return
    the intra-op thread count.

    An explicit ``OMP_NUM_THREADS`` wins (``torchrun`` sets it to 1 per process when it starts
    several, which again gives every core to the job).
    """
    import torch

    if getattr(device, "type", str(device)) != "cpu":
        return torch.get_num_threads()
    explicit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        threads = int(explicit)
    else:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size if env.distributed else 1))
        threads = max(1, cores // max(1, local_world))
    torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def stage_tracking(stage: str, params: Mapping[str, Any], env: DistEnv, tags: Mapping[str, Any] | None = None) -> Iterator[StageRun | None]:
    """The stage's MLflow run on rank 0 (params section logged); None on the other ranks."""
    if not env.is_main:
        yield None
        return
    from lpr_core.tracking.run import stage_run

    with stage_run(stage, {stage: params}, tags=tags) as tracker:
        yield tracker


def mlflow_step_logger(tracker: StageRun | None):
    """A :data:`lpr_core.training.metrics_log.MetricLogger` sending per-step metrics to the
    stage's MLflow run (None when there is no run, e.g. on ranks other than 0)."""
    if tracker is None:
        return None

    def log(metrics: Mapping[str, float], step: int) -> None:
        tracker.log_metrics(metrics, step=step)

    return log


def last_plot_values(plots_dir: str | Path) -> dict[str, float]:
    """The last logged value of every metric in a directory of ``step<TAB>metric`` TSV files
    (what a finished run logged, also when a rerun had no step left to train)."""
    out: dict[str, float] = {}
    for path in sorted(Path(plots_dir).glob("*.tsv")):
        with open(path, newline="") as fh:
            rows = [r for r in csv.reader(fh, delimiter="\t") if r]
        if len(rows) >= 2:
            out[rows[0][1]] = float(rows[-1][1])
    return out


def publish_plots(src: str | Path, dst: str | Path) -> Path:
    """Replace the directory ``dst`` with a copy of the TSV files of ``src`` (temp dir + rename)."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in sorted(src.glob("*.tsv")):
        shutil.copy2(path, tmp / path.name)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON through a temp file and a rename."""
    from lpr_core.formats.writers import atomic_write_text

    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def read_table(prepared_dir: str | Path, name: str):
    """``<prepared_dir>/<name>.parquet`` as an Arrow table, with a clear error when missing."""
    import pyarrow.parquet as pq

    path = Path(prepared_dir) / f"{name}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"prepared table not found: {path} (run the prepare stage)")
    return pq.read_table(path)


def clip_ground_truth(clips) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Ground truth and galleries of training-format clips (``VIDEOINFO_SCHEMA``): each clip's
    shop image, and per livestream the sorted set of its clips' shop images (the gallery a clip
    is ranked in, as for test queries)."""
    gt: dict[str, list[str]] = {}
    galleries: dict[str, set[str]] = {}
    for clip_id, live_id, image_id in zip(
        clips.column("clip_id").to_pylist(), clips.column("live_id").to_pylist(), clips.column("image_id").to_pylist()
    ):
        gt[clip_id] = [image_id]
        galleries.setdefault(live_id, set()).add(image_id)
    return gt, {live: sorted(ids) for live, ids in galleries.items()}


@dataclass
class RetrievalEval:
    """Outcome of :func:`score_clips`.

    Attributes:
        summary: ``rank1``, ``rank3``, ``rank5``, ``rank10``, ``mAP``, ``MRR``, counts.
        results: the per-query results.
        missing_queries: queries without a downloaded frame (misses).
        missing_images: gallery images that were not downloaded (never retrieved).
    """

    summary: dict[str, float]
    results: QueryResults
    missing_queries: list[str] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)


def score_clips(
    model,
    *,
    gt: Mapping[str, Sequence[str]],
    galleries: Mapping[str, Sequence[str]],
    frames: ManifestImages,
    images: ManifestImages,
    boxes: Mapping[tuple[str, int], list] | None,
    box_padding: float = 0.1,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str = "cpu",
) -> RetrievalEval:
    """Embed query clips and gallery images with an encoder and score the LPR protocol (each
    clip ranked within its own livestream's gallery).

    Args:
        model: a :class:`lpr_core.models.encoder.RiceModel`.
        gt: ``clip_id -> [image_id, ...]``; its keys are the queries.
        galleries: ``live_id -> [image_id, ...]`` in gallery order.
        frames: reader of the queries' frame manifest.
        images: reader of the galleries' image manifest.
        boxes: ``(clip_id, frame_index) -> boxes`` (downloaded pixels) to crop frames to, or None
            for full frames.
        box_padding: context kept around a box.
        batch_size: clips / images per forward pass.
        num_workers: DataLoader workers.
        device: where to run the encoder.
    """
    import numpy as np

    from lpr_core.data.datasets import GalleryImageDataset, QueryClipDataset, build_dataloader
    from lpr_core.data.transforms import build_eval_transform
    from lpr_core.evaluation import Gallery, score_embeddings, summarize
    from lpr_core.models.encoder import embed_clips, embed_images

    transform = build_eval_transform(model.config.image_size, mean=model.mean, std=model.std)
    queries = QueryClipDataset(
        list(gt), frames, num_frames=model.config.num_frames, transform=transform, boxes=boxes, box_padding=box_padding
    )
    image_ids = sorted({i for ids in galleries.values() for i in ids})
    gallery_ds = GalleryImageDataset(image_ids, images, transform=transform)

    def loader(ds):
        return build_dataloader(ds, batch_size=batch_size, num_workers=num_workers, device=str(device), persistent_workers=False)

    q_emb = embed_clips(model, loader(queries), device) if len(queries) else np.zeros((0, model.config.embed_dim), np.float32)
    g_emb = embed_images(model, loader(gallery_ds), device) if len(gallery_ds) else np.zeros((0, model.config.embed_dim), np.float32)
    row = {image_id: i for i, image_id in enumerate(gallery_ds.image_ids)}
    by_live: dict[str, Gallery] = {}
    for live_id, ids in galleries.items():
        kept = [i for i in ids if i in row]
        emb: np.ndarray = g_emb[[row[i] for i in kept]] if kept else np.zeros((0, g_emb.shape[1]), np.float32)
        by_live[live_id] = Gallery(kept, emb)
    results = score_embeddings(gt, queries.clip_ids, q_emb, by_live)
    return RetrievalEval(summarize(results), results, list(queries.missing), list(gallery_ds.missing))


@dataclass
class StageOutcome:
    """What a training stage adds after training: its metrics (``<prefix>/...`` names) and
    entries of ``train_summary.json``."""

    metrics: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)


class TrainingStage(Protocol):
    """The model-specific part of a training stage (see :func:`run_training_stage`)."""

    #: the stage's name (its params section, MLflow run name)
    name: str
    #: prefix of the stage's metrics in the DVC metrics file (``encoder``, ``detector``)
    prefix: str

    def load(self) -> None:
        """Read and check the inputs (before the output directory is touched)."""

    def inputs(self) -> dict[str, Path]:
        """The files :meth:`load` read, by name: their sha256 keys the run's resumable state."""

    def build(self) -> TrainTask:
        """The task to train (called on every rank after seeding)."""

    def finish(self, task: TrainTask, result: FitResult, device: Any) -> StageOutcome:
        """On rank 0 after training: evaluate and write the model file(s) into ``--out``."""


def run_training_stage(stage: TrainingStage, args: Any, params: Any) -> int:
    """The flow every training stage shares, on every rank of a ``torchrun`` job or alone:

    join the process group, set threads, load the inputs, find the run's state folder and apply
    the resume rule (:func:`lpr_core.training.resume.prepare_run`), seed, build the task, train it
    with :func:`lpr_core.training.engine.fit` inside the stage's MLflow run (rank 0; per-step
    metrics through :func:`mlflow_step_logger`), then on rank 0 only: leave the group,
    ``stage.finish`` (evaluation, model file), write ``<out>/train_summary.json``, the DVC plots
    (``args.plots``) and metrics (``args.metrics``) and log them to the run; last, remove the
    run's state folder (its checkpoint is spent).

    Args:
        stage: the model-specific part.
        args: the parsed command line (``out``, ``plots``, ``metrics``, ``resume``).
        params: the stage's params dataclass (with a ``train`` :class:`TrainConfig`).

    Returns:
        The exit status (0).
    """
    import time

    from lpr_core.config import to_mapping
    from lpr_core.training import engine
    from lpr_core.training.checkpoint import seed_everything
    from lpr_core.training.distributed import cleanup_distributed, init_distributed, resolve_device

    section = to_mapping(params)
    digest = params_sha256(section)
    out = Path(args.out)
    env = init_distributed(params.train.device)
    try:
        device = resolve_device(params.train.device, env)
        threads = configure_threads(device, env)
        stage.load()
        run = prepare_run(stage.name, params, stage.inputs(), env, args.resume)
        decision = run.decision
        if env.is_main:
            print(f"{stage.name}: {decision.note}")
        seed_everything(params.train.seed)  # the same initial weights on every rank
        task = stage.build()
        tags = {"lpr.params_sha256": digest, "lpr.world_size": env.world_size}
        with stage_tracking(stage.name, section, env, tags) as tracker:
            start = time.perf_counter()
            result = engine.fit(
                task, params.train, run.dir, logger=mlflow_step_logger(tracker), resume=decision.resume, env=env,
                checkpoints=run.checkpoints,
            )
            train_seconds = time.perf_counter() - start
            if tracker is None:
                return 0
            cleanup_distributed()  # the other ranks are done: evaluation and outputs are rank 0's
            outcome = stage.finish(task, result, device)
            final = result.metrics or last_plot_values(run.dir / "plots")
            metrics = dict(outcome.metrics)
            metrics.update({f"{stage.prefix}/{k.replace('/', '_')}": v for k, v in final.items() if k.startswith("train/")})
            metrics[f"{stage.prefix}/steps"] = result.step
            metrics[f"{stage.prefix}/train_seconds"] = round(train_seconds, 3)
            summary = {
                "stage": stage.name,
                "params": section,
                "params_sha256": digest,
                "world_size": env.world_size,
                "device": str(device),
                "torch_threads": threads,
                "steps": result.step,
                "resumed_from": result.resumed_from,
                "resume_note": decision.note,
                "state": run.state.url,
                "train_seconds": round(train_seconds, 3),
                "train_metrics": final,
                "metrics": metrics,
                **outcome.summary,
            }
            write_json_atomic(out / "train_summary.json", summary)
            publish_plots(run.dir / "plots", args.plots)
            write_json_atomic(args.metrics, metrics)
            tracker.log_metrics(metrics)
            tracker.set_tags({"lpr.resumed_from": result.resumed_from, "lpr.resume_note": decision.note})
            tracker.log_artifact(out / "train_summary.json")
            tracker.log_artifact(args.metrics)
            tracker.log_artifact(args.plots, artifact_path="plots")
            run.finish()
    finally:
        cleanup_distributed()
    done = f"{stage.name}: finished at step {result.step}"
    print(done + (f", resumed from step {result.resumed_from}" if result.resumed_from is not None else ""))
    for k, v in metrics.items():
        print(f"  {k:<34} {v:.4f}" if isinstance(v, float) else f"  {k:<34} {v}")
    return 0


def run_stage_from_args(stage_cls: Any, params_cls: Any, name: str, args: Any) -> int:
    """Entry point shared by the training stages: read the ``name`` section of ``args.params`` into
    ``params_cls``, then :func:`run_training_stage` on ``stage_cls(args, params)``. A bad section
    or a missing input is one readable line on stderr and exit status 1, never a traceback."""
    from lpr_core.config import ConfigError, load_section

    try:
        params = load_section(params_cls, name, args.params)
        return run_training_stage(stage_cls(args, params), args, params)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
