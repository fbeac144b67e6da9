"""The validate section of params.yaml: loading, type and range checks."""

from __future__ import annotations

import pytest

from lpr_core.validation.params import (
    ALL_SOURCES,
    ConfigError,
    ValidateParams,
    load_validate_params,
    validate_params_from_mapping,
)

from .conftest import REPO


def test_repo_params_load_and_give_every_suite_parameter():
    params = load_validate_params(REPO / "params.yaml")
    values = params.expectation_parameters()
    assert values["min_unique_image_fraction"] == pytest.approx(1 - params.max_duplicate_image_fraction)
    assert set(params.required) <= set(ALL_SOURCES)


def test_defaults_are_valid():
    assert validate_params_from_mapping(None) == ValidateParams()


@pytest.mark.parametrize(
    "section, message",
    [
        ({"max_reject_fractions": 0.1}, "unknown key"),
        ({"min_decodable_frames": 2.5}, "min_decodable_frames: expected an integer"),
        ({"min_decodable_frames": True}, "min_decodable_frames: expected an integer"),
        ({"min_download_success_rate": 1.5}, "in [0, 1]"),
        ({"decode_sample": "some"}, "decode_sample"),
        ({"decode_sample": -1}, "decode_sample"),
        ({"required": ["test_gallery", "nonsense"]}, "unknown input"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_bad_sections_are_refused_naming_the_key(section, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_params_from_mapping(section)


def test_image_size_must_match_the_download_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("download:\n  image_size: 256\nvalidate:\n  image_size: 224\n")
    with pytest.raises(ConfigError, match="download.image_size"):
        load_validate_params(path)
    path.write_text("download:\n  image_size: 224\nvalidate:\n  image_size: 224\n  decode_sample: 10\n")
    assert load_validate_params(path).decode_sample == 10


def test_an_empty_section_gives_the_defaults_and_a_missing_one_is_an_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("download: {}\nvalidate:\n")
    assert load_validate_params(path) == ValidateParams()
    path.write_text("download: {}\n")
    with pytest.raises(ConfigError, match="no section 'validate'"):
        load_validate_params(path)
