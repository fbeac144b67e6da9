"""The RICE clip/image encoder (LPR4M paper), sized by configuration.

One backbone embeds clip frames and shop images alike. Frame embeddings are aggregated over
time into a clip embedding (:mod:`lpr_core.models.aggregator`); clip and image embeddings are
projected by a shared head and L2-normalised. Training adds, each switchable for ablation:

- ICL: symmetric InfoNCE with a learnable temperature, negatives gathered across DDP ranks;
- PMD: a pairwise matching decoder on patch tokens, trained on positives and hard negatives
  mined from the ICL similarities;
- PFR: reconstruction of masked frame patch features from the image's patch tokens.

``RiceModel.forward`` returns the training losses; ``encode_clips`` / ``encode_images`` give
retrieval embeddings.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from lpr_core.models.aggregator import AGGREGATORS, TemporalAggregator
from lpr_core.models.backbone import build_backbone
from lpr_core.models.heads import PairwiseMatchingDecoder, PatchFeatureReconstruction
from lpr_core.models.losses import LogitScale, contrastive_loss, matching_loss

__all__ = ["EncoderConfig", "RiceModel", "build_encoder", "save_encoder", "load_encoder", "embed_clips", "embed_images"]


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder's knobs (``model:`` of ``train_encoder``).

    Attributes:
        backbone: see :func:`lpr_core.models.backbone.build_backbone` (``resnet18``,
            ``vit_b_32``, ``open_clip:ViT-B-32``, ...).
        backbone_width: first-stage channels of resnet10/18/34 (64: torchvision's network).
        weights: ``none``, a local checkpoint path, or a name in the local torch hub cache; for
            ``open_clip:<model>`` a checkpoint file or an open_clip pretrained tag.
        image_size: input side of frames and images (pixels).
        num_frames: T, frames per clip.
        embed_dim: retrieval embedding size.
        aggregator: ``transformer``, ``attention``, ``mean`` or ``middle``.
        aggregator_layers: transformer layers of the aggregator.
        heads: attention heads of the aggregator and decoders.
        dropout: dropout in the aggregator.
        init_temperature: initial InfoNCE temperature.
        max_logit_scale: clamp of the learnable logit scale.
        gather_negatives: gather ICL negatives across DDP ranks.
        gather_with_grad: backpropagate through the gathered features of other ranks (exact
            large-batch gradient) instead of the local shard only.
        pmd: train the pairwise matching decoder.
        pmd_weight: weight of the PMD loss.
        pmd_layers: PMD decoder layers.
        pfr: train patch feature reconstruction.
        pfr_weight: weight of the PFR loss.
        pfr_layers: PFR decoder layers.
        pfr_mask_ratio: share of frame tokens reconstructed.
        decoder_dim: token width of PMD and PFR.
    """

    backbone: str = "resnet18"
    backbone_width: int = 32
    weights: str = "none"
    image_size: int = 64
    num_frames: int = 4
    embed_dim: int = 128
    aggregator: str = "attention"
    aggregator_layers: int = 1
    heads: int = 4
    dropout: float = 0.1
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    gather_negatives: bool = True
    gather_with_grad: bool = True
    pmd: bool = True
    pmd_weight: float = 1.0
    pmd_layers: int = 1
    pfr: bool = True
    pfr_weight: float = 1.0
    pfr_layers: int = 1
    pfr_mask_ratio: float = 0.5
    decoder_dim: int = 128

    def __post_init__(self) -> None:
        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {self.aggregator!r}")
        for name in ("image_size", "num_frames", "embed_dim", "decoder_dim", "heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.embed_dim % self.heads or self.decoder_dim % self.heads:
            raise ValueError(f"embed_dim and decoder_dim must be multiples of heads={self.heads}")


class RiceModel(nn.Module):
    """The encoder with its training heads.

    Shapes: ``frames`` ``[B, T, 3, S, S]``, ``frame_mask`` ``[B, T]`` (True = real frame, real
    frames first), ``images`` ``[B, 3, S, S]``, ``labels`` ``[B]``.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(
            config.backbone, weights=config.weights, image_size=config.image_size, width=config.backbone_width
        )
        self.proj = nn.Linear(self.backbone.dim, config.embed_dim)
        self.aggregator = TemporalAggregator(
            config.aggregator,
            config.embed_dim,
            config.num_frames,
            layers=config.aggregator_layers,
            heads=config.heads,
            dropout=config.dropout,
        )
        self.logit_scale = LogitScale(config.init_temperature, config.max_logit_scale)
        self.channels_last = False
        self.num_tokens = 0
        if config.pmd or config.pfr:
            self.token_proj = nn.Sequential(nn.Linear(self.backbone.token_dim, config.decoder_dim), nn.LayerNorm(config.decoder_dim))
            with torch.no_grad():
                was = self.backbone.training
                self.backbone.eval()
                _, tokens = self.backbone(torch.zeros(1, 3, config.image_size, config.image_size))
                self.backbone.train(was)
            self.num_tokens = tokens.shape[1]
            frame_tokens = config.num_frames * self.num_tokens
        if config.pmd:
            self.pmd = PairwiseMatchingDecoder(
                config.decoder_dim,
                layers=config.pmd_layers,
                heads=config.heads,
                max_frame_tokens=frame_tokens,
                max_image_tokens=self.num_tokens,
            )
        if config.pfr:
            self.pfr = PatchFeatureReconstruction(
                config.decoder_dim,
                layers=config.pfr_layers,
                heads=config.heads,
                max_frame_tokens=frame_tokens,
                mask_ratio=config.pfr_mask_ratio,
            )

    @property
    def mean(self) -> tuple[float, ...]:
        """The per-channel mean input images are normalised with (the backbone's: an open_clip
        tower's travels with its weights, so a reloaded encoder normalises as it was trained)."""
        return tuple(self.backbone.mean)

    @property
    def std(self) -> tuple[float, ...]:
        """The per-channel standard deviation input images are normalised with (the backbone's)."""
        return tuple(self.backbone.std)

    def _backbone(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def _embed(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.proj(pooled)

    def _clip_and_image(self, frames: torch.Tensor, frame_mask: torch.Tensor, images: torch.Tensor | None):
        """One backbone pass over the real frames (and images): embeddings and tokens."""
        b, t = frames.shape[:2]
        real = frames[frame_mask]  # [R, 3, S, S]: padded frames are not computed
        batch = real if images is None else torch.cat([real, images])
        pooled, tokens = self._backbone(batch)
        emb = self._embed(pooled)
        r = real.shape[0]
        frame_emb = emb.new_zeros(b, t, emb.shape[-1])
        frame_emb[frame_mask] = emb[:r]
        clip = F.normalize(self.aggregator(frame_emb, frame_mask), dim=-1)
        image = F.normalize(emb[r:], dim=-1) if images is not None else None
        return clip, image, tokens, r

    def encode_clips(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Clip embeddings ``[B, E]`` (L2-normalised) of ``frames`` ``[B, T, 3, S, S]``."""
        if frame_mask is None:
            frame_mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        return self._clip_and_image(frames, frame_mask, None)[0]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``[B, E]`` (L2-normalised) of ``images`` ``[B, 3, S, S]``."""
        pooled, _ = self._backbone(images)
        return F.normalize(self._embed(pooled), dim=-1)

    def forward(
        self, frames: torch.Tensor, frame_mask: torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Training losses of a batch of (clip, image) pairs.

        Returns:
            ``loss`` (the weighted sum), ``icl_loss``, ``logit_scale`` and, when enabled,
            ``pmd_loss``, ``pmd_acc``, ``pfr_loss``.
        """
        cfg = self.config
        clip, image, tokens, r = self._clip_and_image(frames, frame_mask, images)
        scale = self.logit_scale()
        icl, sim = contrastive_loss(
            clip, image, scale, labels, gather=cfg.gather_negatives, gather_with_grad=cfg.gather_with_grad
        )
        out = {"icl_loss": icl, "logit_scale": scale.detach()}
        loss = icl
        if cfg.pmd or cfg.pfr:
            b, t = frames.shape[:2]
            tok = self.token_proj(tokens)  # [R + B, N, D]
            n, d = tok.shape[1], tok.shape[2]
            frame_tok = tok.new_zeros(b, t, n, d)
            frame_tok[frame_mask] = tok[:r]
            frame_tok = frame_tok.reshape(b, t * n, d)
            frame_pad = (~frame_mask).repeat_interleave(n, dim=1)  # [B, T*N]
            image_tok = tok[r:]
            if cfg.pmd:
                pmd, acc = matching_loss(self.pmd, frame_tok, frame_pad, image_tok, sim, labels)
                out["pmd_loss"], out["pmd_acc"] = pmd, acc
                loss = loss + cfg.pmd_weight * pmd
            if cfg.pfr:
                pfr = self.pfr(frame_tok, frame_pad, image_tok)
                out["pfr_loss"] = pfr
                loss = loss + cfg.pfr_weight * pfr
        out["loss"] = loss
        return out


def build_encoder(config: EncoderConfig) -> RiceModel:
    """Build the encoder (and its heads) from its config."""
    return RiceModel(config)


def save_encoder(model: RiceModel, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``{"config", "state_dict", "extra"}`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"config": dataclasses.asdict(model.config), "state_dict": state, "extra": extra or {}}, tmp)
    os.replace(tmp, path)
    return path


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> RiceModel:
    """Rebuild an encoder saved by :func:`save_encoder` (backbone weights come from the file)."""
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(obj, dict) or "config" not in obj or "state_dict" not in obj:
        raise ValueError(f"{path} is not an encoder file written by save_encoder")
    config = EncoderConfig(**{**obj["config"], "weights": "none"})
    model = RiceModel(config)
    model.load_state_dict(obj["state_dict"])
    return model.eval()


@torch.no_grad()
def _embed_loader(fn, loader, device: torch.device, amp: bool) -> np.ndarray:
    chunks = []
    for batch in tqdm(loader, desc="embed", leave=False, disable=None):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            emb = fn(batch)
        chunks.append(emb.float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def embed_clips(model: RiceModel, loader, device: str | torch.device = "cpu", amp: bool = False) -> np.ndarray:
    """Embeddings ``[N, E]`` float32 of every clip a loader yields (``frames``, ``frame_mask``),
    in loader order (use an unshuffled loader)."""
    device = torch.device(device)
    model.eval().to(device)
    return _embed_loader(
        lambda b: model.encode_clips(b["frames"].to(device), b["frame_mask"].to(device)), loader, device, amp
    )


def embed_images(model: RiceModel, loader, device: str | torch.device = "cpu", amp: bool = False) -> np.ndarray:
    """Embeddings ``[N, E]`` float32 of every image a loader yields (``image``), in order."""
    device = torch.device(device)
    model.eval().to(device)
    return _embed_loader(lambda b: model.encode_images(b["image"].to(device)), loader, device, amp)
