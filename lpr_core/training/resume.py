"""The resume rule of the training stages: continue the last checkpoint or start fresh.

A training output directory holds ``checkpoints/last.pt`` (written by
:func:`lpr_core.training.engine.fit`) and ``checkpoints/run_params.json``, the stamp of the
params section (and world size) that checkpoint belongs to. With ``--resume auto`` a rerun
continues from the checkpoint only when the stamp matches the current section exactly; on any
difference (or a checkpoint without a stamp) the old checkpoint and curves are removed and
training starts fresh, and the reason is printed and recorded. ``--resume never`` always starts
fresh.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lpr_core.io import atomic_write_json

if TYPE_CHECKING:
    from lpr_core.training.distributed import DistEnv

__all__ = [
    "RESUME_MODES",
    "STAMP_FILE",
    "ResumeDecision",
    "params_sha256",
    "decide_resume",
    "prepare_run_dir",
]

RESUME_MODES = ("auto", "never")
#: The stamp of a run directory: params section, its hash and the world size.
STAMP_FILE = "run_params.json"


@dataclass(frozen=True)
class ResumeDecision:
    """Whether a training stage continues its last checkpoint.

    Attributes:
        resume: continue from ``checkpoints/last.pt``.
        note: why (printed, kept in the summary, tagged on the MLflow run).
    """

    resume: bool
    note: str


def params_sha256(section: Mapping[str, Any]) -> str:
    """SHA-256 of a params section in canonical JSON (sorted keys): equal sections, equal hash."""
    text = json.dumps(section, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key, "<absent>"), new.get(key, "<absent>"), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def decide_resume(out_dir: str | Path, section: Mapping[str, Any], world_size: int, mode: str = "auto") -> ResumeDecision:
    """Decide whether the run in ``out_dir`` may be continued (reads files, changes nothing).

    Args:
        out_dir: the stage's output directory.
        section: the params section (plain mapping) of this run.
        world_size: ranks of this run (a checkpoint holds every rank's state).
        mode: ``auto`` (resume a matching checkpoint) or ``never``.
    """
    if mode not in RESUME_MODES:
        raise ValueError(f"resume mode must be one of {RESUME_MODES}, got {mode!r}")
    from lpr_core.training.engine import checkpoint_path

    ckpt = checkpoint_path(out_dir)
    if not ckpt.exists():
        return ResumeDecision(False, "no checkpoint: starting fresh")
    if mode == "never":
        return ResumeDecision(False, f"--resume never: discarding {ckpt} and starting fresh")
    stamp_file = ckpt.parent / STAMP_FILE
    try:
        stamp = json.loads(stamp_file.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return ResumeDecision(False, f"{ckpt} has no readable params stamp ({stamp_file.name}): starting fresh")
    if stamp.get("params_sha256") != params_sha256(section):
        changed = _diff(stamp.get("params", {}), dict(section))
        shown = "; ".join(changed[:5]) + (f"; ... ({len(changed)} changes)" if len(changed) > 5 else "")
        return ResumeDecision(False, f"params changed since the checkpoint ({shown or 'hash differs'}): starting fresh")
    if stamp.get("world_size") != world_size:
        return ResumeDecision(
            False, f"checkpoint made with {stamp.get('world_size')} ranks, this run has {world_size}: starting fresh"
        )
    return ResumeDecision(True, f"resuming from {ckpt} (same params)")


def prepare_run_dir(
    out_dir: str | Path, section: Mapping[str, Any], stage: str, env: DistEnv, mode: str = "auto"
) -> ResumeDecision:
    """Apply the resume rule to ``out_dir`` on rank 0 and share the decision with every rank.

    A fresh start removes ``checkpoints/`` and ``plots/`` of the directory; the stamp of this
    run's params is written before training, so a checkpoint is never left without one.
    """
    out_dir = Path(out_dir)
    decision = None
    if env.is_main:
        decision = decide_resume(out_dir, section, env.world_size, mode)
        ckpt_dir = out_dir / "checkpoints"
        if not decision.resume:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            shutil.rmtree(out_dir / "plots", ignore_errors=True)
        stamp = {"stage": stage, "params_sha256": params_sha256(section), "world_size": env.world_size, "params": section}
        atomic_write_json(ckpt_dir / STAMP_FILE, stamp)
    if env.distributed:
        import torch.distributed as dist

        box = [decision]
        dist.broadcast_object_list(box, src=0)
        decision = box[0]
    assert decision is not None
    return decision
