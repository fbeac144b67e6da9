"""Params overrides and presets (`lpr params apply`): checked first, written with the smallest diff."""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lpr_core import params_overrides as po

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy2(REPO / "params.yaml", path)
    return path


def _changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_apply_changes_only_the_lines_of_the_overridden_keys(params):
    before = params.read_text()
    changes = po.apply_overrides(params, {"train_encoder.train.lr": 0.003, "evaluate.ks": [1, 5],
                                          "prepare.query_attributes": None})
    after = params.read_text()
    assert {c.key for c in changes} == {"train_encoder.train.lr", "evaluate.ks", "prepare.query_attributes"}
    diff = _changed_lines(before, after)
    assert len(diff) == 6, diff  # three lines out, three in: comments and every other line kept
    loaded = yaml.safe_load(after)
    assert loaded["train_encoder"]["train"]["lr"] == 0.003
    assert loaded["evaluate"]["ks"] == [1, 5]
    assert loaded["prepare"]["query_attributes"] is None
    assert "# the paper's rank-k cut-offs" in after


def test_an_aliased_key_changes_with_its_anchor(params):
    changes = po.apply_overrides(params, {"download.image_size": 224})
    assert [(c.key, c.alias_of) for c in changes] == [("download.image_size", None),
                                                      ("validate.image_size", "download.image_size")]
    text = params.read_text()
    loaded = yaml.safe_load(text)
    assert loaded["download"]["image_size"] == loaded["validate"]["image_size"] == 224
    assert "&image_size 224" in text and "*image_size" in text


@pytest.mark.parametrize(("overrides", "message"), [
    ({"train_encoder.train.lrr": 0.1}, r"unknown key 'train_encoder.train.lrr' \(known at train_encoder.train: .*lr"),
    ({"no_such_stage.x": 1}, r"unknown key 'no_such_stage.x': no 'no_such_stage'"),
    ({"train_encoder.train.lr": "fast"}, r"train_encoder.train.lr: expected a number"),
    ({"train_encoder.train.max_steps": 1.5}, r"max_steps: expected an integer"),
    ({"train_encoder.train": {"lr": 1}}, None),  # nested mappings are flattened by collect_overrides
    ({"train_encoder.train": 3}, r"'train_encoder.train' is a section"),
    ({"train_encoder.model.aggregator": "bogus"}, r"train_encoder.model: aggregator must be one of"),
    ({"train_encoder.train.batch_size": None}, r"train_encoder.train.batch_size: expected an integer"),
])
def test_a_bad_override_is_refused_naming_the_key_and_nothing_is_written(params, overrides, message):
    before = params.read_bytes()
    if message is None:
        overrides = po.collect_overrides(json_text=json.dumps(overrides), params_path=params)
        assert overrides == {"train_encoder.train.lr": 1}
        po.apply_overrides(params, overrides)
        assert yaml.safe_load(params.read_text())["train_encoder"]["train"]["lr"] == 1
        return
    with pytest.raises(po.OverrideError, match=message):
        po.apply_overrides(params, overrides)
    assert params.read_bytes() == before


def test_a_value_of_another_type_that_the_params_class_declares(params):
    # validate.decode_sample: int | str ("all" or a count); a string where it wants an integer still fails
    po.apply_overrides(params, {"validate.decode_sample": 20000})
    assert yaml.safe_load(params.read_text())["validate"]["decode_sample"] == 20000
    with pytest.raises(po.OverrideError, match="validate.max_reject_fraction: expected a number"):
        po.apply_overrides(params, {"validate.max_reject_fraction": "none"})
    with pytest.raises(po.OverrideError, match="decode_sample must be 'all' or an integer"):
        po.apply_overrides(params, {"validate.decode_sample": "some"})  # declared type, refused by the class


def test_preset_then_json_then_set_in_that_order(params):
    presets = params.parent / "presets"
    presets.mkdir()
    (presets / "big.yaml").write_text("train_encoder:\n  train: {lr: 0.01, max_steps: 50}\nevaluate.top_k: 5\n")
    got = po.collect_overrides(preset="big", json_text='{"train_encoder.train.lr": 0.02}',
                               sets=["train_encoder.train.max_steps=60"], params_path=params)
    assert got == {"train_encoder.train.lr": 0.02, "train_encoder.train.max_steps": 60, "evaluate.top_k": 5}
    with pytest.raises(po.OverrideError, match=r"preset 'nope': no file .*presets: big"):
        po.collect_overrides(preset="nope", params_path=params)
    with pytest.raises(po.OverrideError, match="expected a JSON object"):
        po.collect_overrides(json_text="[1]", params_path=params)
    with pytest.raises(po.OverrideError, match="expected KEY=VALUE"):
        po.collect_overrides(sets=["lr0.1"], params_path=params)


def test_values_already_in_place_change_nothing(params):
    before = params.read_bytes()
    assert po.apply_overrides(params, {"train_encoder.train.lr": 0.001}) == []
    assert params.read_bytes() == before


def _lpr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lpr_core.cli", "params", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_cli_applies_checks_and_prints_dvc_arguments(params):
    cwd = params.parent
    out = _lpr("apply", "--set", "train_encoder.train.lr=0.004", "--dvc-args", cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["-S", "train_encoder.train.lr=0.004"]
    assert yaml.safe_load(params.read_text())["train_encoder"]["train"]["lr"] == 0.001  # nothing written
    out = _lpr("apply", "--json", '{"train_encoder.train.lr": 0.004}', cwd=cwd)
    assert out.returncode == 0 and "train_encoder.train.lr: 0.001 -> 0.004" in out.stdout
    assert yaml.safe_load(params.read_text())["train_encoder"]["train"]["lr"] == 0.004
    out = _lpr("apply", "--set", "train_encoder.train.lr=fast", cwd=cwd)
    assert out.returncode == 2 and "train_encoder.train.lr" in out.stderr
    out = _lpr("apply", "--json", "", cwd=cwd)
    assert out.returncode == 0 and "nothing to change" in out.stdout


def test_every_section_has_a_params_class_that_loads_the_repository_params():
    from lpr_core.config import from_mapping

    sections = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(po.SECTION_PARAMS) == set(sections)
    for name, section in sections.items():
        from_mapping(po._params_class(name), section, where=f"params.yaml: {name}")


@pytest.mark.parametrize("value", [1e-05, 2.5e-07, 1e20])
def test_small_and_large_numbers_are_written_as_numbers_yaml_1_1_reads(params, value):
    # PyYAML (the stages' reader) takes `1e-05` for a string: the mantissa must carry its dot
    po.apply_overrides(params, {"train_encoder.train.lr": value})
    assert yaml.safe_load(params.read_text())["train_encoder"]["train"]["lr"] == value
    (arg,) = po.dvc_set_args([po.Change("train_encoder.train.lr", 0.001, value)])[1:]
    assert yaml.safe_load(arg.partition("=")[2]) == value
