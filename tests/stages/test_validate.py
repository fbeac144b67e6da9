"""The ``validate`` stage as DVC runs it: ``python -m lpr_core.stages.validate`` in a subprocess.

Checks the outputs (metrics summary, failing ids, Data Docs), the exit status and its readable
summary, and that the inputs are byte-identical after a run. The last test runs the real
``download`` stage (img2dataset against the synthetic world's image server) first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lpr_core.stages.validate import main

REPO = Path(__file__).resolve().parents[2]


def _world_helpers():
    """tests/validation/world.py (the tiny world + manifests built with Pillow), loaded by path."""
    spec = importlib.util.spec_from_file_location("validate_world", REPO / "tests" / "validation" / "world.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digest(*roots: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for root in roots for p in sorted(root.rglob("*")) if p.is_file()
    }


def run_stage(annotations: Path, download: Path, out: Path, gx_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GX_ANALYTICS_ENABLED": "false"}
    return subprocess.run(
        [sys.executable, "-m", "lpr_core.stages.validate", "--annotations", str(annotations), "--download",
         str(download), "--out", str(out), "--params", str(REPO / "params.yaml"), "--gx-dir", str(gx_dir), *extra],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from lpr_core.validation.params import load_validate_params

    root = tmp_path_factory.mktemp("stage_world")
    _world_helpers().build_tiny(root, load_validate_params(REPO / "params.yaml").image_size)
    return root


@pytest.fixture
def case(built, tmp_path):
    annotations, download = _world_helpers().copy_world(built, tmp_path)
    gx_dir = tmp_path / "gx"
    shutil.copytree(REPO / "gx", gx_dir, ignore=shutil.ignore_patterns("uncommitted"))
    return annotations, download, gx_dir


@pytest.mark.slow
def test_stage_passes_a_clean_world_writes_its_outputs_and_leaves_inputs_untouched(case, tmp_path):
    annotations, download, gx_dir = case
    before = digest(annotations, download)
    committed_gx = {k: v for k, v in digest(gx_dir).items() if "uncommitted" not in k}
    out = tmp_path / "out"
    proc = run_stage(annotations, download, out, gx_dir, "--metrics", str(tmp_path / "metrics" / "validate.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validation passed" in proc.stdout
    assert digest(annotations, download) == before
    # the run writes only under gx/uncommitted (results, Data Docs): the committed project is untouched
    assert {k: v for k, v in digest(gx_dir).items() if "uncommitted" not in k} == committed_gx

    summary = json.loads((out / "validation_summary.json").read_text())
    metrics = json.loads((tmp_path / "metrics" / "validate.json").read_text())
    assert metrics["validate/success"] == 1.0
    assert {k for k in metrics if k.startswith("validate/suite/")} == {f"validate/suite/{s}" for s in summary["suites"]}
    assert all(isinstance(v, float) for v in metrics.values())
    assert summary["success"] is True and summary["failed_checks"] == []
    assert all(s["success"] for s in summary["suites"].values())
    assert summary["counts"]["decoded"] == summary["counts"]["manifest_rows"] > 0
    failing = pd.read_csv(out / "failing_ids.csv")
    assert list(failing.columns) == ["suite", "check", "expectation", "column", "severity", "id", "detail"]
    assert (failing["severity"] != "error").all()
    index = (out / "data_docs" / "index.html").read_text()
    for suite in summary["suites"]:
        assert suite in index
    assert len(list((out / "data_docs" / "validations").rglob("*.html"))) == len(summary["suites"])
    assert not list(tmp_path.glob(".out.*"))  # no temporary directory left behind


@pytest.mark.slow
def test_stage_fails_with_a_readable_summary_naming_the_defect(case, tmp_path):
    annotations, download, gx_dir = case
    w = _world_helpers()
    gt_path = w.one_file(annotations, "test_gt_images")
    gallery = w.read_json(w.one_file(annotations, "test_gallery"))
    gt = w.read_json(gt_path)
    clip = sorted(gt)[0]
    gt[clip] = [gallery[next(lv for lv in gallery if lv != clip[:36])][0]]
    w.write_json(gt_path, gt)
    before = digest(annotations, download)

    out = tmp_path / "out"
    proc = run_stage(annotations, download, out, gx_dir)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "validation FAILED" in proc.stdout
    assert "test_queries.gt_in_gallery" in proc.stdout and clip in proc.stdout
    assert digest(annotations, download) == before
    summary = json.loads((out / "validation_summary.json").read_text())
    assert summary["success"] is False and summary["failed_checks"] == ["test_queries.gt_in_gallery"]
    failing = pd.read_csv(out / "failing_ids.csv")
    assert failing.loc[failing["severity"] == "error", "id"].tolist() == [clip]


def test_unusable_input_exits_2_without_a_traceback(tmp_path, capsys):
    (tmp_path / "download").mkdir()
    code = main(["--annotations", str(tmp_path / "nope"), "--download", str(tmp_path / "download"),
                 "--out", str(tmp_path / "o"), "--params", str(REPO / "params.yaml")])
    assert code == 2
    err = capsys.readouterr().err
    assert "annotations directory not found" in err and "Traceback" not in err


def test_out_inside_an_input_is_refused(tmp_path, capsys):
    (tmp_path / "download").mkdir()
    code = main(["--annotations", str(tmp_path), "--download", str(tmp_path / "download"),
                 "--out", str(tmp_path / "download" / "validation"), "--params", str(REPO / "params.yaml")])
    assert code == 2
    assert "never writes into its inputs" in capsys.readouterr().err
    assert not (tmp_path / "download" / "validation").exists()


def test_bad_params_exit_2(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("validate:\n  min_decodable_frames: many\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "d").mkdir()
    code = main(["--annotations", str(tmp_path / "a"), "--download", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                 "--params", str(params)])
    assert code == 2
    assert "validate.min_decodable_frames" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.integration
def test_validate_after_the_real_download_stage(tmp_path):
    from lpr_core.config import load_section
    from lpr_core.data.download import DownloadParams, download_all
    from lpr_core.synth import ImageServer, generate_world, set_url_prefix

    world = tmp_path / "world"
    generate_world(world, size="tiny", seed=0)
    annotations = tmp_path / "annotations"
    shutil.copytree(world, annotations, ignore=shutil.ignore_patterns("_source"))
    params = dataclasses.replace(
        load_section(DownloadParams, "download", REPO / "params.yaml"), processes=1, thread_count=8, timeout=5.0
    )
    with ImageServer(world) as server:
        set_url_prefix(annotations, server.url_prefix)
        download_all(annotations, tmp_path / "download", params, progress=False, log=lambda _: None)
    gx_dir = tmp_path / "gx"
    shutil.copytree(REPO / "gx", gx_dir, ignore=shutil.ignore_patterns("uncommitted"))
    before = digest(annotations, tmp_path / "download")
    proc = run_stage(annotations, tmp_path / "download", tmp_path / "out", gx_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert digest(annotations, tmp_path / "download") == before
    summary = json.loads((tmp_path / "out" / "validation_summary.json").read_text())
    assert summary["download_success_rate"] == {"train/frames": 1.0, "train/images": 1.0, "test/frames": 1.0,
                                                 "test/images": 1.0}
