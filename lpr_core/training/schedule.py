"""Learning-rate schedule: linear warm-up, then cosine decay."""

from __future__ import annotations

import functools
import math

from torch.optim.lr_scheduler import LambdaLR

__all__ = ["warmup_cosine", "build_scheduler"]


def warmup_cosine(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """The LR multiplier at ``step`` (0-based): ``(step+1)/warmup`` during warm-up, then a cosine
    from 1 down to ``min_lr_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, *, warmup_steps: int, max_steps: int, min_lr_ratio: float):
    """A ``LambdaLR`` stepping :func:`warmup_cosine` once per optimizer step."""
    fn = functools.partial(warmup_cosine, warmup_steps=warmup_steps, max_steps=max_steps, min_lr_ratio=min_lr_ratio)
    return LambdaLR(optimizer, fn)
