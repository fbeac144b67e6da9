"""``dvc repro`` of the real ``dvc.yaml`` on the tiny world: a first run does everything, a second nothing.

The first full run happens once per session (the ``reproduced`` fixture); these tests read its
outcome and its project.
"""

from __future__ import annotations

import json

import pytest

from tests.pipeline.project import STAGES, stage_outputs

pytestmark = pytest.mark.slow

#: Metric files of dvc.yaml and a key each must hold (the names the stages write).
METRIC_KEYS = {
    "data/metrics/download.json": "download/test_image_urls/success_rate",
    "data/metrics/validate.json": "validate/success",
    "data/metrics/train_detector.json": "detector/steps",
    "data/metrics/train_encoder.json": "encoder/steps",
    "data/metrics/evaluate.json": "test/rank1",
}


def test_a_full_repro_runs_every_stage_once_and_writes_every_output(reproduced):
    first = reproduced.first_repro.check()
    print(f"\nfirst full dvc repro of the tiny world: {first.seconds:.1f} s")
    assert first.ran == list(STAGES)
    project = reproduced.reproduced
    root = project.root
    for stage, outs in stage_outputs(root / "dvc.yaml").items():
        for out in outs:
            assert (root / out).exists(), f"stage {stage}: output {out} missing after dvc repro"
    assert set(project.lock()) == set(STAGES)
    for path, key in METRIC_KEYS.items():
        metrics = json.loads((root / path).read_text())
        assert key in metrics, f"{path}: no {key!r} (keys: {sorted(metrics)[:12]})"
    evaluate = json.loads((root / "data/metrics/evaluate.json").read_text())
    for k in (1, 3, 5, 10):
        assert 0.0 <= evaluate[f"test/rank{k}"] <= 1.0
    assert evaluate["test/rank1"] <= evaluate["test/rank5"] <= evaluate["test/rank10"]
    assert json.loads((root / "data/validate/validation_summary.json").read_text())["success"] is True


def test_every_stage_logs_one_mlflow_run_sharing_the_dvc_pipeline_run_id(reproduced):
    reproduced.first_repro.check()
    runs = reproduced.reproduced.stage_runs()
    assert [r.data.tags["lpr.stage"] for r in runs] == list(STAGES)
    assert {r.info.status for r in runs} == {"FINISHED"}
    ids = {r.data.tags["lpr.pipeline_run_id"] for r in runs}
    assert len(ids) == 1, ids
    # no LPR_PIPELINE_RUN_ID was set: the id comes from the `dvc repro` process running the stages
    assert ids.pop().startswith("dvc-")


def test_a_second_repro_changes_nothing_and_takes_seconds(reproduced):
    first = reproduced.first_repro.check()
    project = reproduced.reproduced
    mtimes, lock, n_runs = project.output_mtimes(), project.lock(), len(project.stage_runs())
    second = project.dvc("repro")
    print(f"\nsecond dvc repro: {second.seconds:.1f} s (first: {first.seconds:.1f} s)")
    assert second.ran == [] and second.restored == []
    assert second.skipped == list(STAGES)
    assert project.output_mtimes() == mtimes
    assert project.lock() == lock
    assert len(project.stage_runs()) == n_runs
    assert "up to date" in project.dvc("status").output
    assert second.seconds < min(60.0, first.seconds / 3)
