"""Backbones and pretrained weights from local files only."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torchvision

from lpr_core.models.backbone import build_backbone
from lpr_core.models.weights import WeightsNotFoundError, resolve_weights


@pytest.mark.parametrize(
    "name,width,size,tokens,dim",
    [("resnet10", 16, 64, 4, 128), ("resnet18", 32, 64, 4, 256), ("vit_tiny", 64, 32, 4, 192)],
)
def test_backbone_shapes(name, width, size, tokens, dim):
    net = build_backbone(name, image_size=size, width=width)
    pooled, toks = net(torch.randn(2, 3, size, size))
    assert pooled.shape == (2, dim) and toks.shape == (2, tokens, dim)
    assert net.dim == net.token_dim == dim


def test_checkpoint_path_is_loaded(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    net = build_backbone("resnet18", weights=str(path))
    torch.testing.assert_close(net.stem[0].weight, reference.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(net.layers[3][1].conv2.weight, reference.layer4[1].conv2.weight, rtol=0, atol=0)


def test_name_resolves_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    name = os.path.basename(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(2)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / name)
    for spec in ("IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "DEFAULT", name):
        assert resolve_weights(spec, "resnet18") == tmp_path / "hub" / "checkpoints" / name
    net = build_backbone("resnet18", weights="IMAGENET1K_V1")
    torch.testing.assert_close(net.stem[0].weight, reference.conv1.weight, rtol=0, atol=0)


def test_missing_weights_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as err:
        build_backbone("resnet18", weights="IMAGENET1K_V1")
    msg = str(err.value)
    assert "nothing is downloaded" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    with pytest.raises(WeightsNotFoundError, match="not a torchvision weights name"):
        resolve_weights("NOT_A_NAME", "resnet18")
    with pytest.raises(WeightsNotFoundError):
        resolve_weights(str(tmp_path / "absent.pth"), "resnet18")
    assert resolve_weights("none", "resnet18") is None


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "r10.pth"
    torch.save(build_backbone("resnet10", width=16).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit"):
        build_backbone("resnet18", weights=str(path))


def test_vit_checkpoint_round_trip_and_size_check(tmp_path):
    torch.manual_seed(3)
    src = build_backbone("vit_tiny", image_size=32)
    path = tmp_path / "vit.pth"
    torch.save(src.net.state_dict(), path)
    dst = build_backbone("vit_tiny", image_size=32, weights=str(path))
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(dst.eval()(x)[0], src.eval()(x)[0])
    with pytest.raises(ValueError, match="another image size"):
        build_backbone("vit_tiny", image_size=48, weights=str(path))


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is not None, reason="open_clip is installed")
def test_open_clip_without_the_package_is_a_clear_error():
    with pytest.raises(ImportError, match="open_clip_torch"):
        build_backbone("open_clip:ViT-B-32", weights="none")


def test_unknown_backbone_and_bad_width():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet7")
    with pytest.raises(ValueError, match="width"):
        build_backbone("resnet50", width=32)
