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
- ``open_clip:<model>`` e.g. ``open_clip:ViT-B-32`` (the paper's CLIP ViT-B/32), when the
  ``open_clip_torch`` package is installed; its weights spec is a local file or an open_clip
  pretrained tag found in the local cache.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from lpr_core.data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from lpr_core.models.weights import load_state_dict_file, resolve_weights

__all__ = ["BACKBONES", "build_backbone", "ResNetBackbone", "ViTBackbone", "OpenClipBackbone"]

BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50", "vit_tiny", "vit_small", "vit_b_32", "vit_b_16")
#: name -> (patch, layers, heads, hidden, mlp) of the small ViTs
_VIT_SMALL = {"vit_tiny": (16, 4, 3, 192, 768), "vit_small": (16, 6, 6, 384, 1536)}


_BASIC_LAYERS = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}


def _basic_resnet(layers: list[int], width: int) -> nn.Module:
    """A torchvision ``ResNet`` of BasicBlocks whose stages have ``width * (1, 2, 4, 8)``
    channels (``width=64`` is the standard network, same parameter names)."""
    from torchvision.models.resnet import BasicBlock, ResNet

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
    """The visual tower of an open_clip model: projected pooled feature and patch tokens."""

    def __init__(self, visual: nn.Module, dim: int, token_dim: int) -> None:
        super().__init__()
        visual.output_tokens = True
        self.visual = visual
        self.dim, self.token_dim = dim, token_dim
        self.mean, self.std = CLIP_MEAN, CLIP_STD

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, S, S]`` -> pooled ``[B, dim]``, tokens ``[B, N, token_dim]``."""
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


def _open_clip_backbone(name: str, weights: str | None, image_size: int):
    try:
        import open_clip
    except ImportError as exc:
        raise ImportError(
            f"backbone {name!r} needs the open_clip_torch package, which is not installed "
            "(add open-clip-torch to the environment, or use a torchvision backbone)"
        ) from exc
    model_name = name.split(":", 1)[1]
    pretrained = None
    if weights and weights.lower() != "none":
        path = os.path.expanduser(weights)
        if os.path.isfile(path):
            pretrained = path
        else:  # an open_clip tag: only the local cache, never the network
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            pretrained = weights
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, force_image_size=image_size)
    except Exception as exc:
        cache = os.path.expanduser(os.environ.get("HF_HUB_CACHE", "~/.cache/huggingface/hub"))
        raise FileNotFoundError(
            f"open_clip model {model_name!r} with weights {weights!r} could not be loaded offline "
            f"(looked at the file path and the open_clip/Hugging Face cache {cache}): {exc}"
        ) from exc
    visual = model.visual
    with torch.no_grad():
        visual.output_tokens = True
        pooled, tokens = visual(torch.zeros(1, 3, image_size, image_size))
    return OpenClipBackbone(visual, pooled.shape[-1], tokens.shape[-1])


def build_backbone(name: str, *, weights: str | None = "none", image_size: int = 224, width: int = 64) -> nn.Module:
    """Build a backbone by name, optionally loading local pretrained weights.

    Args:
        name: one of :data:`BACKBONES` or ``open_clip:<model>``.
        weights: ``"none"``, a checkpoint path, or a name resolved in the local cache (see
            :mod:`lpr_core.models.weights`). Classification heads in the checkpoint are
            accepted and dropped.
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
    import torchvision.models as tvm

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
        from torchvision.models.vision_transformer import VisionTransformer

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
