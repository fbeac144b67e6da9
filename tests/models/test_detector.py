"""The product detector: building, local weights, box selection, crops with fallback, mAP."""

from __future__ import annotations

import pytest
import torch

from lpr_core.models.detector import (
    DetectorConfig,
    build_detector,
    coco_backend,
    detect,
    detection_map,
    evaluate_detector,
    load_detector,
    query_frame_boxes,
    save_detector,
    select_box,
    top_box_hit_rate,
)

SMALL = DetectorConfig(arch="fasterrcnn_mobilenet_v3_large_320_fpn", min_size=64, max_size=96, rpn_proposals=50, rois_per_image=16, box_head_dim=64)


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return build_detector(SMALL)


def test_select_box_top_and_union():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 30.0, 20.0], [40.0, 40.0, 50.0, 50.0]])
    scores = torch.tensor([0.9, 0.5, 0.2])
    assert select_box(boxes, scores, 0.3, "top") == ((0.0, 0.0, 10.0, 10.0), pytest.approx(0.9))
    box, score = select_box(boxes, scores, 0.3, "union")
    assert box == (0.0, 0.0, 30.0, 20.0) and score == pytest.approx(0.9)
    assert select_box(boxes, scores, 0.95, "top") == (None, None)
    assert select_box(boxes[:0], scores[:0], 0.0, "union") == (None, None)
    with pytest.raises(ValueError, match="mode"):
        select_box(boxes, scores, 0.1, "all")


def test_detect_crops_and_falls_back_to_the_full_frame(detector):
    frames = [torch.rand(3, 40, 48), torch.rand(3, 44, 52)]
    none = detect(detector, frames, score_threshold=1.01)
    assert [d.box for d in none] == [None, None]
    assert all(torch.equal(d.crop, f) for d, f in zip(none, frames))
    # an untrained detector still scores its proposals around 0.5: everything passes 0.0
    some = detect(detector, frames, score_threshold=0.0, mode="union")
    for d, _f in zip(some, frames):
        assert d.box is not None and d.score is not None
        x1, y1, x2, y2 = d.box
        if x2 - x1 >= 2 and y2 - y1 >= 2:
            assert d.crop.shape[-2:] == (int(round(y2)) - int(y1), int(round(x2)) - int(x1))
    assert detector.training  # detect() restores the mode it found


