"""The presets in ``presets/``: every key exists in ``params.yaml`` with a value of its type, the
whole preset passes ``lpr params apply``'s checks and applies, and ``rice_paper`` is the paper's
encoder setting and builds.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lpr_core import params_overrides as po

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "presets").glob("*.yaml"))


def _declared_types(key: str) -> set[type]:
    """The types the section's params class declares for a dotted key (the members of a union)."""
    import importlib
    import types
    import typing

    section, *path = key.split(".")
    module, _, name = po.SECTION_PARAMS[section].partition(":")
    tp = getattr(importlib.import_module(module), name)
    for part in path:
        tp = typing.get_type_hints(tp)[part]
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    return {t for t in (typing.get_args(tp) if union else (tp,)) if isinstance(t, type)}


def test_there_are_presets():
    assert "rice_paper" in {p.stem for p in PRESETS}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_key_exists_in_params_with_a_value_of_its_type(preset):
    # an independent reading of both files (plain PyYAML, as DVC and the stages read params.yaml)
    params = po.flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    overrides = po.flatten(yaml.safe_load(preset.read_text()))
    assert overrides, f"{preset.name} sets nothing"
    unknown = sorted(set(overrides) - set(params))
    assert not unknown, f"{preset.name}: keys not in params.yaml: {unknown}"
    for key, value in overrides.items():
        old = params[key]
        if value is None or type(value) in _declared_types(key):
            continue  # an optional key set to null, or a type the params class declares ("all" or a count)
        if isinstance(old, bool) or isinstance(value, bool):
            assert isinstance(old, bool) and isinstance(value, bool), key
        elif isinstance(old, float):  # an integer may stand for a number, never a string ("1e-5" is one)
            assert isinstance(value, int | float), f"{key}: {value!r} is not a number"
        else:
            assert type(value) is type(old), f"{key}: {value!r} ({type(value).__name__}) for {old!r}"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_applies_with_lpr_params_apply(preset, tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy2(REPO / "params.yaml", params)
    (tmp_path / "presets").mkdir()
    shutil.copy2(preset, tmp_path / "presets" / preset.name)
    before = yaml.safe_load(params.read_text())
    overrides = po.load_preset(preset.stem, params)
    po.check_overrides(before, overrides, where=preset.name)  # keys, types and each section's params class
    result = subprocess.run([sys.executable, "-m", "lpr_core.cli", "params", "apply", "--params", str(params),
                             "--preset", preset.stem], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    after = po.flatten(yaml.safe_load(params.read_text()))
    for key, value in overrides.items():
        assert after[key] == value, key
    untouched = {k: v for k, v in po.flatten(before).items() if k not in overrides}
    assert {k: after[k] for k in untouched} == untouched


def test_rice_paper_is_the_papers_encoder_setting():
    preset = po.load_preset("rice_paper", REPO / "params.yaml")
    model = {k.removeprefix("train_encoder.model."): v for k, v in preset.items() if k.startswith("train_encoder.model.")}
    assert model["backbone"] in ("open_clip:ViT-B-32", "open_clip:ViT-B-32-quickgelu")  # CLIP ViT-B/32
    assert (model["image_size"], model["num_frames"], model["embed_dim"]) == (224, 10, 512)
    assert model["pmd"] is True and model["pfr"] is True
    assert preset["train_encoder.train.batch_size"] == 128
    assert (preset["train_encoder.train.max_steps"], preset["train_encoder.train.warmup_steps"]) == (5000, 500)
    text = (REPO / "presets" / "rice_paper.yaml").read_text()
    assert "deepalchemist/crossview-semantic-alignment" in text  # the values cite their source


def test_rice_paper_builds_the_papers_tower_and_its_weights_tag_fits_it(tmp_path, monkeypatch):
    from lpr_core.config import from_mapping
    from lpr_core.models.encoder import EncoderConfig, build_encoder
    from lpr_core.models.weights import WeightsNotFoundError
    from lpr_core.training.tasks import TrainEncoderParams

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    section = po.check_overrides(params, po.load_preset("rice_paper", REPO / "params.yaml"))["train_encoder"]
    loaded = from_mapping(TrainEncoderParams, section, where="rice_paper")
    config = EncoderConfig(**{**dataclasses.asdict(loaded.model), "weights": "none"})
    model = build_encoder(config)
    assert (model.backbone.dim, model.backbone.token_dim, model.num_tokens) == (512, 768, 49)  # 7 x 7 patches of 32 px
    assert model.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    # the weights tag is OpenAI's and fits the architecture: offline, only the cache is missing
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFoundError, match="not in the local cache"):
        build_encoder(EncoderConfig(**dataclasses.asdict(loaded.model)))


def test_rice_paper_as_dvc_exp_run_arguments():
    result = subprocess.run([sys.executable, "-m", "lpr_core.cli", "params", "apply", "--preset", "rice_paper",
                             "--dvc-args"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    args = shlex.split(result.stdout)  # what `eval "dvc exp run $(...)"` passes
    sets = dict(a.split("=", 1) for a in args[1::2])
    assert set(args[::2]) == {"-S"}
    assert yaml.safe_load(sets["train_encoder.model.num_frames"]) == 10
    assert yaml.safe_load(sets["train_encoder.model.backbone"]).startswith("open_clip:ViT-B-32")
    assert yaml.safe_load(sets["train_encoder.train.lr"]) == pytest.approx(1e-5)
