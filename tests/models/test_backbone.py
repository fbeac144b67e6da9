"""Backbones and pretrained weights from local files only."""

from __future__ import annotations

import os
import socket
import time
import warnings

import open_clip
import pytest
import torch
import torchvision
from torch.nn import functional as F

from lpr_core.data.transforms import CLIP_MEAN, CLIP_STD
from lpr_core.models.backbone import build_backbone
from lpr_core.models.weights import WeightsNotFoundError, resolve_open_clip_weights, resolve_weights
from tests.models.tiny_clip import TINY_CLIP, build_clip, write_clip_checkpoint, write_config


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


# ------------------------------------------------------------------------------------ open_clip


@pytest.fixture
def tiny_config(tmp_path):
    return write_config(tmp_path / "configs")


def _tower_state(clip) -> dict:
    return {k.removeprefix("visual."): v for k, v in clip.state_dict().items() if k.startswith("visual.")}


@pytest.mark.parametrize("layout", ["training_checkpoint", "state_dict", "visual_only", "safetensors", "encoder"])
def test_open_clip_tower_loads_from_every_checkpoint_layout(tmp_path, tiny_config, layout):
    from safetensors.torch import save_file

    path = tmp_path / ("ck.safetensors" if layout == "safetensors" else "ck.pt")
    clip = write_clip_checkpoint(tiny_config, tmp_path / "ck.pt", seed=4)
    if layout == "state_dict":
        torch.save(clip.state_dict(), path)
    elif layout == "visual_only":
        torch.save(_tower_state(clip), path)
    elif layout == "safetensors":
        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    elif layout == "encoder":  # an encoder of this project: the tower under backbone.visual.
        torch.save({"config": {}, "state_dict": {f"backbone.visual.{k}": v for k, v in _tower_state(clip).items()}}, path)
    net = build_backbone(f"open_clip:{tiny_config}", weights=str(path), image_size=32).eval()
    x = torch.randn(3, 3, 32, 32)
    pooled, tokens = net(x)
    assert (net.dim, net.token_dim) == (32, 64)
    assert pooled.shape == (3, 32) and tokens.shape == (3, 4, 64)  # (32/16)^2 patch tokens, no class token
    torch.testing.assert_close(pooled, clip.eval().encode_image(x))
    assert net.mean == pytest.approx(CLIP_MEAN) and net.std == pytest.approx(CLIP_STD)


def test_open_clip_random_init_and_the_papers_tower_shapes(tiny_config):
    net = build_backbone(f"open_clip:{tiny_config}", weights="none", image_size=32)
    assert not any(isinstance(m, open_clip.transformer.TextTransformer) for m in net.modules())  # no text tower
    paper = build_backbone("open_clip:ViT-B-32", weights="none", image_size=64)
    pooled, tokens = paper(torch.randn(1, 3, 64, 64))
    assert (paper.dim, paper.token_dim) == (512, 768) and pooled.shape == (1, 512) and tokens.shape == (1, 4, 768)


def test_open_clip_position_embeddings_follow_the_image_size(tmp_path, tiny_config):
    clip = write_clip_checkpoint(tiny_config, tmp_path / "ck.pt")
    net = build_backbone(f"open_clip:{tiny_config}", weights=str(tmp_path / "ck.pt"), image_size=64)
    _, tokens = net(torch.randn(2, 3, 64, 64))
    assert tokens.shape == (2, 16, 64)
    pos = net.visual.positional_embedding
    torch.testing.assert_close(pos[0], clip.visual.positional_embedding[0])  # the class token's is kept
    grid = clip.visual.positional_embedding[1:].reshape(1, 2, 2, 64).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 4), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(pos[1:], expected.permute(0, 2, 3, 1).reshape(16, 64))
    torch.testing.assert_close(net.visual.conv1.weight, clip.visual.conv1.weight)


