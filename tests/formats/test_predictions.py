"""The evaluation's JSON inputs name the file and the key at fault: predictions, ground truth, galleries.

The ground truth and galleries are read by the one reader of their LPR4M files (strict); the
prediction file by its own reader. Every fault is a ``FormatError`` (``EvaluationInputError`` in
the evaluation package).
"""

from __future__ import annotations

import json
import uuid

import pytest

from lpr_core.evaluation import EvaluationInputError
from lpr_core.formats.predictions import check_predictions_in_galleries, load_predictions, unsorted_queries
from lpr_core.formats.readers import FormatError, load_galleries, load_ground_truth

LIVE, OTHER, A, B, C = (str(uuid.UUID(int=k * 0x1111)) for k in range(1, 6))
CLIP = f"{LIVE}-100-200"


def _write(tmp_path, obj, name="f.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_the_evaluation_error_is_the_readers_error():
    assert EvaluationInputError is FormatError


def test_round_trip(tmp_path):
    assert load_ground_truth(_write(tmp_path, {CLIP: [A], f"{OTHER}-1-2": [B, C]})) == {CLIP: [A], f"{OTHER}-1-2": [B, C]}
    assert load_predictions(_write(tmp_path, {CLIP: [[A, 0.9], [B, 1]]})) == {CLIP: [(A, 0.9), (B, 1.0)]}
    assert load_predictions(_write(tmp_path, {CLIP: []})) == {CLIP: []}
    assert load_galleries(_write(tmp_path, {LIVE: [A, B], OTHER: [C]})) == {LIVE: [A, B], OTHER: [C]}


def test_invalid_json_names_file_and_line(tmp_path):
    path = _write(tmp_path, f'{{\n "{CLIP}": [\n ["{A}", 0.5],\n ]\n}}', "pred.json")
    with pytest.raises(FormatError, match=r"pred\.json:4: invalid JSON") as err:
        load_predictions(path)
    assert (err.value.path, err.value.line) == (str(path), 4)
    for load in (load_ground_truth, load_galleries, load_predictions):
        with pytest.raises(FormatError, match="absent.json: no such file"):
            load(tmp_path / "absent.json")
    with pytest.raises(FormatError, match="expected a JSON object"):
        load_ground_truth(_write(tmp_path, [1, 2]))
    with pytest.raises(FormatError, match="expected a JSON object"):
        load_predictions(_write(tmp_path, [1, 2]))


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
    with pytest.raises(FormatError, match=message) as err:
        load_predictions(path)
    assert str(err.value).startswith(f"{path}: key ")


def test_non_finite_score(tmp_path):
    with pytest.raises(FormatError, match="not finite"):
        load_predictions(_write(tmp_path, f'{{"{CLIP}": [["{A}", NaN]]}}'))


@pytest.mark.parametrize(
    "value, message",
    [({CLIP: []}, "empty list of ground-truth images"), ({CLIP: A}, "expected a list of image_ids"),
     ({"x": [A]}, "key: invalid clip_id"), ({CLIP: [A, "no"]}, "item 1: invalid image_id"),
     ({CLIP: [A, A]}, "duplicate image_id")],
)
def test_malformed_ground_truth_names_file_line_and_key(tmp_path, value, message):
    path = _write(tmp_path, "{\n" + json.dumps(value)[1:], "gt.json")  # the entry on line 2
    with pytest.raises(FormatError, match=message) as err:
        load_ground_truth(path)
    assert (err.value.path, err.value.line) == (str(path), 2)


def test_gallery_checks(tmp_path):
    with pytest.raises(FormatError, match="duplicate image_id"):
        load_galleries(_write(tmp_path, {LIVE: [A, A]}))
    with pytest.raises(FormatError, match="empty gallery"):
        load_galleries(_write(tmp_path, {LIVE: []}))
    galleries = {LIVE: [A]}
    check_predictions_in_galleries({CLIP: [(A, 1.0)]}, galleries)
    with pytest.raises(FormatError, match=f"{B} is not in the gallery of livestream {LIVE}") as err:
        check_predictions_in_galleries({CLIP: [(A, 1.0), (B, 0.5)]}, galleries, source="pred.json")
    assert str(err.value).startswith("pred.json: key ")
    with pytest.raises(FormatError, match="has no gallery"):
        check_predictions_in_galleries({f"{OTHER}-1-2": [(A, 1.0)]}, galleries)


def test_unsorted_queries():
    assert unsorted_queries({CLIP: [(A, 0.5), (B, 0.5)], f"{LIVE}-1-2": [(A, 0.1), (B, 0.2)]}) == [f"{LIVE}-1-2"]
