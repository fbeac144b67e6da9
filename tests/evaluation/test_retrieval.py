"""Scoring an encoder end to end on clips (:func:`lpr_core.evaluation.retrieval.score_clips`, the
validation of the training stage) against a brute-force oracle: every clip and image encoded on
its own, straight through the model, and ranked with the protocol's tie rule."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from lpr_core.data.datasets import ManifestImages, QueryClipDataset
from lpr_core.embedding import eval_transform
from lpr_core.evaluation.queries import clip_ground_truth
from lpr_core.evaluation.retrieval import score_clips
from lpr_core.models.encoder import load_encoder
from tests.stages.test_index_gallery import tiny_inputs


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    inputs = tiny_inputs(tmp_path_factory)
    clips = pq.read_table(inputs.prepared / "val_clips.parquet")
    frames = ManifestImages.from_download(inputs.download, "train", "frames")
    images = ManifestImages.from_download(inputs.download, "train", "images")
    return load_encoder(inputs.encoder / "encoder.pt"), clips, frames, images


def test_score_clips_ranks_each_clip_like_a_brute_force_oracle(validation):
    model, clips, frames, images = validation
    gt, galleries = clip_ground_truth(clips)
    assert gt and all(len(g) >= 1 for g in galleries.values())
    scored = score_clips(model, gt=gt, galleries=galleries, frames=frames, images=images, boxes=None, batch_size=3)

    tf = eval_transform(model)
    clips_ds = QueryClipDataset(list(gt), frames, num_frames=model.config.num_frames, transform=tf)
    with torch.no_grad():
        image_emb = {
            i: model.encode_images(tf(images.open(i))[None])[0].numpy()
            for ids in galleries.values() for i in ids if i in images
        }
        clip_emb = {}
        for n, clip_id in enumerate(clips_ds.clip_ids):
            item = clips_ds[n]
            clip_emb[clip_id] = model.encode_clips(item["frames"][None], item["frame_mask"][None])[0].numpy()
    rank_of = dict(zip(scored.results.query_ids.tolist(), scored.results.rank.tolist()))
    for clip_id, (image_id,) in gt.items():
        if clip_id not in clip_emb:
            assert rank_of[clip_id] == np.inf
            continue
        live_id = clip_id[:36]
        members = [i for i in galleries[live_id] if i in image_emb]
        scores = [float(image_emb[i] @ clip_emb[clip_id]) for i in members]
        order = sorted(range(len(members)), key=lambda j: (-scores[j], j))  # the tie rule
        ranked = [members[j] for j in order]
        expected = ranked.index(image_id) + 1 if image_id in ranked else np.inf
        assert rank_of[clip_id] == expected, clip_id
    assert scored.summary["rank1"] == pytest.approx(np.mean(scored.results.rank <= 1))
    assert scored.missing_queries == clips_ds.missing
