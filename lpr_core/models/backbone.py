"""Image backbones shared by clip frames and shop images.

Every backbone maps images ``[B, 3, H, W]`` to a pooled feature ``[B, dim]`` and patch tokens
``[B, N, token_dim]`` (the last feature map of a ResNet flattened, or the patch tokens of a ViT),
the latter feeding the PMD and PFR heads.

Names:

- ``resnet10`` (BasicBlock [1, 1, 1, 1], a small CPU-friendly ResNet), ``resnet18``,
  ``resnet34``, ``resnet50`` (torchvision); the BasicBlock ones take a ``width`` (channels of
  the first stage, 64 as in torchvision; e.g. 32 is 4x cheaper) for CPU demos;
- ``vit_tiny`` (patch 16, width 192, 4 layers), ``vit_small`` (patch 16, width 384, 6 layers),
  ``vit_b_32``, ``vit_b_16`` (torchvision; the image size is fixed at build time);
- ``open_clip:<model>``, e.g. ``open_clip:ViT-B-32`` (the paper's CLIP ViT-B/32): the visual
  tower of an open_clip model (a built-in name, or the path of a ``.json`` model config in
  open_clip's format), built at the encoder's image size (position embeddings of a checkpoint made
  at another size are interpolated), with the normalisation its weights were trained with. Its
  weights spec is a checkpoint file or an open_clip pretrained tag
  (:func:`lpr_core.models.weights.resolve_open_clip_weights`). OpenAI's weights (tag ``openai`` or
  their ``ViT-B-32.pt``) were trained with QuickGELU: name the model ``ViT-B-32-quickgelu``.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.vision_transformer import VisionTransformer

from lpr_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lpr_core.models.weights import (
    load_open_clip_visual_state,
    load_state_dict_file,
    resolve_open_clip_weights,
    resolve_weights,
)

__all__ = ["BACKBONES", "build_backbone", "open_clip_model_config", "ResNetBackbone", "ViTBackbone", "OpenClipBackbone"]

BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50", "vit_tiny", "vit_small", "vit_b_32", "vit_b_16")
#: name -> (patch, layers, heads, hidden, mlp) of the small ViTs
_VIT_SMALL = {"vit_tiny": (16, 4, 3, 192, 768), "vit_small": (16, 6, 6, 384, 1536)}


_BASIC_LAYERS = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}


def _basic_resnet(layers: list[int], width: int) -> nn.Module:
    """A torchvision ``ResNet`` of BasicBlocks whose stages have ``width * (1, 2, 4, 8)``
    channels (``width=64`` is the standard network, same parameter names)."""
    net = ResNet(BasicBlock, layers)
    if width == 64:
        return net
    # rebuild the stages at another width with torchvision's own layer factory
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(BasicBlock, width, layers[0])
    net.layer2 = net._make_layer(BasicBlock, 2 * width, layers[1], stride=2)
    net.layer3 = net._make_layer(BasicBlock, 4 * width, layers[2], stride=2)
    net.layer4 = net._make_layer(BasicBlock, 8 * width, layers[3], stride=2)
    net.fc = nn.Linear(8 * width, 1000)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def basic_resnet(name: str, width: int = 64) -> nn.Module:
    """A torchvision ResNet (``resnet10/18/34``) of BasicBlocks with ``width`` first-stage
    channels, randomly initialised (the body of the encoder's and the detector's backbones)."""
    if name not in _BASIC_LAYERS:
        raise ValueError(f"basic_resnet supports {sorted(_BASIC_LAYERS)}, not {name!r}")
    return _basic_resnet(_BASIC_LAYERS[name], width)


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier: pooled feature and last-stage tokens."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.dim = self.token_dim = net.fc.in_features
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, H, W]`` -> pooled ``[B, C]``, tokens ``[B, h*w, C]``."""
        fmap = self.layers(self.stem(x))
        tokens = fmap.flatten(2).transpose(1, 2)
        return tokens.mean(dim=1), tokens


class ViTBackbone(nn.Module):
    """A torchvision VisionTransformer without its head: CLS token and patch tokens."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        net.heads = nn.Identity()
        self.net = net
        self.dim = self.token_dim = net.hidden_dim
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, S, S]`` -> CLS ``[B, D]``, patch tokens ``[B, (S/p)^2, D]``."""
        n = x.shape[0]
        x = self.net._process_input(x)
        cls = self.net.class_token.expand(n, -1, -1)
        x = self.net.encoder(torch.cat([cls, x], dim=1))
        return x[:, 0], x[:, 1:]


