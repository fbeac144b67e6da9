"""The ``train_encoder`` stage end to end on the tiny synthetic world: outputs, MLflow run, resume.

The repository's ``train_encoder`` section is shrunk (tiny backbone, 32 px, a few steps) through a
temporary params file; the world's download is built directly with Pillow
(:func:`tests.validation.world.build_tiny`) and prepared with :func:`lpr_core.data.prepare.prepare`.
A crash is injected in-process after a checkpoint (the rerun must resume from it); the slow tests
SIGKILL a real stage process and run the stage under ``torchrun`` with 2 CPU processes (gloo).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lpr_core.training import engine
from lpr_core.training.resume import STAMP_FILE, decide_resume, params_sha256

REPO = Path(__file__).resolve().parents[2]
_BUILT: dict[str, Path] = {}


def tiny_prepared(tmp_path_factory) -> Path:
    """The tiny world, its download and prepared tables, built once per session (shared by the
    training stage tests): ``<root>/{world,download,prepared}``."""
    if "root" not in _BUILT:
        from lpr_core.config import load_section
        from lpr_core.data.prepare import PrepareParams, prepare
        from lpr_core.formats.parquet import write_table
        from tests.validation.world import build_tiny

        root = tmp_path_factory.mktemp("train_world")
        real = yaml.safe_load((REPO / "params.yaml").read_text())
        build_tiny(root, real["download"]["image_size"])
        result = prepare(root / "world", root / "download", load_section(PrepareParams, "prepare", REPO / "params.yaml"))
        (root / "prepared").mkdir()
        for name, table in result.tables.items():
            write_table(table, root / "prepared" / f"{name}.parquet")
        _BUILT["root"] = root
    return _BUILT["root"]


def shrunk_params(path: Path, stage: str, model: dict, train: dict, data: dict | None = None) -> Path:
    """The repository's params.yaml with ``stage``'s section shrunk by the given overrides."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    section = params[stage]
    section["model"].update(model)
    section["data"].update(data or {})
    section["train"].update({"num_workers": 0, "progress": False, "device": "cpu", "log_every": 1, **train})
    path.write_text(yaml.safe_dump(params))
    return path


def stage_argv(root: Path, out: Path, params: Path, *extra: str) -> list[str]:
    """The stage's command line (the same flags as in dvc.yaml) on the tiny world."""
    return [
        "--prepared", str(root / "prepared"), "--download", str(root / "download"), "--out", str(out / "model"),
        "--plots", str(out / "plots"), "--metrics", str(out / "metrics.json"), "--params", str(params), *extra,
    ]


def mlflow_runs(experiment: str, stage: str) -> list:
    """The runs of ``stage`` in ``experiment`` of the session's tracking store, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`lpr.stage` = '{stage}'")
    return sorted(runs, key=lambda r: r.info.start_time)


def metric_steps(run_id: str, name: str) -> list[int]:
    """Steps at which ``name`` was logged in a run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    return sorted(m.step for m in client.get_metric_history(run_id, name))


def tsv_steps(path: Path) -> list[int]:
    """The step column of a DVC plots TSV."""
    rows = path.read_text().splitlines()
    return [int(line.split("\t")[0]) for line in rows[1:]]


ENCODER_MODEL = {"backbone": "resnet10", "backbone_width": 16, "image_size": 32, "num_frames": 2,
                 "embed_dim": 32, "decoder_dim": 32}


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    return tiny_prepared(tmp_path_factory)


@pytest.fixture
def experiment(request, monkeypatch) -> str:
    """A fresh MLflow experiment (in the session's temporary store) for this test's runs."""
    name = f"test-{request.node.name}-{time.time_ns()}"
    monkeypatch.setenv("LPR_MLFLOW_EXPERIMENT", name)
    return name


