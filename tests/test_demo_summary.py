"""The demo's closing summary, read from the files the stages wrote."""

from __future__ import annotations

import json

from lpr_core.demo import DemoReport, StageResult, detector_line, summary_lines


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_summary_reports_stage_times_gates_and_metrics(tmp_path):
    _write(tmp_path / "data/validate/validation_summary.json", {"success": True})
    _write(tmp_path / "data/metrics/train_detector.json",
           {"detector/map50": 0.268, "detector/map": 0.064, "detector/top_box_iou50": 0.4, "detector/val_map50": 0.37,
            "detector/train_loss": 1.2})
    _write(tmp_path / "data/metrics/evaluate.json",
           {"test/rank1": 0.14, "test/rank1_ci_low": 0.08, "test/rank1_ci_high": 0.2, "test/rank5": 0.4})
    report = DemoReport("demo-x", [StageResult("train_encoder", 192.7, "ran"), StageResult("evaluate", 25.0, "cached")],
                        promotion="lpr-encoder v1: PROMOTED to champion")
    text = "\n".join(summary_lines(tmp_path, report))
    assert "demo-x" in text and "train_encoder    ran" in text and "217.7 s" in text  # the total
    assert "validation: PASSED" in text
    assert ("detector: test mAP@0.5 0.268, mAP 0.064; crop box right (IoU >= 0.5) on 40% of test frames; "
            "held-out training frames mAP@0.5 0.370") in text
    assert "rank-1 0.140 [0.080, 0.200], rank-5 0.400" in text
    assert "promotion: lpr-encoder v1: PROMOTED" in text
    assert "every stage was cached" not in text


def test_all_cached_says_so_and_missing_figures_are_left_out(tmp_path):
    report = DemoReport("demo-y", [StageResult("download", 0.5, "cached"), StageResult("validate", 0.4, "cached")])
    text = "\n".join(summary_lines(tmp_path, report))
    assert "every stage was cached" in text and "--fresh" in text
    assert "detector:" not in text and "validation:" not in text
    assert detector_line({}) == "no figures"
    assert detector_line({"detector/map50": 0.5}) == "test mAP@0.5 0.500"