class OpenClipBackbone(nn.Module):
    """The visual tower of an open_clip CLIP model: its projected pooled embedding and its patch
    tokens (the class token left out, after the final layer norm, not projected).

    The normalisation the tower was trained with is held in buffers (``norm_mean``,
    ``norm_std``), so that it travels with the weights into every checkpoint of the encoder.
    """

    def __init__(self, visual: nn.Module, dim: int, token_dim: int, mean, std) -> None:
        super().__init__()
        self.visual = visual
        self.dim, self.token_dim = dim, token_dim
        self.register_buffer("norm_mean", torch.tensor([float(v) for v in mean]))
        self.register_buffer("norm_std", torch.tensor([float(v) for v in std]))

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean the tower expects (of images scaled to [0, 1])."""
        return tuple(float(v) for v in self.norm_mean.tolist())

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation the tower expects."""
        return tuple(float(v) for v in self.norm_std.tolist())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, S, S]`` -> pooled ``[B, dim]``, patch tokens ``[B, (S/p)^2, token_dim]``."""
        pooled, tokens = self.visual(x)
        return pooled, tokens


def _load_into(net: nn.Module, path, name: str) -> None:
    state = load_state_dict_file(path)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"weights {path} do not fit backbone {name!r}: missing {sorted(missing)[:8]}, "
            f"unexpected {sorted(unexpected)[:8]}"
        )


def _import_open_clip(name: str):
    try:
        import open_clip
    except ImportError as exc:
        raise ImportError(
            f"backbone {name!r} needs the open_clip_torch package, which is not installed "
            "(it is in requirements/main.in: install the lock, or use a torchvision backbone)"
        ) from exc
    return open_clip


def open_clip_model_config(model: str) -> dict:
    """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ``quick_gelu``) of
    a built-in model name (``ViT-B-32``) or of a JSON file in open_clip's config format.

    Raises:
        ValueError: an unknown name or an unreadable file, with the names open_clip knows.
    """
    open_clip = _import_open_clip(f"open_clip:{model}")
    if model.endswith(".json"):
        path = os.path.expanduser(model)
        try:
            with open(path, encoding="utf-8") as fh:
                cfg = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ValueError(f"open_clip model config {path}: cannot be read ({exc})") from exc
        if not isinstance(cfg, dict):
            raise ValueError(f"open_clip model config {path}: not a JSON object")
        cfg = cfg.get("model_cfg", cfg)
        for key in ("embed_dim", "vision_cfg"):
            if key not in cfg:
                raise ValueError(f"open_clip model config {path}: no {key!r} (open_clip's format: embed_dim, vision_cfg)")
        return cfg
    cfg = open_clip.get_model_config(model)
    if cfg is None:
        vits = [m for m in open_clip.list_models() if m.startswith("ViT-")]
        raise ValueError(
            f"open_clip has no model {model!r} (a built-in name such as {', '.join(vits[:6])}, ..., "
            "or the path of a .json model config)"
        )
    return cfg


def _load_open_clip_visual(visual: nn.Module, state: dict, path, name: str) -> None:
    """Load a visual tower's state dict, interpolating position embeddings made at another size."""
    from open_clip.model import resize_pos_embed

    if "positional_embedding" in state:
        wrapped = {"visual.positional_embedding": state["positional_embedding"]}
        resize_pos_embed(wrapped, SimpleNamespace(visual=visual))
        state = {**state, "positional_embedding": wrapped["visual.positional_embedding"]}
    try:
        missing, unexpected = visual.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"weights {path} do not fit backbone {name!r}: {exc}") from exc
    if missing or unexpected:
        raise ValueError(
            f"weights {path} do not fit backbone {name!r}: missing {sorted(missing)[:8]}, "
            f"unexpected {sorted(unexpected)[:8]}"
        )


