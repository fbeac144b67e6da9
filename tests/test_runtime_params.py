"""lpr_core.runtime_params: runtime settings vs result-bearing params, and dvc.yaml pinned to them."""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from lpr_core.config import load_section
from lpr_core.params_overrides import SECTION_PARAMS
from lpr_core.runtime_params import RUNTIME, is_runtime, result_bearing, result_keys, runtime_settings

REPO = Path(__file__).resolve().parents[1]
DVC_STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def params_class(section: str):
    module, name = SECTION_PARAMS[section].split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Inner:
    workers: int = field(default=2, metadata=RUNTIME)
    seed: int = 0


@dataclass(frozen=True)
class Whole:
    a: int = 1
    b: tuple[str, ...] = ("x",)


@dataclass(frozen=True)
class Section:
    lr: float = 0.1
    progress: bool = field(default=True, metadata=RUNTIME)
    inner: Inner = field(default_factory=Inner)
    whole: Whole = field(default_factory=Whole)


def test_result_keys_name_whole_subsections_and_leave_runtime_keys_out():
    assert result_keys(Section, "s") == ["s.lr", "s.inner.seed", "s.whole"]
    assert result_keys(Whole, "w") == ["w"]
    with pytest.raises(TypeError):
        result_keys(Section(), "s")


def test_result_bearing_and_runtime_settings_split_an_instance():
    s = Section(lr=0.3, progress=False, inner=Inner(workers=8, seed=1))
    assert result_bearing(s) == {"lr": 0.3, "inner": {"seed": 1}, "whole": {"a": 1, "b": ["x"]}}
    assert runtime_settings(s) == {"progress": False, "inner.workers": 8}
    # a runtime change leaves the result-bearing part equal, a result change does not
    assert result_bearing(dataclasses.replace(s, progress=True)) == result_bearing(s)
    assert result_bearing(dataclasses.replace(s, lr=0.4)) != result_bearing(s)


def test_every_stage_of_dvc_yaml_has_a_params_class():
    assert set(DVC_STAGES) <= set(SECTION_PARAMS)


@pytest.mark.parametrize("stage", list(DVC_STAGES))
def test_dvc_yaml_params_are_exactly_the_result_bearing_keys(stage):
    """What a stage's ``params:`` lists in ``dvc.yaml`` is what its dataclass declares result-bearing:
    a runtime key listed would rerun the stage for nothing, a result-bearing key missing would let
    DVC reuse a stale output."""
    listed = DVC_STAGES[stage].get("params")
    assert listed == result_keys(params_class(stage), stage), (
        f"dvc.yaml: stage {stage}: params should be {result_keys(params_class(stage), stage)}")


@pytest.mark.parametrize("stage", list(DVC_STAGES))
def test_the_listed_keys_exist_in_params_yaml(stage):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in DVC_STAGES[stage]["params"]:
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml {stage}: {key} is not in params.yaml"
            node = node[part]


def test_runtime_settings_the_issue_names_are_runtime():
    from lpr_core.data.download import DownloadParams
    from lpr_core.training.config import TrainConfig
    from lpr_core.validation.params import ValidateParams

    def runtime(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if is_runtime(f)}

    assert {"num_workers", "prefetch_factor", "persistent_workers", "progress", "device"} <= runtime(TrainConfig)
    assert not {"amp", "lr", "max_steps", "seed", "batch_size", "log_every"} & runtime(TrainConfig)
    assert {"processes", "thread_count"} <= runtime(DownloadParams)
    assert "workers" in runtime(ValidateParams)
    for stage in ("index_gallery", "evaluate"):
        embed = params_class(stage)().embed
        assert {"num_workers", "device"} <= set(runtime_settings(embed)) and "amp" not in runtime_settings(embed)


def _commented_keys(path: Path, mark: str) -> set[str]:
    """Dotted keys of ``params.yaml`` whose line carries ``mark`` in its comment."""
    found, stack = set(), []
    for line in path.read_text().splitlines():
        m = re.match(r"^(\s*)([A-Za-z_][\w]*):", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack = stack[:depth] + [m.group(2)]
        if "#" in line and mark in line.split("#", 1)[1]:
            found.add(".".join(stack))
    return found


def test_params_yaml_marks_exactly_the_runtime_settings():
    sections = yaml.safe_load((REPO / "params.yaml").read_text())
    declared = set()
    for stage in DVC_STAGES:
        params = load_section(params_class(stage), stage, REPO / "params.yaml")
        declared |= {f"{stage}.{k}" for k in runtime_settings(params)}
    assert declared and set(sections) >= {k.split(".")[0] for k in declared}
    assert _commented_keys(REPO / "params.yaml", "[runtime]") == declared
