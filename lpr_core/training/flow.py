"""The flow both training stages (``train_detector``, ``train_encoder``) share, on every rank of a
``torchrun`` job or alone: join the process group, set threads, load the inputs, apply the resume
rule (:mod:`lpr_core.training.resume`), seed, build the task, train it
(:func:`lpr_core.training.engine.fit`, per-step metrics to the stage's MLflow run on rank 0), then
on rank 0 only: leave the group, let the stage evaluate and save its model (``finish``), and write
``<out>/train_summary.json``, the DVC plots and metrics.

The model-specific part is a :class:`TrainingStage` (``load``, ``build``, ``finish``); the stage
runner (:func:`lpr_core.runner.run_stage`) gives the params section and the MLflow run.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from lpr_core import io
from lpr_core.config import to_mapping
from lpr_core.training import engine
from lpr_core.training.checkpoint import seed_everything
from lpr_core.training.distributed import DistEnv, cleanup_distributed, init_distributed, resolve_device
from lpr_core.training.engine import FitResult, TrainTask
from lpr_core.training.metrics_log import MetricLogger
from lpr_core.training.resume import params_sha256, prepare_run_dir

__all__ = [
    "StageOutcome",
    "TrainingStage",
    "configure_threads",
    "mlflow_step_logger",
    "last_plot_values",
    "run_training_stage",
]

log = logging.getLogger(__name__)


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

    def build(self) -> TrainTask:
        """The task to train (called on every rank after seeding)."""

    def finish(self, task: TrainTask, result: FitResult, device: Any) -> StageOutcome:
        """On rank 0 after training: evaluate and write the model file(s) into ``--out``."""


def configure_threads(device: Any, env: DistEnv) -> int:
    """Give torch every usable core on CPU, shared evenly by the ranks of this machine; return
    the intra-op thread count.

    An explicit ``OMP_NUM_THREADS`` wins (``torchrun`` sets it to 1 per process when it starts
    several, which again gives every core to the job).
    """
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


def mlflow_step_logger(tracker: Any) -> MetricLogger | None:
    """A :data:`lpr_core.training.metrics_log.MetricLogger` sending per-step metrics to the
    stage's MLflow run (None when there is no run, e.g. on ranks other than 0)."""
    if tracker is None:
        return None

    def log_step(metrics: Mapping[str, float], step: int) -> None:
        tracker.log_metrics(metrics, step=step)

    return log_step


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


def _publish_plots(src: Path, dst: str | Path) -> None:
    """Replace the directory ``dst`` with a copy of the TSV files of ``src``."""
    with io.atomic_dir(dst) as tmp:
        for path in sorted(src.glob("*.tsv")):
            shutil.copy2(path, tmp / path.name)


def run_training_stage(stage: TrainingStage, ctx: Any) -> int:
    """Train a stage (see the module docstring) inside the stage runner.

    Args:
        stage: the model-specific part.
        ctx: the runner's :class:`lpr_core.runner.StageContext`: ``params`` (with a ``train``
            :class:`~lpr_core.training.config.TrainConfig`), ``args`` (``out``, ``plots``,
            ``metrics``, ``resume``) and the MLflow run (``tracker``, None on ranks other than 0).

    Returns:
        The exit status (0).
    """
    params, args = ctx.params, ctx.args
    section = to_mapping(params)
    digest = params_sha256(section)
    out = Path(args.out)
    env = init_distributed(params.train.device)
    ctx.set_tags({"lpr.params_sha256": digest, "lpr.world_size": env.world_size})
    try:
        device = resolve_device(params.train.device, env)
        threads = configure_threads(device, env)
        stage.load()
        decision = prepare_run_dir(out, section, stage.name, env, args.resume)
        if env.is_main:
            log.info("%s", decision.note)
        seed_everything(params.train.seed)  # the same initial weights on every rank
        task = stage.build()
        start = time.perf_counter()
        result = engine.fit(
            task, params.train, out, logger=mlflow_step_logger(ctx.tracker), resume=decision.resume, env=env
        )
        train_seconds = time.perf_counter() - start
        if not env.is_main:
            return 0
        cleanup_distributed()  # the other ranks are done: evaluation and outputs are rank 0's
        outcome = stage.finish(task, result, device)
    finally:
        cleanup_distributed()
    final = result.metrics or last_plot_values(out / "plots")
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
        "train_seconds": round(train_seconds, 3),
        "train_metrics": final,
        "metrics": metrics,
        **outcome.summary,
    }
    io.atomic_write_json(out / "train_summary.json", summary)
    _publish_plots(out / "plots", args.plots)
    ctx.publish_metrics(args.metrics, metrics)
    ctx.set_tags({"lpr.resumed_from": result.resumed_from, "lpr.resume_note": decision.note})
    ctx.log_artifacts(out / "train_summary.json", args.metrics)
    ctx.log_artifacts(args.plots, artifact_path="plots")
    done = f"{stage.name}: finished at step {result.step}"
    ctx.report(done + (f", resumed from step {result.resumed_from}" if result.resumed_from is not None else ""))
    ctx.report(f"  resume: {decision.note}")
    ctx.report(*(f"  {k:<34} {v:.4f}" if isinstance(v, float) else f"  {k:<34} {v}" for k, v in metrics.items()))
    return 0
