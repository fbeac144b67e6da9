"""The shared stage runner: params section, MLflow run, one-line errors and exit statuses, logging
on stderr, the result on stdout, metrics files, rank 0 of a ``torchrun`` job.

A toy stage runs in-process against the session's temporary MLflow store (``tests/conftest.py``),
each test in an experiment of its own.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lpr_core.inputs import StageInputError
from lpr_core.runner import EXIT_BAD_INPUT, parse_args, publish_metrics, run_stage

STAGE = "toy_stage"


@dataclass(frozen=True)
class ToyParams:
    size: int = 1
    label: str = "a"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, required=True)


def toy_args(tmp_path: Path, section: str = "size: 3\n  label: b") -> object:
    params = tmp_path / "params.yaml"
    params.write_text(f"{STAGE}:\n  {section}\n", encoding="utf-8")
    return parse_args(STAGE, __doc__, add_arguments, ["--out", str(tmp_path / "out"), "--params", str(params)])


@pytest.fixture
def experiment(request, monkeypatch) -> str:
    name = f"runner-{request.node.name}-{time.time_ns()}"
    monkeypatch.setenv("LPR_MLFLOW_EXPERIMENT", name)
    return name


def runs(experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_parse_args_adds_the_params_file_to_the_stage_options(tmp_path):
    args = parse_args(STAGE, "First line.\n\nMore.", add_arguments, ["--out", "x"])
    assert args.out == Path("x") and args.params == Path("params.yaml")
    with pytest.raises(SystemExit):
        parse_args(STAGE, None, add_arguments, [])  # --out is required


def test_a_successful_stage_logs_one_finished_run_reports_on_stdout_and_logs_on_stderr(
    tmp_path, experiment, capsys
):
    seen = {}

    def body(ctx):
        seen["params"], seen["tracker"] = ctx.params, ctx.tracker
        ctx.log.info("working on %s", ctx.args.out.name)
        logging.getLogger("lpr_core.some.library").warning("a library speaks")
        ctx.report("toy_stage: done", "  size 3")
        ctx.publish_metrics(ctx.args.out / "metrics.json", {"toy/a": 0.5, "toy/b": float("nan"), "toy/n": 4})
        early = capsys.readouterr()
        seen["err"] = early.err
        assert early.out == ""  # the report waits for the body to succeed

    assert run_stage(STAGE, toy_args(tmp_path), body, params=ToyParams) == 0
    captured = capsys.readouterr()
    assert captured.out == "toy_stage: done\n  size 3\n"
    ours = [line for line in (seen["err"] + captured.err).splitlines() if not line[:4].isdigit()]  # not MLflow's own
    assert ours == [
        "toy_stage: working on out",
        "toy_stage: warning: a library speaks",
    ]
    assert seen["params"] == ToyParams(size=3, label="b")
    (run,) = runs(experiment)
    assert run.info.run_id == seen["tracker"].run_id and run.info.status == "FINISHED"
    assert run.data.params == {"toy_stage.size": "3", "toy_stage.label": "b"}
    assert run.data.tags["lpr.stage"] == STAGE and run.data.tags["lpr.pipeline_run_id"]
    assert run.data.metrics == {"toy/a": 0.5, "toy/n": 4.0}  # NaN is not logged
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics == {"toy/a": 0.5, "toy/b": None, "toy/n": 4}
    # logging is left as it was found: nothing of the stage stays attached
    assert logging.getLogger("lpr_core").handlers == [] and logging.getLogger("lpr_core").level == logging.NOTSET


def test_a_bad_params_section_is_one_line_and_exit_1_before_any_run(tmp_path, experiment, capsys):
    calls = []
    status = run_stage(STAGE, toy_args(tmp_path, "sise: 3"), calls.append, params=ToyParams)
    assert status == EXIT_BAD_INPUT == 1 and calls == []
    err = capsys.readouterr().err
    assert err.startswith("toy_stage: error: ") and "'sise'" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert runs(experiment) == []
    assert run_stage(STAGE, toy_args(tmp_path, "size: 0"), calls.append, params=ToyParams) == 1
    assert "size must be >= 1" in capsys.readouterr().err


def test_bad_input_in_the_body_fails_the_run_with_the_stage_status(tmp_path, experiment, capsys):
    def body(ctx):
        raise StageInputError("prepared/x.parquet: missing (run the prepare stage)")

    assert run_stage(STAGE, toy_args(tmp_path), body, params=ToyParams, error_status=2) == 2
    assert capsys.readouterr().err == "toy_stage: error: prepared/x.parquet: missing (run the prepare stage)\n"
    (run,) = runs(experiment)
    assert run.info.status == "FAILED"

    def lookup(ctx):
        raise KeyError("not a declared error")

    with pytest.raises(KeyError):  # anything else is a bug: it propagates with its traceback
        run_stage(STAGE, toy_args(tmp_path), lookup, params=ToyParams, errors=(FileNotFoundError,))
    assert sorted(r.info.status for r in runs(experiment)) == ["FAILED", "FAILED"]

    def missing(ctx):
        raise FileNotFoundError("nowhere.txt")

    assert run_stage(STAGE, toy_args(tmp_path), missing, params=ToyParams, errors=(FileNotFoundError,)) == 1
    assert "toy_stage: error: nowhere.txt" in capsys.readouterr().err


def test_check_and_load_run_before_the_params_and_the_body(tmp_path, experiment, capsys):
    def check(args):
        raise StageInputError(f"--out {args.out} overlaps an input")

    assert run_stage(STAGE, toy_args(tmp_path), lambda ctx: 0, params=ToyParams, check=check) == 1
    assert "overlaps an input" in capsys.readouterr().err
    loaded = []
    status = run_stage(STAGE, toy_args(tmp_path), lambda ctx: 7, load=lambda path: loaded.append(path) or ToyParams())
    assert status == 7 and loaded == [tmp_path / "params.yaml"]
    with pytest.raises(TypeError):
        run_stage(STAGE, toy_args(tmp_path), lambda ctx: 0)


def test_ranks_other_than_0_run_without_mlflow_and_stay_quiet(tmp_path, experiment, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    seen = []

    def body(ctx):
        seen.append(ctx.tracker)
        ctx.log.info("only rank 0 says this")
        ctx.log.warning("every rank warns")
        ctx.set_tags({"x": 1})
        ctx.log_artifacts(tmp_path)
        ctx.publish_metrics(None, {"toy/a": 1.0})

    assert run_stage(STAGE, toy_args(tmp_path), body, params=ToyParams) == 0
    assert seen == [None] and runs(experiment) == []
    assert capsys.readouterr().err == "toy_stage: warning: every rank warns\n"


def test_publish_metrics_is_atomic_sorted_and_writes_nan_as_null(tmp_path):
    path = tmp_path / "m" / "metrics.json"
    publish_metrics(path, {"b": 1, "a": {"x": math.inf, "y": [1.5, math.nan]}})
    assert path.read_text() == '{\n "a": {\n  "x": null,\n  "y": [\n   1.5,\n   null\n  ]\n },\n "b": 1\n}\n'
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
