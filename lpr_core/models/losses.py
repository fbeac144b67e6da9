"""Losses of the RICE encoder: instance-level contrastive learning (ICL, a symmetric InfoNCE
between clip and image embeddings with negatives gathered across DDP ranks), hard negative
mining for the pairwise matching decoder, and its binary matching loss."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

__all__ = [
    "LogitScale",
    "gather_across_ranks",
    "contrastive_loss",
    "mine_hard_negatives",
    "matching_loss",
]


class LogitScale(nn.Module):
    """A learnable inverse temperature ``exp(s)``, clamped to ``[1, max_scale]``.

    Args:
        init_temperature: the initial temperature (CLIP: 0.07, scale ~14.3).
        max_scale: the largest scale (CLIP: 100).
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        """The scale, a scalar tensor."""
        return self.log_scale.clamp(0.0, self.max_log).exp()


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, world = _world()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.size = rank, x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_across_ranks(x: torch.Tensor, *, with_grad: bool = True) -> torch.Tensor:
    """Concatenate ``x`` ``[B, ...]`` of every rank along dim 0, rank order (``[W*B, ...]``).

    With ``with_grad`` the gather is differentiable everywhere (the gradient of every rank's loss
    flows back to the rank that produced the features, so the gradient equals the one of a
    single process holding the whole batch); otherwise only the local shard keeps its gradient
    (CLIP's cheaper approximation). Every rank must pass the same B. One process: returns ``x``.
    """
    rank, world = _world()
    if world == 1:
        return x
    if with_grad:
        return _GatherWithGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    parts[rank] = x
    return torch.cat(parts, dim=0)


def contrastive_loss(
    clip_emb: torch.Tensor,
    image_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    gather: bool = True,
    gather_with_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between the B local pairs and every rank's negatives.

    Row i of the local batch is a clip whose positive is image i. Candidates are the images (and
    for the image->clip direction, the clips) of all ranks. Pairs of *different* rows with the
    same ``labels`` (two clips of one product) are not used as negatives.

    Args:
        clip_emb: ``[B, E]`` L2-normalised clip embeddings.
        image_emb: ``[B, E]`` L2-normalised image embeddings.
        logit_scale: scalar inverse temperature.
        labels: ``[B]`` product labels, or None when every pair is a distinct product.
        gather: gather negatives from all DDP ranks.
        gather_with_grad: see :func:`gather_across_ranks`.

    Returns:
        The loss (mean of clip->image and image->clip cross-entropies over the local rows) and
        the local similarity matrix ``[B, B]`` (clip x image, unscaled, detached) for mining.
    """
    b = clip_emb.shape[0]
    rank, world = _world() if gather else (0, 1)
    if world > 1:
        all_clips = gather_across_ranks(clip_emb, with_grad=gather_with_grad)
        all_images = gather_across_ranks(image_emb, with_grad=gather_with_grad)
        all_labels = gather_across_ranks(labels, with_grad=False) if labels is not None else None
    else:
        all_clips, all_images, all_labels = clip_emb, image_emb, labels
    targets = torch.arange(b, device=clip_emb.device) + rank * b
    logits_c2i = logit_scale * clip_emb @ all_images.t()  # [B, W*B]
    logits_i2c = logit_scale * image_emb @ all_clips.t()
    if labels is not None:
        same = labels[:, None] == all_labels[None, :]
        same[torch.arange(b, device=same.device), targets] = False
        logits_c2i = logits_c2i.masked_fill(same, float("-inf"))
        logits_i2c = logits_i2c.masked_fill(same, float("-inf"))
    loss = 0.5 * (F.cross_entropy(logits_c2i.float(), targets) + F.cross_entropy(logits_i2c.float(), targets))
    local_sim = (clip_emb @ image_emb.t()).detach()
    return loss, local_sim


def mine_hard_negatives(sim: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """In-batch hardest negatives from a clip x image similarity matrix ``[B, B]``.

    Returns ``(image_for_clip, clip_for_image)``, each ``[B]`` long: for clip i the most similar
    image of another product, for image j the most similar clip of another product; ``-1``
    where a row has no other product in the batch.
    """
    b = sim.shape[0]
    invalid = torch.eye(b, dtype=torch.bool, device=sim.device)
    if labels is not None:
        invalid = invalid | (labels[:, None] == labels[None, :])
    masked = sim.float().masked_fill(invalid, float("-inf"))
    best_img_val, image_for_clip = masked.max(dim=1)
    best_clip_val, clip_for_image = masked.max(dim=0)
    image_for_clip = torch.where(torch.isinf(best_img_val), torch.full_like(image_for_clip, -1), image_for_clip)
    clip_for_image = torch.where(torch.isinf(best_clip_val), torch.full_like(clip_for_image, -1), clip_for_image)
    return image_for_clip, clip_for_image


def matching_loss(
    decoder: nn.Module,
    frame_tokens: torch.Tensor,
    frame_pad: torch.Tensor,
    image_tokens: torch.Tensor,
    sim: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary matching loss of the PMD on positives and ICL-mined hard negatives.

    Pairs: the B positives (clip i, image i), (clip i, hardest image for i) and (hardest clip
    for image j, image j), all scored in one decoder pass; binary cross-entropy with positives
    up-weighted to balance the up to 2B negatives.

    Returns:
        The loss and the pair accuracy (a detached scalar).
    """
    b = frame_tokens.shape[0]
    idx = torch.arange(b, device=frame_tokens.device)
    image_for_clip, clip_for_image = mine_hard_negatives(sim, labels)
    neg1 = image_for_clip >= 0
    neg2 = clip_for_image >= 0
    clip_idx = torch.cat([idx, idx[neg1], clip_for_image[neg2]])
    image_idx = torch.cat([idx, image_for_clip[neg1], idx[neg2]])
    target = torch.cat([torch.ones(b), torch.zeros(int(neg1.sum()) + int(neg2.sum()))]).to(frame_tokens.device)
    logits = decoder(frame_tokens[clip_idx], frame_pad[clip_idx], image_tokens[image_idx]).float()
    num_neg = max(1, len(target) - b)
    pos_weight = torch.tensor(num_neg / b, device=logits.device)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
    acc = ((logits > 0).float() == target).float().mean().detach()
    return loss, acc
