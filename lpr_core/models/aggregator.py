"""Temporal aggregation of frame embeddings into one clip embedding.

Kinds: ``transformer`` (a CLS token and learned temporal positions through a small transformer
encoder), ``attention`` (attention pooling with one learned query), and the parameter-free
ablation baselines ``mean`` (masked mean) and ``middle`` (the middle real frame). Every kind
honours the frame mask, so clips with fewer than T frames (padding) are aggregated correctly.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AGGREGATORS", "TemporalAggregator"]

AGGREGATORS = ("transformer", "attention", "mean", "middle")


class TemporalAggregator(nn.Module):
    """Frames ``[B, T, D]`` with mask ``[B, T]`` (True = real frame) -> clip ``[B, D]``.

    Args:
        kind: one of :data:`AGGREGATORS`.
        dim: D.
        num_frames: the largest T (sizes the temporal position embedding).
        layers: transformer layers (``transformer``).
        heads: attention heads (``transformer``, ``attention``).
        dropout: dropout inside the transformer.
    """

    def __init__(self, kind: str, dim: int, num_frames: int, *, layers: int = 1, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if kind not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {kind!r}; choose one of {AGGREGATORS}")
        self.kind = kind
        self.num_frames = num_frames
        if kind == "transformer":
            self.cls = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos = nn.Parameter(torch.randn(1, num_frames + 1, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True, norm_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
        elif kind == "attention":
            self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.norm = nn.LayerNorm(dim)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Aggregate ``frames`` ``[B, T, D]`` under ``mask`` ``[B, T]`` into ``[B, D]``."""
        b, t, _ = frames.shape
        if t > self.num_frames:
            raise ValueError(f"clip has {t} frames, aggregator was built for at most {self.num_frames}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every clip needs at least one real frame (frame_mask all False)")
        if self.kind == "mean":
            w = mask.to(frames.dtype).unsqueeze(-1)
            return (frames * w).sum(1) / w.sum(1)
        if self.kind == "middle":
            middle = (mask.sum(1) - 1) // 2  # real frames come first, padding after
            return frames[torch.arange(b, device=frames.device), middle]
        if self.kind == "attention":
            out, _ = self.attn(self.query.expand(b, -1, -1), frames, frames, key_padding_mask=~mask)
            return self.norm(out[:, 0])
        x = torch.cat([self.cls.expand(b, -1, -1), frames], dim=1) + self.pos[:, : t + 1]
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=mask.device), ~mask], dim=1)
        x = self.encoder(x, src_key_padding_mask=pad)
        return self.norm(x[:, 0])
