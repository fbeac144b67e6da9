"""The training engine shared by the detector and the encoder.

One loop (:func:`fit`) and a task adapter per model (:mod:`lpr_core.training.tasks`): the task
supplies the model, the dataset, how a batch moves to the device and how a batch becomes a dict of
losses. The engine supplies everything else:

- DDP under torchrun (NCCL on GPU, gloo on CPU), a rank-sharded resumable sampler;
- AMP (bf16 autocast on CUDA by default; fp16 with a gradient scaler; off on CPU unless asked),
  gradient accumulation (no gradient sync on the inner micro-batches), gradient clipping,
  AdamW with a warm-up + cosine schedule, channels-last, optional ``torch.compile`` on GPU;
- a tqdm bar, per-step metrics to DVC plots files (``<out>/plots/train_loss.tsv``, ...) and to a
  pluggable logger callable (MLflow, ...);
- an atomic checkpoint ``<run dir>/checkpoints/last.pt`` every N steps holding the model,
  optimizer, scheduler, scaler, sampler position and every rank's RNG states, saved by global
  rank 0 through a :class:`~lpr_core.training.checkpoint.CheckpointStore` (which mirrors it to the
  stage's state folder in an object store when there is one) and read by every rank on resume: a
  killed run started again on the same run directory, or on the same state folder from another
  machine, continues exactly where the checkpoint left it (same weights as an uninterrupted run).

The training stages run in their state folder (:mod:`lpr_core.training.resume`), not in their DVC
output, which ``dvc repro`` deletes before it runs a stage.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from lpr_core.data.datasets import build_dataloader
from lpr_core.data.samplers import ResumableSampler
from lpr_core.training.checkpoint import CHECKPOINT_FILE, CheckpointStore, rng_state, set_rng_state
from lpr_core.training.config import TrainConfig
from lpr_core.training.distributed import DistEnv, resolve_device
from lpr_core.training.metrics_log import MetricLogger, PlotsWriter
from lpr_core.training.schedule import build_scheduler

__all__ = ["TrainTask", "FitResult", "fit", "checkpoint_path", "amp_dtype", "param_groups", "metrics_from"]

_NO_DECAY_NAMES = ("pos", "cls", "class_token", "mask_token", "query", "logit_scale")


class TrainTask(Protocol):
    """What a model brings to the engine."""

    model: nn.Module
    dataset: Any
    collate_fn: Callable | None

    def move(self, batch: Any, device: torch.device, channels_last: bool) -> Any:
        """Move a collated batch to ``device``."""

    def step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Forward one batch through ``model`` (possibly DDP-wrapped); the dict holds ``loss``."""


@dataclass
class FitResult:
    """The outcome of :func:`fit`."""

    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    resumed_from: int | None = None


def checkpoint_path(out_dir: str | Path) -> Path:
    """``<out_dir>/checkpoints/last.pt``."""
    return Path(out_dir) / CHECKPOINT_FILE


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on ``device`` (None: full precision)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp in ("auto", "bf16"):
        return torch.bfloat16
    if device.type != "cuda":
        raise ValueError("amp: fp16 needs a CUDA device (use bf16 or off on CPU)")
    return torch.float16


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices/kernels only, not on biases, norms,
    embeddings, tokens or the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim < 2 or any(k in leaf for k in _NO_DECAY_NAMES) or "pos_embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _reduce_mean(values: dict[str, torch.Tensor], env: DistEnv) -> dict[str, float]:
    if not values:
        return {}
    names = sorted(values)
    stacked = torch.stack([values[n].float() for n in names])
    if env.distributed:
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked /= env.world_size
    return dict(zip(names, stacked.cpu().tolist()))


def _gather_rng(env: DistEnv) -> list[dict[str, Any]]:
    state = rng_state()
    if not env.distributed:
        return [state]
    states: list[Any] = [None] * env.world_size
    dist.all_gather_object(states, state)
    return states