def test_detection_map_against_known_cases():
    assert coco_backend() in ("pycocotools", "faster_coco_eval")
    gt = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]), "labels": torch.tensor([1])}]
    perfect = [{"boxes": gt[0]["boxes"], "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    m = detection_map(perfect, gt)
    assert m["val/map_50"] == pytest.approx(1.0) and m["val/map"] == pytest.approx(1.0)
    # IoU 0.6: a hit at 0.5, a miss from 0.65 on
    shifted = [{"boxes": torch.tensor([[20.0, 10.0, 60.0, 50.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    m = detection_map(shifted, gt)
    assert m["val/map_50"] == pytest.approx(1.0) and 0.0 < m["val/map"] < 0.5
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    assert detection_map(empty, gt)["val/map_50"] == pytest.approx(0.0)


def test_top_box_hit_rate_judges_the_crop_box_only():
    gt = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]), "labels": torch.tensor([1])}

    def pred(boxes, scores):
        return {"boxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.tensor(scores), "labels": torch.ones(len(scores))}

    right = pred([[12.0, 10.0, 52.0, 50.0]], [0.9])  # IoU 0.9
    wrong_on_top = pred([[60.0, 60.0, 90.0, 90.0], [10.0, 10.0, 50.0, 50.0]], [0.8, 0.7])  # the right box ranks second
    too_shy = pred([[10.0, 10.0, 50.0, 50.0]], [0.2])  # right, but under the threshold: no crop
    loose = pred([[20.0, 10.0, 70.0, 50.0]], [0.9])  # IoU 0.5 exactly: a hit at 0.5
    nothing = pred([], [])
    assert top_box_hit_rate([right], [gt], 0.3) == 1.0
    assert top_box_hit_rate([wrong_on_top, too_shy, nothing], [gt] * 3, 0.3) == 0.0
    assert top_box_hit_rate([too_shy], [gt], 0.1) == 1.0
    assert top_box_hit_rate([right, loose, wrong_on_top, nothing], [gt] * 4, 0.3) == pytest.approx(0.5)
    assert top_box_hit_rate([loose], [gt], 0.3, iou=0.6) == 0.0
    assert top_box_hit_rate([], [], 0.3) == 0.0


def test_evaluate_detector_runs_without_autograd_and_restores_training_mode(detector):
    grad_enabled = []
    hook = detector.register_forward_pre_hook(lambda module, args: grad_enabled.append(torch.is_grad_enabled()))
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([1])}
    detector.train()
    try:
        metrics = evaluate_detector(detector, [([torch.rand(3, 64, 80)] * 2, [target] * 2)], score_threshold=0.0)
    finally:
        hook.remove()
    assert grad_enabled == [False] and detector.training
    assert 0.0 <= metrics["val/top_box_iou50"] <= 1.0


def test_save_load_round_trip(tmp_path, detector):
    path = save_detector(detector, SMALL, tmp_path / "det.pt")
    loaded, config = load_detector(path)
    assert config == SMALL
    frame = [torch.rand(3, 40, 48)]
    detector.eval()
    try:
        with torch.no_grad():
            a, b = detector(frame)[0], loaded(frame)[0]
    finally:
        detector.train()
    torch.testing.assert_close(a["boxes"], b["boxes"])
    torch.testing.assert_close(a["scores"], b["scores"])


def test_local_backbone_weights_are_loaded(tmp_path):
    import torchvision

    torch.manual_seed(5)
    classifier = torchvision.models.mobilenet_v3_large()
    torch.save(classifier.state_dict(), tmp_path / "mnv3.pth")
    model = build_detector(DetectorConfig(arch="fasterrcnn_mobilenet_v3_large_320_fpn", min_size=64, max_size=96, weights_backbone=str(tmp_path / "mnv3.pth")))
    torch.testing.assert_close(model.backbone.body["0"][0].weight, classifier.features[0][0].weight, rtol=0, atol=0)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown detector"):
        DetectorConfig(arch="yolo")
    with pytest.raises(ValueError, match="crop_mode"):
        DetectorConfig(crop_mode="all")


def test_detector_checkpoint_with_other_classes_loads_all_but_the_class_head(tmp_path):
    import dataclasses

    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    torch.manual_seed(6)
    source = build_detector(SMALL)
    source.roi_heads.box_predictor = FastRCNNPredictor(SMALL.box_head_dim, 91)  # e.g. a COCO model
    torch.save(source.state_dict(), tmp_path / "coco.pth")
    model = build_detector(dataclasses.replace(SMALL, weights=str(tmp_path / "coco.pth")))
    torch.testing.assert_close(model.rpn.head.conv[0][0].weight, source.rpn.head.conv[0][0].weight, rtol=0, atol=0)
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    wrong = dataclasses.replace(SMALL, box_head_dim=32, weights=str(tmp_path / "coco.pth"))
    with pytest.raises(ValueError, match="do not fit"):
        build_detector(wrong)


def test_query_frame_boxes_cover_the_frames_a_query_reads(tmp_path, detector):
    import io

    import pyarrow as pa
    from PIL import Image

    from lpr_core.data.datasets import ManifestImages
    from lpr_core.formats.schema import FRAME_MANIFEST_SCHEMA

    clip = "0b1e7c52-6a42-4d7e-9d3a-0f9b2a6c1d11-0-999"
    rows = []
    for f in range(5):
        buf = io.BytesIO()
        Image.new("RGB", (48, 40), (10 * f, 100, 200)).save(buf, format="JPEG")
        (tmp_path / f"{f}.jpg").write_bytes(buf.getvalue())
        rows.append({"frame_id": f"{clip}-{f:04d}", "clip_id": clip, "frame_index": f, "url": "u", "path": f"{f}.jpg",
                     "tar_member": None, "width": 48, "height": 40, "original_width": 96, "original_height": 80,
                     "status": "success", "error": None, "sha256": None})
    frames = ManifestImages(tmp_path, pa.Table.from_pylist(rows, schema=FRAME_MANIFEST_SCHEMA), id_column="frame_id")
    boxes = query_frame_boxes(detector, [clip, "absent-clip"], frames, num_frames=2, score_threshold=0.0)
    assert set(boxes) == {(clip, 1), (clip, 3)}  # the uniform positions of 2 out of 5 frames
    assert all(len(v) == 1 and len(v[0]) == 4 for v in boxes.values())
    assert query_frame_boxes(detector, [clip], frames, num_frames=2, score_threshold=1.01) == {}


@pytest.mark.parametrize("arch", ["fcos_resnet18_fpn", "fasterrcnn_resnet18_fpn"])
def test_slim_resnet18_fpn_detectors_train_and_detect(arch):
    torch.manual_seed(7)
    config = DetectorConfig(arch=arch, min_size=64, max_size=96, backbone_width=16, fpn_channels=32, box_head_dim=64,
                            rpn_proposals=50, rois_per_image=16)
    model = build_detector(config)
    assert model.backbone.out_channels == 32 and model.backbone.body.conv1.out_channels == 16
    images = [torch.rand(3, 64, 80), torch.rand(3, 64, 80)]
    targets = [{"boxes": torch.tensor([[10.0, 8.0, 40.0, 50.0]]), "labels": torch.tensor([1])}] * 2
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.backbone.body.conv1.weight.grad is not None
    found = detect(model, images, score_threshold=0.0)
    assert len(found) == 2 and all(d.crop.ndim == 3 for d in found)


def test_slim_detector_takes_local_resnet18_weights_at_width_64(tmp_path):
    import torchvision

    torch.manual_seed(8)
    classifier = torchvision.models.resnet18()
    torch.save(classifier.state_dict(), tmp_path / "r18.pth")
    model = build_detector(DetectorConfig(arch="fcos_resnet18_fpn", backbone_width=64, weights_backbone=str(tmp_path / "r18.pth")))
    torch.testing.assert_close(model.backbone.body.layer3[1].conv2.weight, classifier.layer3[1].conv2.weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match="do not fit"):
        build_detector(DetectorConfig(arch="fcos_resnet18_fpn", backbone_width=32, weights_backbone=str(tmp_path / "r18.pth")))
