"""A tiny open_clip architecture and checkpoints of it, for tests of the ``open_clip:`` backbone.

The architecture is open_clip's own ``CLIP`` (ViT visual tower, text tower) at toy size, written as
a JSON model config in open_clip's format, so that ``open_clip:<that file>`` builds it exactly as
``open_clip:ViT-B-32`` builds the paper's tower.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

#: 32 px images in 16 px patches: 4 patch tokens of width 64, a 32-d projected embedding
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def write_config(directory: Path, name: str = "lpr-tiny-vit", **changes) -> Path:
    """Write the tiny config (top-level keys replaced by ``changes``) as ``<directory>/<name>.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({**TINY_CLIP, **changes}), encoding="utf-8")
    return path


def build_clip(config: Path, seed: int = 0):
    """A randomly initialised open_clip ``CLIP`` of a config file (both towers)."""
    import open_clip

    cfg = json.loads(config.read_text(encoding="utf-8"))
    torch.manual_seed(seed)
    return open_clip.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=cfg.get("quick_gelu", False))


def write_clip_checkpoint(config: Path, path: Path, seed: int = 0):
    """Save a random full CLIP model of ``config`` as an open_clip training checkpoint
    (``{"epoch", "state_dict"}`` with DDP's ``module.`` prefixes); returns the model."""
    clip = build_clip(config, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, path)
    return clip
