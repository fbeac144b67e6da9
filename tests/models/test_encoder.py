"""The RICE encoder: shapes, masks, ablation switches, gradients reach every parameter, save/load."""

from __future__ import annotations

import pytest
import torch

from lpr_core.data.transforms import CLIP_MEAN
from lpr_core.models.encoder import EncoderConfig, build_encoder, load_encoder, save_encoder
from tests.models.tiny_clip import write_clip_checkpoint, write_config

TINY = dict(backbone="resnet10", backbone_width=16, image_size=32, num_frames=3, embed_dim=16, decoder_dim=16, heads=2,
            aggregator="transformer", dropout=0.0)


def _batch(b=4, t=3, s=32):
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(b, t, 3, s, s, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 2:] = False
    mask[2, 1:] = False
    return frames, mask, torch.randn(b, 3, s, s, generator=g), torch.arange(b)


@pytest.mark.parametrize(
    "switches,keys",
    [
        ({"pmd": False, "pfr": False}, {"loss", "icl_loss", "logit_scale"}),
        ({"pmd": True, "pfr": False}, {"loss", "icl_loss", "logit_scale", "pmd_loss", "pmd_acc"}),
        ({"pmd": False, "pfr": True}, {"loss", "icl_loss", "logit_scale", "pfr_loss"}),
        ({"pmd": True, "pfr": True, "aggregator": "attention"}, {"loss", "icl_loss", "logit_scale", "pmd_loss", "pmd_acc", "pfr_loss"}),
    ],
)
def test_losses_follow_switches_and_every_parameter_gets_a_gradient(switches, keys):
    torch.manual_seed(0)
    model = build_encoder(EncoderConfig(**{**TINY, **switches}))
    out = model(*_batch())
    assert set(out) == keys
    expected = out["icl_loss"] + out.get("pmd_loss", 0) + out.get("pfr_loss", 0)
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    # DDP needs every parameter to take part in the loss
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_embeddings_are_normalised_and_ignore_padding():
    torch.manual_seed(0)
    model = build_encoder(EncoderConfig(**TINY)).eval()
    frames, mask, images, _ = _batch()
    with torch.no_grad():
        clips = model.encode_clips(frames, mask)
        imgs = model.encode_images(images)
        frames2 = frames.clone()
        frames2[~mask] = 7.0
        clips2 = model.encode_clips(frames2, mask)
    assert clips.shape == (4, 16) and imgs.shape == (4, 16)
    torch.testing.assert_close(clips.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(imgs.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(clips2, clips)


def test_vit_backbone_encoder_runs():
    torch.manual_seed(0)
    model = build_encoder(EncoderConfig(**{**TINY, "backbone": "vit_tiny", "backbone_width": 64}))
    assert model.num_tokens == 4  # (32 / 16) ** 2 patches
    out = model(*_batch())
    assert torch.isfinite(out["loss"])


def test_save_and_load_give_the_same_embeddings(tmp_path):
    torch.manual_seed(0)
    model = build_encoder(EncoderConfig(**TINY)).eval()
    path = save_encoder(model, tmp_path / "encoder.pt", extra={"step": 3})
    loaded = load_encoder(path)
    frames, mask, images, _ = _batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_clips(frames, mask), model.encode_clips(frames, mask))
        torch.testing.assert_close(loaded.encode_images(images), model.encode_images(images))
    assert loaded.config == model.config
    with pytest.raises(ValueError, match="not an encoder file"):
        torch.save({"x": 1}, tmp_path / "other.pt")
        load_encoder(tmp_path / "other.pt")


def test_open_clip_encoder_trains_every_part_and_reloads_with_its_normalisation(tmp_path):
    config_file = write_config(tmp_path / "configs")
    write_clip_checkpoint(config_file, tmp_path / "clip.pt", seed=1)
    torch.manual_seed(0)
    config = EncoderConfig(**{**TINY, "backbone": f"open_clip:{config_file}", "weights": str(tmp_path / "clip.pt")})
    model = build_encoder(config)
    assert model.num_tokens == 4 and model.mean == pytest.approx(CLIP_MEAN)
    out = model(*_batch())
    assert {"pmd_loss", "pfr_loss"} <= set(out) and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]

    # the normalisation is part of the weights: a tower trained with other statistics reloads with them
    model.backbone.norm_mean.fill_(0.5)
    model.backbone.norm_std.fill_(0.25)
    path = save_encoder(model.eval(), tmp_path / "encoder.pt")
    loaded = load_encoder(path)
    assert loaded.config.weights == "none"  # the trained weights come from encoder.pt, not the checkpoint
    assert loaded.mean == (0.5, 0.5, 0.5) and loaded.std == (0.25, 0.25, 0.25)
    frames, mask, images, _ = _batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_clips(frames, mask), model.encode_clips(frames, mask))
        torch.testing.assert_close(loaded.encode_images(images), model.encode_images(images))


def test_config_validation():
    with pytest.raises(ValueError, match="aggregator"):
        EncoderConfig(aggregator="lstm")
    with pytest.raises(ValueError, match="multiples of heads"):
        EncoderConfig(embed_dim=30, heads=4)