def fit(
    task: TrainTask,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    logger: MetricLogger | None = None,
    resume: bool = True,
    env: DistEnv | None = None,
    on_step_end: Callable[[int], None] | None = None,
    metric_prefix: str = "train/",
    checkpoints: CheckpointStore | None = None,
) -> FitResult:
    """Train ``task.model`` for ``config.max_steps`` optimizer steps.

    Args:
        task: the task adapter (model, dataset, batch handling, losses).
        config: loop settings.
        out_dir: run directory: ``checkpoints/last.pt`` and ``plots/*.tsv`` go there.
        logger: called on rank 0 as ``logger(metrics, step)`` every ``log_every`` steps (and at
            the last step).
        resume: continue from the checkpoint when there is one.
        env: the DDP environment (default: the initialised process group, if any).
        on_step_end: called with the step number after every optimizer step (on every rank).
        metric_prefix: prefix of logged metric names (``train/loss``, ``train/lr``, ...).
        checkpoints: where the checkpoint is saved (rank 0) and read (every rank); default: the
            run directory's ``checkpoints/last.pt`` alone.

    Returns:
        The final step, the last logged metrics and the checkpoint path.

    Raises:
        ValueError: a checkpoint made with another world size, batch size, accumulation or seed;
            a dataset smaller than one batch per rank; a non-finite loss (with its step); ranks
            that read different checkpoints (a state location not every machine sees).
    """
    env = env or DistEnv.current()
    device = resolve_device(config.device, env)
    dtype = amp_dtype(config.amp, device)
    out_dir = Path(out_dir)
    store = checkpoints if checkpoints is not None else CheckpointStore(out_dir)

    raw_model = task.model.to(device)
    if config.channels_last:
        raw_model.to(memory_format=torch.channels_last)
        if hasattr(raw_model, "channels_last"):
            raw_model.channels_last = True
    optimizer = torch.optim.AdamW(
        param_groups(raw_model, config.weight_decay),
        lr=config.lr,
        betas=(0.9, config.adam_beta2),
        fused=device.type == "cuda",
    )
    scheduler = build_scheduler(
        optimizer, warmup_steps=config.warmup_steps, max_steps=config.max_steps, min_lr_ratio=config.min_lr_ratio
    )
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    groups = getattr(task, "sample_groups", None)
    sampler = ResumableSampler(
        len(task.dataset), seed=config.seed, shuffle=True, rank=env.rank, world_size=env.world_size, with_seeds=True,
        groups=groups, group_block=config.batch_size * env.world_size if groups is not None else 0,
    )
    if sampler.per_rank < config.batch_size:
        raise ValueError(
            f"dataset of {len(task.dataset)} samples gives {sampler.per_rank} per rank, fewer than "
            f"batch_size={config.batch_size}: lower the batch size"
        )

    step, epoch, position, resumed_from = 0, 0, 0, None
    identity = {
        "world_size": env.world_size,
        "batch_size": config.batch_size,
        "grad_accum_steps": config.grad_accum_steps,
        "seed": config.seed,
    }
    ckpt = store.load() if resume else None
    if env.distributed:  # every rank must continue the same checkpoint (or none)
        steps: list[Any] = [None] * env.world_size
        dist.all_gather_object(steps, None if ckpt is None else ckpt["step"])
        if len(set(steps)) > 1:
            raise ValueError(
                f"the ranks read different checkpoints from {store.where} (step per rank: {steps}): with "
                "several machines the state location must be storage they all see (LPR_STATE_URL=s3://...)"
            )
    if ckpt is not None:
        changed = {k: (ckpt["identity"].get(k), v) for k, v in identity.items() if ckpt["identity"].get(k) != v}
        if changed:
            raise ValueError(
                f"{store.where} was made with other settings {changed} (checkpoint, now): resume with the "
                "same settings, or start in a fresh output directory"
            )
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        step, epoch, position = ckpt["step"], ckpt["sampler"]["epoch"], ckpt["sampler"]["position"]
        set_rng_state(ckpt["rng"][env.rank])
        resumed_from = step
        ckpt = None  # the loaded copy is not kept for the whole run

    model: nn.Module = raw_model
    if env.distributed:
        model = DDP(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile and device.type == "cuda":
        model = torch.compile(model)

    loader = build_dataloader(
        task.dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        device=str(device),
        collate_fn=task.collate_fn,
        prefetch_factor=config.prefetch_factor,
        persistent_workers=config.persistent_workers,
        drop_last=True,
        # the loader draws its worker base seed from its own generator, never from the global
        # RNG (which must replay identically after a resume); sample randomness comes from the
        # sampler's per-sample seeds
        generator=torch.Generator().manual_seed(config.seed),
    )
    sampler.set_epoch(epoch, position)
    batches = iter(loader)

    def next_batch() -> Any:
        nonlocal batches, epoch, position
        for _ in range(2):
            try:
                batch = next(batches)
                position += config.batch_size
                return batch
            except StopIteration:
                epoch, position = epoch + 1, 0
                sampler.set_epoch(epoch, 0)
                batches = iter(loader)
        raise RuntimeError("the data loader yields no batch")  # pragma: no cover

    plots = PlotsWriter(out_dir / "plots", resume_step=step if resumed_from is not None else None) if env.is_main else None
    bar = tqdm(
        total=config.max_steps, initial=step, desc="train", disable=not (env.is_main and config.progress), dynamic_ncols=True
    )
    metrics: dict[str, float] = {}
    model.train()
    samples_per_step = config.batch_size * config.grad_accum_steps * env.world_size
    last_time = time.perf_counter()
    autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    saved_at = resumed_from
    try:
        while step < config.max_steps:
            optimizer.zero_grad(set_to_none=True)
            totals: dict[str, torch.Tensor] = {}
            for micro in range(config.grad_accum_steps):
                batch = task.move(next_batch(), device, config.channels_last)
                sync = micro == config.grad_accum_steps - 1 or not env.distributed
                with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
                    out = task.step(model, batch)
                loss = out["loss"] / config.grad_accum_steps
                scaler.scale(loss).backward()
                for k, v in out.items():
                    totals[k] = totals.get(k, 0.0) + v.detach().float() / config.grad_accum_steps
            scaler.unscale_(optimizer)
            if config.grad_clip_norm > 0:
                totals["grad_norm"] = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), config.grad_clip_norm)
            lr = optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            bar.update(1)

            # logged rows depend on log_every alone, so checkpoint_every is a runtime setting
            if step % config.log_every == 0 or step == config.max_steps:
                now = time.perf_counter()
                reduced = _reduce_mean(totals, env)
                if not torch.isfinite(torch.tensor(reduced["loss"])):
                    raise ValueError(f"non-finite loss {reduced['loss']} at step {step}: lower the lr or check the data")
                metrics = {f"{metric_prefix}{k}": v for k, v in reduced.items()}
                metrics[f"{metric_prefix}lr"] = lr
                metrics[f"{metric_prefix}epoch"] = float(epoch)
                if step % config.log_every == 0:
                    metrics[f"{metric_prefix}samples_per_s"] = samples_per_step * config.log_every / max(now - last_time, 1e-9)
                    last_time = now
                if env.is_main:
                    plots(metrics, step)
                    if logger is not None:
                        logger(metrics, step)
                    bar.set_postfix(loss=f"{reduced['loss']:.4f}")
            if step % config.checkpoint_every == 0 or step == config.max_steps:
                rngs = _gather_rng(env)
                if env.is_main:
                    store.save(
                        {
                            "step": step,
                            "model": raw_model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict(),
                            "sampler": {"epoch": epoch, "position": position, "seed": config.seed},
                            "rng": rngs,
                            "identity": identity,
                            "config": asdict(config),
                        },
                    )
                saved_at = step
            if on_step_end is not None:
                on_step_end(step)
    finally:
        bar.close()
    return FitResult(step=step, metrics=metrics, checkpoint=store.path if saved_at is not None else None,
                     resumed_from=resumed_from)


def metrics_from(out: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Detached float values of a loss dict (for logging outside the engine)."""
    return {k: float(v.detach()) for k, v in out.items()}
