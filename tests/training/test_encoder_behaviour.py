"""Model tier: a tiny encoder trained briefly on coloured shapes retrieves the right product, and
keeps doing so when a query clip is brightened or re-cropped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from lpr_core.data.datasets import ClipPairDataset, GalleryImageDataset, ManifestImages, build_dataloader
from lpr_core.data.transforms import build_eval_transform
from lpr_core.models.encoder import embed_clips, embed_images
from lpr_core.training.checkpoint import seed_everything
from lpr_core.training.engine import fit
from lpr_core.training.tasks import TrainEncoderParams, build_encoder_task


def _readers(world):
    root = world["root"]
    return (
        world["clips"],
        ManifestImages.from_download(root, "train", "frames"),
        ManifestImages.from_download(root, "train", "images"),
    )


class _Perturbed(torch.utils.data.Dataset):
    """Query clips with every real frame brightened or re-cropped (after normalisation is undone)."""

    def __init__(self, base, kind, mean, std):
        self.base, self.kind = base, kind
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        s = dict(self.base[i])
        frames = s["frames"] * self.std + self.mean
        if self.kind == "brightness":
            frames = TF.adjust_brightness(frames, 1.25)
        else:  # keep the central 80% and resize back
            size = frames.shape[-1]
            frames = TF.resize(TF.center_crop(frames, int(size * 0.8)), [size, size], antialias=True)
        s["frames"] = (frames.clamp(0, 1) - self.mean) / self.std
        return s


@pytest.mark.slow
def test_trained_encoder_ranks_the_right_product_under_perturbations(tmp_path, world_factory):
    make_world = world_factory
    train_world = make_world(tmp_path / "train", num_products=6, clips_per_product=8, frames_per_clip=4, size=(64, 48), box_every=1, seed=0)
    # new clips of the same six products (other backgrounds, positions, sizes); frames are
    # cropped by their ground-truth boxes in training and in the queries
    query_world = make_world(tmp_path / "query", num_products=6, clips_per_product=2, frames_per_clip=4, size=(64, 48), box_every=1, seed=1)
    params = TrainEncoderParams.from_mapping(
        {
            "model": {"backbone": "resnet10", "backbone_width": 16, "image_size": 48, "num_frames": 2,
                      "embed_dim": 32, "pmd": False, "pfr": False, "aggregator": "transformer", "dropout": 0.0},
            "data": {"crop_boxes": True, "color_jitter": 0.4, "box_jitter": 0.0},
            "train": {"max_steps": 80, "batch_size": 8, "lr": 2e-3, "warmup_steps": 5, "checkpoint_every": 80,
                      "num_workers": 0, "device": "cpu", "progress": False,
                      "log_every": 1},
        }
    )
    seed_everything(0)
    task = build_encoder_task(params, *_readers(train_world))
    result = fit(task, params.train, tmp_path / "run")
    model = task.model.eval()

    tf = build_eval_transform(48, mean=model.mean, std=model.std)
    gallery = GalleryImageDataset(train_world["image_ids"], _readers(train_world)[2], transform=tf)
    gallery_emb = embed_images(model, build_dataloader(gallery, batch_size=8))
    _, q_frames, q_images = _readers(query_world)
    queries = ClipPairDataset(query_world["clips"], q_frames, q_images, num_frames=2, frame_transform=tf,
                              image_transform=tf, sampling="uniform", crop_boxes=True)
    # product p of the query world is product p of the training world
    truth = np.array([query_world["image_ids"].index(i) for i in queries.pair_image_ids])

    def top1(dataset):
        emb = embed_clips(model, build_dataloader(dataset, batch_size=8))
        return (emb @ gallery_emb.T).argmax(1)

    clean = top1(queries)
    assert (clean == truth).mean() >= 0.9, (result.metrics, clean, truth)
    for kind in ("brightness", "recrop"):
        perturbed = top1(_Perturbed(queries, kind, model.mean, model.std))
        assert (perturbed == truth).mean() >= 0.9, (kind, perturbed, truth)
