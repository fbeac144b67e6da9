"""The JSON readers name the file and the key at fault."""

from __future__ import annotations

import json
import random

import pytest

from lpr_core.evaluation import (
    EvaluationInputError,
    check_predictions_in_galleries,
    load_galleries,
    load_ground_truth,
    load_predictions,
)
from lpr_core.evaluation.readers import unsorted_queries

from .oracle import new_uuid

rnd = random.Random(11)
LIVE, OTHER = new_uuid(rnd), new_uuid(rnd)
A, B = new_uuid(rnd), new_uuid(rnd)
CLIP = f"{LIVE}-100-200"


def _write(tmp_path, obj, name="f.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_round_trip(tmp_path):
    assert load_ground_truth(_write(tmp_path, {CLIP: [A]})) == {CLIP: [A]}
    assert load_predictions(_write(tmp_path, {CLIP: [[A, 0.9], [B, 1]]})) == {CLIP: [(A, 0.9), (B, 1.0)]}
    assert load_predictions(_write(tmp_path, {CLIP: []})) == {CLIP: []}
    assert load_galleries(_write(tmp_path, {LIVE: [A, B]})) == {LIVE: [A, B]}


def test_invalid_json_names_file_and_line(tmp_path):
    path = _write(tmp_path, f'{{\n "{CLIP}": [\n ["{A}", 0.5],\n ]\n}}', "pred.json")
    with pytest.raises(EvaluationInputError, match=r"pred\.json: invalid JSON at line 4"):
        load_predictions(path)
    with pytest.raises(EvaluationInputError, match="no such file"):
        load_ground_truth(tmp_path / "absent.json")
    with pytest.raises(EvaluationInputError, match="expected a JSON object"):
        load_ground_truth(_write(tmp_path, [1, 2]))


@pytest.mark.parametrize(
    "value, message",
    [
        ({CLIP: [[A]]}, "entry 0: expected \\[image_id, score\\]"),
        ({CLIP: [[A, "0.5"]]}, "entry 0: expected"),
        ({CLIP: [[A, True]]}, "entry 0: expected"),
        ({CLIP: [[A, 0.5], [1, 0.4]]}, "entry 1: expected"),
        ({CLIP: [[A, 0.5], ["x/y", 0.4]]}, "entry 1: invalid image_id"),
        ({CLIP: [[A, 0.5], [f"{B}\n{A}", 0.4]]}, "entry 1: invalid image_id"),
        ({CLIP: [[A, 0.5], [B, 1e400]]}, "entry 1: score is not finite"),
        ({CLIP: {A: 0.5}}, "expected a list"),
        ({CLIP: [[A, 0.5], [A, 0.4]]}, f"image_id {A} listed twice"),
        ({"bad-key": []}, "key 'bad-key'"),
    ],
)
def test_malformed_predictions_name_the_key(tmp_path, value, message):
    path = _write(tmp_path, value, "pred.json")
    with pytest.raises(EvaluationInputError, match=message) as err:
        load_predictions(path)
    assert str(path) in str(err.value)


def test_non_finite_score(tmp_path):
    with pytest.raises(EvaluationInputError, match="not finite"):
        load_predictions(_write(tmp_path, f'{{"{CLIP}": [["{A}", NaN]]}}'))


@pytest.mark.parametrize("value", [{CLIP: []}, {CLIP: A}, {"x": [A]}, {CLIP: [A, "no"]}])
def test_malformed_ground_truth(tmp_path, value):
    with pytest.raises(EvaluationInputError, match="gt.json: key"):
        load_ground_truth(_write(tmp_path, value, "gt.json"))


def test_gallery_checks(tmp_path):
    with pytest.raises(EvaluationInputError, match="listed twice"):
        load_galleries(_write(tmp_path, {LIVE: [A, A]}))
    galleries = {LIVE: [A]}
    check_predictions_in_galleries({CLIP: [(A, 1.0)]}, galleries)
    with pytest.raises(EvaluationInputError, match=f"{B} is not in the gallery of livestream {LIVE}"):
        check_predictions_in_galleries({CLIP: [(A, 1.0), (B, 0.5)]}, galleries)
    with pytest.raises(EvaluationInputError, match="has no gallery"):
        check_predictions_in_galleries({f"{OTHER}-1-2": [(A, 1.0)]}, galleries)


def test_unsorted_queries():
    assert unsorted_queries({CLIP: [(A, 0.5), (B, 0.5)], f"{LIVE}-1-2": [(A, 0.1), (B, 0.2)]}) == [f"{LIVE}-1-2"]
