"""The README's "Using the real LPR4M" road, step by step, on a world in the release's format.

The world is the ``release`` family of ``lpr synth`` (tiny): portrait and landscape frames of
their own sizes, shop photos of 600-1000 px, ``training_videoinfo`` in JSON list syntax, annotator
boxes in absolute pixels with a few percent past the frame edge, files in ``train/`` and
``test/annotations/``, no per-query slice labels: what ``lpr synth``'s default does not produce.
It sits in ``data/lpr4m`` of a fresh project (the pipeline of this repository, shrunk to seconds per
stage by :data:`tests.pipeline.project.TINY_OVERRIDES`), its images served on loopback.

The road, as documented: ``lpr inspect data/lpr4m``; ``lpr params apply --preset lpr4m`` (and,
only because the images are served on loopback here, ``download.allow_private_networks=true``); a
DVC remote; the MLflow tracking URI; ``dvc repro``; ``lpr promote``; then a later candidate (the
encoder retrained with another seed, ``dvc repro``) and ``lpr promote`` again, judged on its score:
the release has no slice labels, so the default critical slice is recorded as not applicable,
never a permanent refusal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.pipeline.project import COPIED, REPO, STAGES, TinyProject, tiny_params, without_lock_rule

pytestmark = pytest.mark.slow

PRESET = REPO / "presets" / "lpr4m.yaml"
#: The one departure from the documented road: the test's image server is on loopback.
LOOPBACK = "download.allow_private_networks=true"
#: What makes the second candidate another model: the encoder retrained with another seed.
RETRAIN = "train_encoder.train.seed=1"


def param(project: TinyProject, dotted: str) -> Any:
    node = yaml.safe_load((project.root / "params.yaml").read_text(encoding="utf-8"))
    for key in dotted.split("."):
        node = node[key]
    return node


@pytest.fixture(scope="module")
def road(tmp_path_factory, request):
    """The project after each step of the road; the outcomes of the steps by name."""
    from lpr_core.synth import ImageServer
    from lpr_core.synth.world import generate_world, set_url_prefix

    base = tmp_path_factory.mktemp("real-data-road")
    root = base / "project"
    root.mkdir()
    for name in COPIED + ("presets",):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "uncommitted"))
        else:
            shutil.copy2(src, root / name)
    (root / ".gitignore").write_text(without_lock_rule((root / ".gitignore").read_text()))
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False), encoding="utf-8")
    world = generate_world(root / "data" / "lpr4m", size="tiny", seed=0, family="release")
    server = ImageServer(world.out_dir, host="127.0.0.1", port=0).start()
    request.addfinalizer(server.stop)
    set_url_prefix(world.out_dir, server.url_prefix)
    project = TinyProject(root)
    project.git("init", "-q", "-b", "main")
    project.dvc("init", "-q")
    project.dvc("config", "core.analytics", "false")

    steps: dict[str, Any] = {"world": world}
    # 1. inspect the release as unpacked
    steps["inspect"] = project.lpr("inspect", "data/lpr4m", "--strict")
    # 2. the preset (the test's only departure: its image server is on loopback)
    steps["preset"] = yaml.safe_load(PRESET.read_text(encoding="utf-8"))
    steps["apply"] = project.lpr("params", "apply", "--preset", "lpr4m", "--set", LOOPBACK).check()
    # 3. a DVC remote (a folder here; s3://... in the README)
    remote = base / "storage"
    project.dvc("remote", "add", "-d", "storage", str(remote))
    steps["remote"] = remote
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "the pipeline on the LPR4M release")
    # 4. tracking: TinyProject.env() exports MLFLOW_TRACKING_URI (the project's own store)
    # 5. the pipeline
    steps["repro"] = project.dvc("repro", check=False)
    if steps["repro"].returncode == 0:
        steps["push"] = project.dvc("push", check=False)
        # 6. promote; then a later candidate, promoted in its turn
        steps["promote"] = [project.lpr("promote", "--candidate-from", "data/evaluate")]
        project.lpr("params", "apply", "--set", RETRAIN).check()
        steps["second_repro"] = project.dvc("repro", check=False)
        steps["promote"].append(project.lpr("promote", "--candidate-from", "data/evaluate"))
    return project, steps


def test_inspect_finds_the_release_in_its_sub_folders(road):
    _, steps = road
    out = steps["inspect"].check().output
    counts = steps["world"].counts
    assert "data/lpr4m: 10 LPR4M file(s)" in out
    assert f"train/training_videoinfo_{counts['train_clips']}.txt  [videoinfo]  rows={counts['train_clips']}" in out
    assert f"test/annotations/test_liveid_to_gallery_{counts['test_livestreams']}.json  [test_gallery]" in out
    assert "total: 0 row(s) rejected, 0 file(s) unreadable" in out


def test_the_preset_switches_params_to_the_release(road):
    project, steps = road
    params_yaml = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for dotted, value in steps["preset"].items():
        if dotted != LOOPBACK.split("=")[0]:
            assert param(project, dotted) == value, dotted
    assert param(project, LOOPBACK.split("=")[0]) is True
    assert param(project, "prepare.query_attributes") is None
    assert param(project, "download.image_size") == param(project, "validate.image_size") == 224
    # the preset changes what the demo's defaults would get wrong on the release
    assert params_yaml["prepare"]["query_attributes"] is not None
    assert params_yaml["validate"]["decode_sample"] == "all"


def test_dvc_repro_runs_every_stage_on_the_release(road):
    project, steps = road
    first = steps["repro"].check()
    print(f"\ndvc repro of the tiny release world: {first.seconds:.1f} s")
    assert first.ran == list(STAGES)
    root = project.root
    summary = json.loads((root / "data/validate/validation_summary.json").read_text())
    assert summary["success"] is True, summary["failed_checks"]
    manifests = root / "data/download/manifests"
    assert any(p.endswith(".tar") for p in _manifest_paths(manifests / "test_frames.parquet"))  # webdataset
    evaluate = json.loads((root / "data/metrics/evaluate.json").read_text())
    assert 0.0 <= evaluate["test/rank1"] <= 1.0
    assert not any(k.startswith("test/scale_type") for k in evaluate)  # no slice labels in the release
    assert steps["push"].check() and any(steps["remote"].rglob("*"))  # outputs on the remote


def test_boxes_past_the_edge_are_clipped_and_reported_per_split(road):
    project, steps = road
    steps["repro"].check()
    root = project.root
    summary = json.loads((root / "data/validate/validation_summary.json").read_text())
    prepared = json.loads((root / "data/prepared/prepare_summary.json").read_text())["counts"]
    metrics = json.loads((root / "data/metrics/validate.json").read_text())
    limit = param(project, "validate.max_clipped_box_fraction")
    for split in ("train", "test"):
        boxes = summary["boxes"][split]
        assert 0 < boxes["past_edge"] and boxes["past_edge_fraction"] <= limit, (split, boxes)
        assert boxes["no_area_left"] == boxes["mostly_outside"] == 0
        # validate and prepare count the same boxes
        assert prepared[f"{split}/boxes"] == boxes["boxes"]
        assert prepared[f"{split}/boxes_past_edge"] == boxes["past_edge"]
        assert prepared[f"{split}/boxes_unchecked"] == boxes["boxes"] - boxes["checked"]
        assert metrics[f"validate/boxes/{split}/past_edge"] == boxes["past_edge"]
    pages = [p.read_text(errors="replace") for p in (root / "data/validate/data_docs").rglob("*.html")]
    assert any("past_edge_fraction" in page for page in pages)  # the per-split shares in Data Docs


def test_two_promotions_the_second_judged_on_its_score(road):
    project, steps = road
    steps["repro"].check()
    first = steps["promote"][0].check().output
    assert "v1: PROMOTED to champion" in first, first
    assert steps["second_repro"].check().ran == ["train_encoder", "index_gallery", "evaluate"]
    second = steps["promote"][1].check().output
    tags = _version_tags(project, "2")
    # the release cannot score the default critical slice: not applicable, never a permanent refusal
    slice_name = param(project, "promote.critical_slices")[0]["metric"]
    assert tags[f"gate.slice.{slice_name}"] == "not_applicable", second
    assert "lacks critical slice" not in tags["gate.reason"], second
    assert param(project, "promote.metric") in tags["gate.reason"], second
    delta = float(tags["gate.delta"])
    judged = delta >= param(project, "promote.min_delta") and (delta > 0 or param(project, "promote.promote_ties"))
    assert (tags["gate.decision"] == "promoted") == judged, second


def _manifest_paths(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [p for p in pq.read_table(path, columns=["path"]).column("path").to_pylist() if p]


def _version_tags(project: TinyProject, version: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=project.tracking_uri)
    return dict(client.get_model_version(param(project, "promote.model_name"), version).tags)
