"""The crop mode of the query frames (:mod:`lpr_core.evaluation.crops`)."""

from __future__ import annotations

import json

import pytest

from tests.stages.test_index_gallery import TINY_ENCODER


def test_crops_follow_the_encoder_training_record(tmp_path):
    import torch

    from lpr_core.evaluation.crops import resolve_crops, trained_crop_settings
    from lpr_core.models.encoder import EncoderConfig, build_encoder, save_encoder

    torch.manual_seed(0)
    model = build_encoder(EncoderConfig(**TINY_ENCODER))
    bare = save_encoder(model, tmp_path / "bare" / "encoder.pt")
    assert trained_crop_settings(bare) == (None, None, "")
    assert resolve_crops("auto", None) == "none"
    (tmp_path / "bare" / "train_summary.json").write_text(
        json.dumps({"params": {"data": {"crop_boxes": False}}})
    )
    crop, padding, source = trained_crop_settings(bare)
    assert (crop, padding) == (False, None) and source.endswith("train_summary.json")
    tagged = save_encoder(
        model, tmp_path / "tagged" / "encoder.pt", extra={"data": {"crop_boxes": True, "box_padding": 0.2}}
    )
    assert trained_crop_settings(tagged)[:2] == (True, 0.2)
    assert resolve_crops("auto", True) == "detector"
    assert resolve_crops("ground_truth", True) == "ground_truth" and resolve_crops("none", True) == "none"
    with pytest.raises(ValueError, match="crops"):
        resolve_crops("boxes", True)


def test_ground_truth_boxes_may_be_optional(tmp_path):
    from lpr_core.evaluation.crops import ground_truth_boxes
    from lpr_core.inputs import StageInputError

    assert ground_truth_boxes(tmp_path, frames=None, required=False) is None  # no table: nothing to judge with
    with pytest.raises(StageInputError, match="test_frame_boxes"):
        ground_truth_boxes(tmp_path, frames=None)
