"""Resolve and load pretrained weights from local files only (nothing is downloaded).

A weights spec is one of:

- ``"none"``: random initialisation;
- a path to a checkpoint file (a state dict, or a dict holding one under ``state_dict`` /
  ``model``; a ``module.`` prefix from DDP is stripped);
- a name resolved in the local torch hub cache (``$TORCH_HOME/hub/checkpoints``): a torchvision
  weights name for the architecture (``IMAGENET1K_V1``, ``DEFAULT``,
  ``ResNet18_Weights.IMAGENET1K_V1``) or a checkpoint file name
  (``resnet18-f37072fd.pth``). A name that is not found raises :class:`WeightsNotFoundError`
  listing every place it looked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["WeightsNotFoundError", "hub_checkpoint_dirs", "resolve_weights", "load_state_dict_file"]


class WeightsNotFoundError(FileNotFoundError):
    """A weights name or path that resolves to no local file."""


def hub_checkpoint_dirs() -> list[Path]:
    """Directories searched for named checkpoints: the torch hub cache's ``checkpoints``."""
    import torch

    return [Path(torch.hub.get_dir()) / "checkpoints"]


def _torchvision_file_names(arch: str, name: str) -> list[str]:
    """File names a torchvision weights name of ``arch`` would be cached under."""
    try:
        from torchvision.models import get_model_weights
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return []
    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError):
        return []
    short = name.split(".", 1)[1] if "." in name and name.split(".", 1)[0] == enum.__name__ else name
    if short == "DEFAULT":
        member = enum.DEFAULT
    else:
        member = enum.__members__.get(short)
    if member is None:
        return []
    return [os.path.basename(member.url)]


def resolve_weights(spec: str | None, arch: str) -> Path | None:
    """Turn a weights spec into a local file (None for ``"none"``).

    Args:
        spec: ``"none"``, a file path, or a name (see the module docstring).
        arch: the architecture name, used to resolve torchvision weights names.

    Raises:
        WeightsNotFoundError: the spec names no existing file; the message lists the places
            searched.
    """
    if spec is None or str(spec).lower() in ("", "none", "null"):
        return None
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    looks_like_path = os.sep in spec or spec.startswith(".") or spec.startswith("~")
    candidates = [spec] if spec.endswith((".pth", ".pt", ".bin", ".safetensors")) else []
    candidates += _torchvision_file_names(arch, spec)
    searched = []
    if not looks_like_path:
        for directory in hub_checkpoint_dirs():
            for name in candidates:
                searched.append(str(directory / name))
                if (directory / name).is_file():
                    return directory / name
    where = "\n  ".join([str(path)] + searched)
    hint = "" if candidates or looks_like_path else f" ({spec!r} is not a torchvision weights name of {arch!r})"
    raise WeightsNotFoundError(
        f"weights {spec!r} for {arch!r} not found{hint}; nothing is downloaded. Looked at:\n  {where}"
    )


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file into a flat state dict (``module.`` prefixes stripped)."""
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict (got {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}