def encoder_params(tmp_path: Path, **train) -> Path:
    train = {"max_steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, **train}
    return shrunk_params(tmp_path / "params.yaml", "train_encoder", ENCODER_MODEL, train)


def test_stage_trains_writes_outputs_and_logs_one_mlflow_run(world, tmp_path, experiment):
    from lpr_core.models.encoder import load_encoder
    from lpr_core.stages.train_encoder import main

    params = encoder_params(tmp_path)
    out = tmp_path / "run"
    assert main(stage_argv(world, out, params)) == 0

    model = load_encoder(out / "model" / "encoder.pt")
    assert model.config.image_size == 32 and model.config.num_frames == 2
    with torch.no_grad():
        emb = model.encode_images(torch.rand(2, 3, 32, 32))
    assert emb.shape == (2, 32) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    extra = torch.load(out / "model" / "encoder.pt", weights_only=True)["extra"]
    assert extra["data"]["crop_boxes"] is True and extra["step"] == 4

    summary = json.loads((out / "model" / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["resumed_from"] is None and summary["world_size"] == 1
    assert summary["val"]["metrics"]["num_queries"] > 0  # the tiny world holds one val livestream
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("encoder/val_rank1", "encoder/val_rank5", "encoder/train_loss", "encoder/train_icl_loss",
                "encoder/train_pmd_loss", "encoder/train_pfr_loss", "encoder/steps"):
        assert key in metrics, key
    assert 0.0 <= metrics["encoder/val_rank1"] <= metrics["encoder/val_rank5"] <= 1.0
    assert tsv_steps(out / "plots" / "train_loss.tsv") == [1, 2, 3, 4]
    assert tsv_steps(out / "plots" / "train_lr.tsv") == [1, 2, 3, 4]

    (run,) = mlflow_runs(experiment, "train_encoder")
    assert run.info.status == "FINISHED"
    assert run.data.params["train_encoder.train.max_steps"] == "4"
    assert run.data.params["train_encoder.model.backbone"] == "resnet10"
    assert metric_steps(run.info.run_id, "train/loss") == [1, 2, 3, 4]
    assert run.data.metrics["encoder/val_rank1"] == pytest.approx(metrics["encoder/val_rank1"])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"train_summary.json", "metrics.json", "plots"} <= artifacts
    assert "plots/train_loss.tsv" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}


def test_crash_after_a_checkpoint_resumes_and_changed_params_start_fresh(world, tmp_path, experiment, monkeypatch, capsys):
    from lpr_core.stages.train_encoder import main

    params = encoder_params(tmp_path, max_steps=5)
    out = tmp_path / "run"
    real_fit = engine.fit

    def crashing_fit(*args, **kwargs):
        def crash(step: int) -> None:
            if step == 3:  # after the checkpoint of step 2
                raise RuntimeError("simulated crash at step 3")

        return real_fit(*args, on_step_end=crash, **kwargs)

    monkeypatch.setattr(engine, "fit", crashing_fit)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(stage_argv(world, out, params))
    monkeypatch.setattr(engine, "fit", real_fit)
    assert not (out / "model" / "encoder.pt").exists()  # no model from a failed run
    assert torch.load(out / "model" / "checkpoints" / "last.pt", weights_only=True)["step"] == 2

    assert main(stage_argv(world, out, params)) == 0
    summary = json.loads((out / "model" / "train_summary.json").read_text())
    assert summary["resumed_from"] == 2 and summary["steps"] == 5
    assert "resuming" in summary["resume_note"]
    assert tsv_steps(out / "plots" / "train_loss.tsv") == [1, 2, 3, 4, 5]  # the lost step 3 once
    failed, resumed = mlflow_runs(experiment, "train_encoder")
    assert failed.info.status == "FAILED" and resumed.info.status == "FINISHED"
    assert resumed.data.tags["lpr.resumed_from"] == "2"
    assert metric_steps(resumed.info.run_id, "train/loss") == [3, 4, 5]

    # another learning rate: the checkpoint is not reused
    changed = encoder_params(tmp_path, max_steps=5, lr=7.7e-4)  # not the default
    capsys.readouterr()
    assert main(stage_argv(world, out, changed)) == 0
    summary = json.loads((out / "model" / "train_summary.json").read_text())
    assert summary["resumed_from"] is None and summary["steps"] == 5
    assert "params changed" in summary["resume_note"] and "train.lr" in summary["resume_note"]
    assert "params changed" in capsys.readouterr().out
    assert tsv_steps(out / "plots" / "train_loss.tsv") == [1, 2, 3, 4, 5]


def test_resume_decision_rules(tmp_path):
    section = {"model": {"image_size": 32}, "train": {"lr": 0.001}}
    ckpt_dir = tmp_path / "checkpoints"
    assert not decide_resume(tmp_path, section, 1).resume  # nothing to resume
    ckpt_dir.mkdir()
    (ckpt_dir / "last.pt").write_bytes(b"x")
    assert "no readable params stamp" in decide_resume(tmp_path, section, 1).note
    stamp = {"params_sha256": params_sha256(section), "world_size": 1, "params": section}
    (ckpt_dir / STAMP_FILE).write_text(json.dumps(stamp))
    assert decide_resume(tmp_path, section, 1).resume
    assert not decide_resume(tmp_path, section, 1, "never").resume
    two = decide_resume(tmp_path, section, 2)
    assert not two.resume and "made with 1 ranks" in two.note
    other = {"model": {"image_size": 64}, "train": {"lr": 0.001}}
    note = decide_resume(tmp_path, other, 1).note
    assert "model.image_size: 32 -> 64" in note
    with pytest.raises(ValueError, match="resume mode"):
        decide_resume(tmp_path, section, 1, "sometimes")


def test_bad_params_and_missing_inputs_fail_with_a_clear_message(world, tmp_path, capsys):
    from lpr_core.stages.train_encoder import main

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train_encoder"]["model"]["bakbone"] = "resnet18"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    assert main(stage_argv(world, tmp_path / "run", bad)) == 1
    assert "bakbone" in capsys.readouterr().err
    good = encoder_params(tmp_path)
    argv = stage_argv(world, tmp_path / "run", good)
    argv[argv.index("--prepared") + 1] = str(tmp_path / "nowhere")
    assert main(argv) == 1
    assert "train_clips.parquet" in capsys.readouterr().err


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_sigkilled_stage_process_resumes_from_its_checkpoint(world, tmp_path, experiment):
    params = encoder_params(tmp_path, max_steps=40, checkpoint_every=3)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lpr_core.stages.train_encoder", *stage_argv(world, out, params)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "model" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    saved = torch.load(ckpt, weights_only=True)["step"]
    assert 3 <= saved < 40
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "model" / "train_summary.json").read_text())
    assert summary["resumed_from"] >= saved and summary["steps"] == 40
    assert tsv_steps(out / "plots" / "train_loss.tsv") == list(range(1, 41))


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes(world, tmp_path, experiment):
    from lpr_core.models.encoder import load_encoder

    params = encoder_params(tmp_path, max_steps=3, checkpoint_every=3)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "lpr_core.stages.train_encoder", *stage_argv(world, out, params)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "model" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert summary["dataset"]["train_pairs"] > 0
    load_encoder(out / "model" / "encoder.pt")
    assert tsv_steps(out / "plots" / "train_loss.tsv") == [1, 2, 3]
    (run,) = mlflow_runs(experiment, "train_encoder")  # rank 0 only
    assert run.info.status == "FINISHED" and run.data.tags["lpr.world_size"] == "2"
    # a rerun with the same params resumes the 2-rank checkpoint; with one rank it starts fresh
    from lpr_core.training.resume import decide_resume as decide

    section = json.loads((out / "model" / "checkpoints" / STAMP_FILE).read_text())["params"]
    assert decide(out / "model", section, 2).resume and not decide(out / "model", section, 1).resume
