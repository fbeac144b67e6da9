"""Configuration of the training loop (the ``train:`` part of a training stage's section).

Runtime settings (``metadata={"runtime": True}``, see :mod:`lpr_core.runtime_params`) change how
fast and where training runs, not the weights it reaches: ``dvc.yaml`` leaves them out of the
stage's params and the resume key ignores them. The line is drawn at the arithmetic:

- ``amp`` is result-bearing: bf16 autocast computes with an 8-bit mantissa, a different
  computation whose trajectory ends at measurably different weights. (``auto`` means bf16 on
  CUDA and fp32 on CPU, so with ``auto`` the device picks the precision: pin ``bf16`` or ``off``
  to make the precision part of the key.)
- ``compile`` and ``channels_last`` are runtime: the same operations in another kernel choice or
  memory layout, equal up to floating-point reassociation, the same class of difference as the
  device or the number of threads (also runtime).
- ``checkpoint_every`` is runtime: a checkpoint changes neither the weights nor the logged curves.
- ``log_every`` is result-bearing: it decides the rows of the DVC plots.
- ``num_workers``, ``prefetch_factor``, ``persistent_workers``: sample order and augmentation come
  from the sampler's per-sample seeds, not from the workers, so they change nothing but speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: field metadata of a setting that changes no result (:mod:`lpr_core.runtime_params`)
_RUNTIME = {"runtime": True}

__all__ = ["TrainConfig", "EncoderTrainConfig", "DetectorTrainConfig"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The training loop's knobs (``train:`` of ``train_encoder`` / ``train_detector``).

    The defaults are ``params.yaml``'s: a setting whose value differs between the two stages
    carries no default here; :class:`EncoderTrainConfig` and :class:`DetectorTrainConfig` carry
    each stage's (a test pins them to the file).

    Attributes:
        max_steps: optimizer steps of the run.
        batch_size: samples per micro-batch on each rank.
        grad_accum_steps: micro-batches per optimizer step (effective batch = batch_size x
            grad_accum_steps x world size).
        lr: peak learning rate (AdamW).
        weight_decay: decoupled weight decay (not applied to biases, norms, embeddings, scales).
        adam_beta2: AdamW's beta2.
        warmup_steps: linear warm-up steps before the cosine decay.
        min_lr_ratio: the cosine schedule ends at ``lr * min_lr_ratio``.
        grad_clip_norm: clip the global gradient norm (0: no clipping).
        amp: ``auto`` (bf16 autocast on CUDA, off on CPU), ``bf16``, ``fp16`` (with a gradient
            scaler, CUDA only) or ``off``.
        compile: ``torch.compile`` the model (CUDA only; ignored on CPU).
        channels_last: channels-last memory format for convolutions.
        checkpoint_every: save a resumable checkpoint every N steps (and at the end).
        log_every: log metrics every N steps.
        seed: seed of the sample order, per-sample augmentation and model initialisation.
        num_workers: DataLoader worker processes per rank.
        prefetch_factor: batches prefetched per worker.
        persistent_workers: keep workers alive across epochs.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        progress: show a tqdm progress bar on rank 0.
    """

    max_steps: int
    batch_size: int
    grad_accum_steps: int = 1
    lr: float
    weight_decay: float
    adam_beta2: float
    warmup_steps: int
    min_lr_ratio: float = 0.01
    grad_clip_norm: float
    amp: str = "auto"
    compile: bool = field(default=False, metadata=_RUNTIME)
    channels_last: bool = field(metadata=_RUNTIME)
    checkpoint_every: int = field(metadata=_RUNTIME)
    log_every: int = 5
    seed: int = 0
    num_workers: int = field(default=1, metadata=_RUNTIME)
    prefetch_factor: int = field(default=4, metadata=_RUNTIME)
    persistent_workers: bool = field(default=True, metadata=_RUNTIME)
    device: str = field(default="auto", metadata=_RUNTIME)
    progress: bool = field(default=True, metadata=_RUNTIME)

    def __post_init__(self) -> None:
        _check(self.max_steps > 0, "max_steps must be > 0")
        _check(self.batch_size > 0, "batch_size must be > 0")
        _check(self.grad_accum_steps > 0, "grad_accum_steps must be > 0")
        _check(self.checkpoint_every > 0, "checkpoint_every must be > 0")
        _check(self.log_every > 0, "log_every must be > 0")
        _check(0 <= self.warmup_steps, "warmup_steps must be >= 0")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]")
        _check(self.amp in ("auto", "bf16", "fp16", "off"), f"amp must be auto|bf16|fp16|off, got {self.amp!r}")
        _check(self.device in ("auto", "cpu", "cuda"), f"device must be auto|cpu|cuda, got {self.device!r}")


@dataclass(frozen=True, kw_only=True)
class EncoderTrainConfig(TrainConfig):
    """``train:`` of ``train_encoder``, with that section's defaults."""

    max_steps: int = 400
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    adam_beta2: float = 0.98
    warmup_steps: int = 20
    grad_clip_norm: float = 1.0
    channels_last: bool = field(default=True, metadata=_RUNTIME)
    checkpoint_every: int = field(default=100, metadata=_RUNTIME)


@dataclass(frozen=True, kw_only=True)
class DetectorTrainConfig(TrainConfig):
    """``train:`` of ``train_detector``, with that section's defaults."""

    max_steps: int = 300
    batch_size: int = 8
    lr: float = 6e-3
    weight_decay: float = 1e-4
    adam_beta2: float = 0.999
    warmup_steps: int = 10
    grad_clip_norm: float = 10.0
    channels_last: bool = field(default=False, metadata=_RUNTIME)
    checkpoint_every: int = field(default=50, metadata=_RUNTIME)


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)
