"""Atomic training checkpoints and RNG state capture, for exact resume.

A run's checkpoint is ``checkpoints/last.pt`` in its run directory. :class:`CheckpointStore` keeps
it there and, when the run directory is the local copy of a state folder in an object store
(:mod:`lpr_core.state`), in the store as well:

- global rank 0 saves: ``torch.save`` into a temporary sibling, ``fsync``, rename
  (:func:`lpr_core.io.atomic_file`), then uploads the curves (``plots/*.tsv``) and the checkpoint,
  each as one whole object, the checkpoint last: a kill at any instant leaves the previous
  checkpoint or the new one on both sides, never a torn one, and never a checkpoint ahead of its
  curves (a resumed run cuts the curves back to its step);
- every rank loads on resume, from the store (a rank on another machine needs no shared disk).
"""

from __future__ import annotations

import io as _bytes_io
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import torch

from lpr_core import io

if TYPE_CHECKING:
    from lpr_core.state import StageState

__all__ = [
    "CHECKPOINT_FILE",
    "rng_state",
    "set_rng_state",
    "seed_everything",
    "save_atomic",
    "load_checkpoint",
    "CheckpointStore",
]

#: The checkpoint of a run directory, relative to it.
CHECKPOINT_FILE = "checkpoints/last.pt"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The RNG states of python, numpy, torch CPU and (when present) CUDA."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> tuple:
    # plain Python values, so checkpoints load with torch.load(weights_only=True)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return (kind, keys.tolist(), int(pos), int(has_gauss), float(cached))


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`rng_state`."""
    random.setstate(_as_python_state(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(s: Any) -> tuple:
    # torch.save/load turns the nested tuples of random.getstate() into lists
    return (s[0], tuple(s[1]), s[2]) if isinstance(s, list | tuple) else s


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename over ``path``
    (:func:`lpr_core.io.atomic_file`): a crash leaves either the old or the new checkpoint, never a
    torn one; the temporary file of a killed save is removed by the next save."""
    with io.atomic_file(path) as fh:
        torch.save(obj, fh)
    return Path(path)


def load_checkpoint(path: str | Path | BinaryIO, name: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by the training engine (on CPU).

    Args:
        path: the file, or a binary file object.
        name: how errors name it (default: ``path``).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {name or path}: {exc}") from exc


class CheckpointStore:
    """The checkpoint of a run directory, mirrored to its state folder in an object store.

    Args:
        run_dir: the run directory (``checkpoints/last.pt``, ``plots/``).
        state: the state folder whose local copy ``run_dir`` is; None, or one with a local root:
            the run directory is all there is.
    """

    def __init__(self, run_dir: str | Path, state: StageState | None = None) -> None:
        self.dir = Path(run_dir)
        self.state = state if state is not None and state.remote else None

    @property
    def path(self) -> Path:
        """The local checkpoint file."""
        return self.dir / CHECKPOINT_FILE

    @property
    def where(self) -> str:
        """Where the checkpoint is read from (for messages)."""
        return f"{self.state.url}/{CHECKPOINT_FILE}" if self.state is not None else str(self.path)

    def save(self, obj: Any) -> Path:
        """Write the checkpoint locally (atomically), then upload the curves and the checkpoint."""
        save_atomic(obj, self.path)
        if self.state is not None:
            plots = self.dir / "plots"
            curves = sorted(p for p in plots.glob("*.tsv")) if plots.is_dir() else []
            self.state.upload_many(p.relative_to(self.dir).as_posix() for p in curves)
            self.state.upload(CHECKPOINT_FILE)
        return self.path

    def load(self) -> dict[str, Any] | None:
        """The checkpoint (from the store when there is one), or None when there is none."""
        if self.state is not None:
            data = self.state.read_bytes(CHECKPOINT_FILE)
            return None if data is None else load_checkpoint(_bytes_io.BytesIO(data), self.where)
        return load_checkpoint(self.path) if self.path.is_file() else None