def test_openai_torchscript_release_needs_the_quickgelu_architecture(tmp_path):
    quick = write_config(tmp_path, "tiny-quickgelu", quick_gelu=True)
    clip = build_clip(quick, seed=5).eval()

    class Archive(torch.nn.Module):  # the layout of OpenAI's ViT-B-32.pt: a scripted CLIP, tower under visual.
        def __init__(self, visual):
            super().__init__()
            self.visual = visual

        def forward(self, x):
            return self.visual(x)

    path = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, and tracing warns of constants
        torch.jit.trace(Archive(clip.visual), torch.randn(1, 3, 32, 32), check_trace=False).save(str(path))
    net = build_backbone(f"open_clip:{quick}", weights=str(path), image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x)[0], clip.encode_image(x))
    plain = write_config(tmp_path, "tiny-gelu")
    with pytest.raises(ValueError, match="QuickGELU"):
        build_backbone(f"open_clip:{plain}", weights=str(path), image_size=32)


def test_open_clip_tag_and_architecture_must_agree_on_the_activation():
    # refused before any cache look-up or download: OpenAI's weights were trained with QuickGELU
    with pytest.raises(ValueError, match="open_clip:ViT-B-32-quickgelu"):
        build_backbone("open_clip:ViT-B-32", weights="openai")


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_open_clip_tag_offline_says_where_the_cache_is_and_how_to_fill_it(empty_hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as err:
        build_backbone("open_clip:ViT-B-32", weights="laion2b_s34b_b79k")
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and str(empty_hub_cache) in msg
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in msg
    assert str(empty_hub_cache / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K") in msg
    assert "pretrained='laion2b_s34b_b79k'" in msg and "set weights: to that file's path" in msg


def test_open_clip_tag_with_the_hub_unreachable_fails_fast(empty_hub_cache, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError, match=f"cannot reach 127.0.0.1:{port}") as err:
        resolve_open_clip_weights("laion2b_s34b_b79k", "ViT-B-32")
    assert time.monotonic() - start < 10
    assert str(empty_hub_cache) in str(err.value)


def test_open_clip_tag_is_found_in_the_hub_cache(empty_hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = empty_hub_cache / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    path, cfg = resolve_open_clip_weights("laion2b_s34b_b79k", "ViT-B-32")
    assert path == snapshot / "open_clip_pytorch_model.bin"
    assert cfg["hf_hub"].startswith("laion/") and not cfg.get("quick_gelu")


def test_open_clip_bad_names_and_weights_are_clear_errors(tmp_path, tiny_config):
    with pytest.raises(ValueError, match="no model 'ViT-Q-99'"):
        build_backbone("open_clip:ViT-Q-99")
    with pytest.raises(ValueError, match="cannot be read"):
        build_backbone(f"open_clip:{tmp_path / 'absent.json'}")
    with pytest.raises(ValueError, match="timm model"):
        build_backbone("open_clip:ViT-B-16-SigLIP")
    with pytest.raises(WeightsNotFoundError, match="neither a file"):
        build_backbone(f"open_clip:{tiny_config}", weights=str(tmp_path / "absent.pt"), image_size=32)
    with pytest.raises(WeightsNotFoundError, match="its tags: openai"):
        build_backbone("open_clip:ViT-B-32", weights="not-a-tag")
    wider = write_config(tmp_path, "wider", vision_cfg={**TINY_CLIP["vision_cfg"], "width": 128, "head_width": 32})
    write_clip_checkpoint(wider, tmp_path / "wider.pt")
    with pytest.raises(ValueError, match="do not fit"):
        build_backbone(f"open_clip:{tiny_config}", weights=str(tmp_path / "wider.pt"), image_size=32)
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no CLIP visual tower"):
        build_backbone(f"open_clip:{tiny_config}", weights=str(tmp_path / "other.pt"), image_size=32)


def test_unknown_backbone_and_bad_width():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet7")
    with pytest.raises(ValueError, match="width"):
        build_backbone("resnet50", width=32)
