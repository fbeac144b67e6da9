"""The RICE heads on patch tokens: the pairwise matching decoder (PMD) and patch feature
reconstruction (PFR).

Both read projected patch tokens: a clip's frame tokens ``[B, T*N, D]`` (with a key-padding
mask for padded frames) and its paired image's tokens ``[B, M, D]``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PairwiseMatchingDecoder", "PatchFeatureReconstruction"]


class PairwiseMatchingDecoder(nn.Module):
    """Scores whether a (clip, image) pair shows the same product.

    A CLS query plus the image's patch tokens attend to each other and cross-attend to the
    clip's frame patch tokens (transformer decoder); a linear head on the CLS output gives the
    match logit.

    Args:
        dim: token width D.
        layers: decoder layers.
        heads: attention heads.
        max_frame_tokens: T*N, sizes the frame-token position embedding.
        max_image_tokens: M, sizes the image-token position embedding.
    """

    def __init__(self, dim: int, *, layers: int, heads: int, max_frame_tokens: int, max_image_tokens: int) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.image_pos = nn.Parameter(torch.randn(1, max_image_tokens + 1, dim) * 0.02)
        self.frame_pos = nn.Parameter(torch.randn(1, max_frame_tokens, dim) * 0.02)
        layer = nn.TransformerDecoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1)

    def forward(self, frame_tokens: torch.Tensor, frame_pad: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Match logits ``[P]`` of P pairs.

        Args:
            frame_tokens: ``[P, T*N, D]`` clip tokens.
            frame_pad: ``[P, T*N]`` True where a token belongs to a padded frame.
            image_tokens: ``[P, M, D]``.
        """
        p, m, _ = image_tokens.shape
        query = torch.cat([self.cls.expand(p, -1, -1), image_tokens], dim=1) + self.image_pos[:, : m + 1]
        memory = frame_tokens + self.frame_pos[:, : frame_tokens.shape[1]]
        out = self.decoder(query, memory, memory_key_padding_mask=frame_pad)
        return self.head(self.norm(out[:, 0])).squeeze(-1)


class PatchFeatureReconstruction(nn.Module):
    """Reconstructs masked frame patch features from the paired image's patch tokens.

    A random subset of each clip's real frame tokens is masked; for every masked position a
    query (a mask token plus the position's embedding, carrying no frame content) cross-attends
    to the image tokens and predicts the frame token. The loss is ``1 - cosine`` to the
    (stop-gradient) frame token, so the image representation must hold the product detail the
    frames show.

    Args:
        dim: token width D.
        layers: decoder layers.
        heads: attention heads.
        max_frame_tokens: T*N.
        mask_ratio: share of real frame tokens reconstructed per clip.
    """

    def __init__(self, dim: int, *, layers: int, heads: int, max_frame_tokens: int, mask_ratio: float) -> None:
        super().__init__()
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f"pfr mask_ratio must be in (0, 1], got {mask_ratio}")
        self.mask_ratio = mask_ratio
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, max_frame_tokens, dim) * 0.02)
        layer = nn.TransformerDecoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, frame_tokens: torch.Tensor, frame_pad: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """The reconstruction loss (a scalar) of B positive pairs.

        Args:
            frame_tokens: ``[B, T*N, D]``.
            frame_pad: ``[B, T*N]`` True for tokens of padded frames (never reconstructed).
            image_tokens: ``[B, M, D]``.
        """
        b, n, d = frame_tokens.shape
        real = ~frame_pad
        # random scores, padded tokens last; mask the top share of each clip's real tokens
        scores = torch.rand(b, n, device=frame_tokens.device).masked_fill(frame_pad, -1.0)
        k = max(1, int(round(self.mask_ratio * n)))
        chosen = scores.topk(k, dim=1).indices  # [B, k]
        chosen_real = real.gather(1, chosen)  # a clip with fewer real tokens than k picks padding too
        query = self.mask_token + self.pos[:, :n].expand(b, -1, -1).gather(1, chosen.unsqueeze(-1).expand(-1, -1, d))
        pred = self.out(self.norm(self.decoder(query, image_tokens)))
        target = frame_tokens.detach().gather(1, chosen.unsqueeze(-1).expand(-1, -1, d))
        loss = 1.0 - nn.functional.cosine_similarity(pred.float(), target.float(), dim=-1)
        w = chosen_real.to(loss.dtype)
        return (loss * w).sum() / w.sum().clamp_min(1.0)
