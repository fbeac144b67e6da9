"""DVC as a team uses it, on the real pipeline: a parameter change, the remote, the run cache, experiments.

One project (a copy of the session's reproduced one, ``dvc.lock`` committed as the baseline) goes
through the whole story once, in the module fixture, and each test checks one part of it:

1. ``dvc push``; then ``train_encoder.train.lr`` is edited in ``params.yaml``: ``dvc status``
   names the changed stage and ``dvc repro`` reruns it and the stages below it only;
   ``dvc push --run-cache`` shares that run;
2. a colleague's ``git clone`` gets the committed outputs with ``dvc pull``;
3. in another clone, ``dvc repro --pull`` with the same edit restores the three stages from the
   run cache on the remote instead of training;
4. back on the baseline, ``dvc exp run -S train_encoder.train.lr=...`` records an experiment
   (restored from the run cache too: the same params ran in step 1), ``dvc exp show`` lists it and
   ``dvc metrics diff`` / ``dvc exp diff`` give its rank-k metrics against ``HEAD``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.pipeline.project import STAGES, Outcome, TinyProject, fresh_copy, session

pytestmark = pytest.mark.slow

PARAM = "train_encoder.train.lr"
#: the repository's learning rate and the edited one (always a real change, whatever the default)
OLD_LR = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())["train_encoder"]["train"]["lr"]
NEW_LR = round(OLD_LR * 3, 10)
RERUN = ["train_encoder", "index_gallery", "evaluate"]
RANK_K = [f"test/rank{k}" for k in (1, 3, 5, 10)]
EXPERIMENT = "lr-x3"


@dataclass
class Story:
    """What happened to the origin project, step by step."""

    origin: TinyProject
    url_prefix: str
    baseline_lock: dict
    baseline_metrics: dict
    status: Outcome
    mtimes_before: dict
    mtimes_after: dict
    retrain: Outcome
    retrained_lock: dict
    exp_run: Outcome


@pytest.fixture(scope="module")
def story(tmp_path_factory, request) -> Story:
    origin = fresh_copy(tmp_path_factory, request, "team-origin", reproduced_state=True)
    origin.git("add", "dvc.lock")
    origin.git("commit", "-q", "-m", "baseline: the tiny pipeline's lock")
    baseline_lock = origin.lock()
    baseline_metrics = json.loads((origin.root / "data/metrics/evaluate.json").read_text())
    origin.dvc("push")
    before = origin.output_mtimes()
    origin.set_param(PARAM, NEW_LR)
    status = origin.dvc("status")
    retrain = origin.dvc("repro")
    after = origin.output_mtimes()
    retrained_lock = origin.lock()
    origin.dvc("push", "--run-cache")
    # back to the committed baseline, then the same change as an experiment
    origin.git("checkout", "--", "params.yaml", "dvc.lock")
    origin.dvc("checkout")
    exp_run = origin.dvc("exp", "run", "-S", f"{PARAM}={NEW_LR}", "-n", EXPERIMENT)
    return Story(origin, session(tmp_path_factory, request).server.url_prefix, baseline_lock, baseline_metrics,
                 status, before, after, retrain, retrained_lock, exp_run)


def _outs(lock: dict, stage: str) -> dict[str, str]:
    return {o["path"]: o["md5"] for o in lock[stage]["outs"]}


def test_a_param_change_reruns_only_its_stage_and_the_stages_below(story):
    print(f"\nrepro after the {PARAM} change: {story.retrain.seconds:.1f} s")
    # dvc status names the stage whose params changed (the stages below change once it reruns)
    assert "train_encoder:" in story.status.output and "modified:" in story.status.output
    for other in STAGES:
        if other != "train_encoder":
            assert f"\n{other}:" not in f"\n{story.status.output}", story.status.output
    assert story.retrain.ran == RERUN
    assert story.retrain.skipped == [s for s in STAGES if s not in RERUN]
    for stage in STAGES:
        if stage in RERUN:
            assert story.mtimes_after[stage] > story.mtimes_before[stage], stage
            assert _outs(story.retrained_lock, stage) != _outs(story.baseline_lock, stage), stage
        else:
            assert story.mtimes_after[stage] == story.mtimes_before[stage], stage
            assert story.retrained_lock[stage] == story.baseline_lock[stage], stage
    # dvc.yaml lists the result-bearing keys one by one: dvc.lock records them by their dotted names
    lr = story.retrained_lock["train_encoder"]["params"]["params.yaml"][PARAM]
    assert lr == NEW_LR


def test_the_retrain_logs_one_mlflow_run_per_rerun_stage(story):
    # the copy's MLflow store is its own: it holds the retrain only (the experiment came from the run cache)
    runs = story.origin.stage_runs()
    assert [r.data.tags["lpr.stage"] for r in runs] == RERUN
    assert len({r.data.tags["lpr.pipeline_run_id"] for r in runs}) == 1
    encoder = runs[0]
    assert float(encoder.data.params["train_encoder.train.lr"]) == NEW_LR


def test_a_clone_pulls_the_committed_outputs_from_the_remote(story, tmp_path):
    clone = story.origin.clone(tmp_path / "colleague", story.url_prefix)
    assert not (clone.root / "data/evaluate").exists()
    pull = clone.dvc("pull")
    print(f"\ndvc pull in a fresh clone: {pull.seconds:.1f} s")
    assert json.loads((clone.root / "data/metrics/evaluate.json").read_text()) == story.baseline_metrics
    assert (clone.root / "data/models/encoder/encoder.pt").is_file()
    status = clone.dvc("status")
    assert "Data and pipelines are up to date" in status.output, status.output


def test_the_run_cache_on_the_remote_replaces_training_in_a_clone(story, tmp_path):
    clone = story.origin.clone(tmp_path / "colleague", story.url_prefix)
    clone.dvc("pull")
    clone.dvc("pull", "--run-cache")
    clone.set_param(PARAM, NEW_LR)
    # --pull: the run-cache entries alone are not enough, their outputs come from the remote too
    repro = clone.dvc("repro", "--pull")
    print(f"\nrepro from the run cache in a clone: {repro.seconds:.1f} s "
          f"(training there took {story.retrain.seconds:.1f} s)")
    assert repro.ran == []
    assert repro.restored == RERUN
    for stage in RERUN:
        assert _outs(clone.lock(), stage) == _outs(story.retrained_lock, stage), stage
    assert clone.stage_runs() == []  # nothing trained or evaluated in the clone
    assert repro.seconds < story.retrain.seconds


def test_exp_run_records_an_experiment_that_exp_show_lists(story):
    print(f"\ndvc exp run: {story.exp_run.seconds:.1f} s")
    assert story.exp_run.ran == []  # the same params already ran: restored from the run cache
    assert story.exp_run.restored == RERUN
    shown = json.loads(story.origin.dvc("exp", "show", "--json").output)
    baseline = next(row for row in shown if row.get("name") == "main")
    (exp,) = [rev for e in baseline["experiments"] or [] for rev in e["revs"] if rev.get("name") == EXPERIMENT]
    params = exp["data"]["params"]["params.yaml"]["data"]
    assert params["train_encoder"]["train"]["lr"] == NEW_LR
    metrics = exp["data"]["metrics"]["data/metrics/evaluate.json"]["data"]
    assert set(RANK_K) <= set(metrics)
    retrained = json.loads(Path(story.origin.root / "data/metrics/evaluate.json").read_text())
    assert {k: metrics[k] for k in RANK_K} == {k: retrained[k] for k in RANK_K}


def test_metrics_diff_and_exp_diff_show_the_rank_k_metrics_against_head(story):
    diff = json.loads(story.origin.dvc("metrics", "diff", "--all", "--json").output)["data/metrics/evaluate.json"]
    exp_diff = json.loads(story.origin.dvc("exp", "diff", "HEAD", EXPERIMENT, "--all", "--json").output)
    for key in RANK_K:
        assert diff[key]["old"] == story.baseline_metrics[key], key
        assert isinstance(diff[key]["new"], float), key
        assert exp_diff["metrics"]["data/metrics/evaluate.json"][key]["new"] == diff[key]["new"], key
    lr = exp_diff["params"]["params.yaml"][PARAM]
    assert (lr["old"], lr["new"]) == (OLD_LR, NEW_LR)