def _open_clip_backbone(name: str, weights: str | None, image_size: int) -> OpenClipBackbone:
    """The visual tower of ``open_clip:<model>`` at ``image_size`` with its weights (see
    :func:`build_backbone`). Only the visual tower is built: no text tower is ever made."""
    open_clip = _import_open_clip(name)
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.model import _build_vision_tower

    model = name.split(":", 1)[1]
    cfg = open_clip_model_config(model)
    vision = dict(cfg["vision_cfg"])
    if vision.get("timm_model_name") or isinstance(vision.get("layers"), (list, tuple)):
        kind = "timm model" if vision.get("timm_model_name") else "modified ResNet"
        raise ValueError(
            f"backbone {name!r}: its visual tower is a {kind}; the encoder needs an open_clip ViT tower "
            "(its patch tokens feed PMD and PFR), e.g. open_clip:ViT-B-32"
        )
    vision.update(image_size=image_size, output_tokens=True)
    quick_gelu = bool(cfg.get("quick_gelu", False))
    spec = str(weights or "none")
    tag = {} if os.path.isfile(os.path.expanduser(spec)) else open_clip.get_pretrained_cfg(model, spec)
    if tag and bool(tag.get("quick_gelu", False)) != quick_gelu:
        fix = f"{model}-quickgelu" if tag.get("quick_gelu") else model.removesuffix("-quickgelu")
        raise ValueError(
            f"open_clip weights {weights!r} were trained {'with' if tag.get('quick_gelu') else 'without'} QuickGELU "
            f"activations but open_clip:{model} uses {'QuickGELU' if quick_gelu else 'GELU'}: use backbone "
            f"'open_clip:{fix}' (the activation is part of the architecture, so the encoder reloads right)"
        )
    path, tag = resolve_open_clip_weights(weights, model)  # a cached or fetched file for a tag
    visual = _build_vision_tower(cfg["embed_dim"], vision, quick_gelu=quick_gelu)
    if path is not None:
        state, scripted = load_open_clip_visual_state(path)
        if scripted and not quick_gelu:
            raise ValueError(
                f"weights {path} are OpenAI's TorchScript CLIP release, trained with QuickGELU activations: "
                f"use backbone 'open_clip:{model}-quickgelu'"
            )
        _load_open_clip_visual(visual, state, path, name)
    preprocess = cfg.get("preprocess_cfg") or {}
    mean = tag.get("mean") or preprocess.get("mean") or OPENAI_DATASET_MEAN
    std = tag.get("std") or preprocess.get("std") or OPENAI_DATASET_STD
    was = visual.training
    visual.eval()
    with torch.no_grad():
        pooled, tokens = visual(torch.zeros(1, 3, image_size, image_size))
    visual.train(was)
    return OpenClipBackbone(visual, pooled.shape[-1], tokens.shape[-1], mean, std)


def build_backbone(name: str, *, weights: str | None = "none", image_size: int = 224, width: int = 64) -> nn.Module:
    """Build a backbone by name, optionally loading local pretrained weights.

    Args:
        name: one of :data:`BACKBONES` or ``open_clip:<model>``.
        weights: ``"none"``, a checkpoint path, or a name resolved in the local cache (see
            :mod:`lpr_core.models.weights`). Classification heads in the checkpoint are
            accepted and dropped. For ``open_clip:<model>``: a checkpoint file (the visual
            tower is taken from a full CLIP checkpoint) or an open_clip pretrained tag.
        image_size: input size (fixes the position embeddings of ViTs).
        width: first-stage channels of ``resnet10/18/34`` (64: torchvision's network).

    Returns:
        A module ``images [B, 3, H, W] -> (pooled [B, dim], tokens [B, N, token_dim])`` with
        attributes ``dim``, ``token_dim``, ``mean`` and ``std`` (the normalisation it expects).
    """
    if name.startswith("open_clip:"):
        return _open_clip_backbone(name, weights, image_size)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES} or 'open_clip:<model>'")
    if width != 64 and name not in _BASIC_LAYERS:
        raise ValueError(f"width={width} is only supported by {sorted(_BASIC_LAYERS)}, not {name!r}")
    if width <= 0 or width % 8:
        raise ValueError(f"backbone width must be a positive multiple of 8, got {width}")
    path = resolve_weights(weights, name)
    if name.startswith("resnet"):
        net = _basic_resnet(_BASIC_LAYERS[name], width) if name in _BASIC_LAYERS else tvm.resnet50(weights=None)
        if path is not None:
            _load_into(net, path, name)
        return ResNetBackbone(net)
    if name in _VIT_SMALL:
        patch, layers, heads, hidden, mlp = _VIT_SMALL[name]
        net = VisionTransformer(image_size, patch, layers, heads, hidden, mlp)
    else:
        net = getattr(tvm, name)(weights=None, image_size=image_size)
    if path is not None:
        state = load_state_dict_file(path)
        # a checkpoint made at another resolution: the position embedding cannot be reused as is
        pos = state.get("encoder.pos_embedding")
        if pos is not None and pos.shape != net.encoder.pos_embedding.shape:
            raise ValueError(
                f"weights {path} were made for another image size (position embedding "
                f"{tuple(pos.shape)}, model {tuple(net.encoder.pos_embedding.shape)})"
            )
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("heads")]
        unexpected = [k for k in unexpected if not k.startswith("heads")]
        if missing or unexpected:
            raise ValueError(f"weights {path} do not fit backbone {name!r}: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return ViTBackbone(net)
