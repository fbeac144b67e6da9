"""The training engine: exact resume, plots and logger, settings checks."""

from __future__ import annotations

import csv

import pytest
import torch

from lpr_core.training.checkpoint import load_checkpoint, seed_everything
from lpr_core.training.engine import amp_dtype, checkpoint_path, fit, param_groups
from lpr_core.training.tasks import build_encoder_task


class Crash(RuntimeError):
    pass


def _task(params, readers, seed=0):
    seed_everything(seed)
    return build_encoder_task(params, *readers)


def _crash_after(k):
    def hook(step):
        if step == k:
            raise Crash(f"killed after step {k}")

    return hook


def test_resume_after_crash_gives_identical_weights(tmp_path, encoder_params, world_readers):
    # 12 clips, batch 4: 3 batches per epoch, so 4 steps x 2 micro-batches cross 3 epochs
    params = encoder_params(grad_accum_steps=2, max_steps=4, checkpoint_every=2)
    seen = []
    fit(_task(params, world_readers), params.train, tmp_path / "full", logger=lambda m, s: seen.append((s, m)))
    reference = {k: v.clone() for k, v in load_checkpoint(checkpoint_path(tmp_path / "full"))["model"].items()}

    run = tmp_path / "crashed"
    with pytest.raises(Crash):
        # the update of step 3 is lost: the last checkpoint is at step 2
        fit(_task(params, world_readers), params.train, run, on_step_end=_crash_after(3))
    assert load_checkpoint(checkpoint_path(run))["step"] == 2
    resumed = fit(_task(params, world_readers, seed=2), params.train, run)
    assert resumed.resumed_from == 2 and resumed.step == 4
    final = load_checkpoint(checkpoint_path(run))["model"]
    assert set(final) == set(reference)
    for name, value in reference.items():
        assert torch.equal(final[name], value), name
    # training moved the weights
    init = _task(params, world_readers).model.state_dict()
    assert not torch.equal(init["proj.weight"], reference["proj.weight"])

    # the logger saw every step once; the plots of the resumed run hold steps 1..4 exactly once
    assert [s for s, _ in seen] == list(range(1, 5))
    assert {"train/loss", "train/icl_loss", "train/pmd_loss", "train/pfr_loss", "train/lr"} <= set(seen[0][1])
    with open(run / "plots" / "train_loss.tsv") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["step", "train/loss"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 5))
    full_rows = list(csv.reader(open(tmp_path / "full" / "plots" / "train_loss.tsv"), delimiter="\t"))
    assert rows == full_rows  # same losses, step for step


def test_resume_with_other_batch_size_is_refused(tmp_path, encoder_params, world_readers):
    params = encoder_params(max_steps=1, checkpoint_every=1)
    fit(_task(params, world_readers), params.train, tmp_path)
    other = encoder_params(max_steps=2, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        fit(_task(other, world_readers), other.train, tmp_path)


def test_finished_run_is_not_trained_again(tmp_path, encoder_params, world_readers):
    params = encoder_params(max_steps=1, checkpoint_every=1)
    fit(_task(params, world_readers), params.train, tmp_path)
    before = checkpoint_path(tmp_path).stat().st_mtime_ns
    result = fit(_task(params, world_readers), params.train, tmp_path)
    assert result.step == 1 and result.resumed_from == 1
    assert checkpoint_path(tmp_path).stat().st_mtime_ns == before


def test_dataset_smaller_than_a_batch_is_a_clear_error(tmp_path, encoder_params, world_readers):
    params = encoder_params(batch_size=64)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        fit(_task(params, world_readers), params.train, tmp_path)


def test_amp_settings():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert amp_dtype("auto", cpu) is None
    assert amp_dtype("auto", cuda) is torch.bfloat16
    assert amp_dtype("bf16", cpu) is torch.bfloat16
    assert amp_dtype("off", cuda) is None
    assert amp_dtype("fp16", cuda) is torch.float16
    with pytest.raises(ValueError, match="fp16"):
        amp_dtype("fp16", cpu)


def test_param_groups_exclude_norms_biases_and_scale(encoder_params, world_readers):
    model = _task(encoder_params(), world_readers).model
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert "logit_scale.log_scale" in {names[id(p)] for p in no_decay["params"]}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert "proj.weight" in {names[id(p)] for p in decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_compiled_run_resumes(tmp_path, encoder_params, world_readers):
    import dataclasses

    params = encoder_params(device="cuda", amp="bf16", compile=True, max_steps=2, checkpoint_every=1, num_workers=1)
    result = fit(_task(params, world_readers), params.train, tmp_path)
    assert result.step == 2 and result.metrics["train/loss"] == result.metrics["train/loss"]
    longer = dataclasses.replace(params.train, max_steps=3)
    assert fit(_task(params, world_readers), longer, tmp_path).resumed_from == 2
