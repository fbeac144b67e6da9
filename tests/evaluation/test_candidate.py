"""What the registry gate reads about an evaluation (:mod:`lpr_core.evaluation.candidate`); the
data version is checked on the tiny world in ``tests/stages/test_evaluate.py``."""

from __future__ import annotations

import json

import pytest


def test_validation_summary_reading(tmp_path):
    from lpr_core.evaluation.candidate import read_validation_passed
    from lpr_core.inputs import StageInputError

    path = tmp_path / "validation_summary.json"
    assert read_validation_passed(path) is False  # missing
    path.write_text(json.dumps({"success": False}))
    assert read_validation_passed(path) is False
    path.write_text(json.dumps({"success": True}))
    assert read_validation_passed(path) is True
    path.write_text("{not json")
    with pytest.raises(StageInputError, match="validation_summary.json"):
        read_validation_passed(path)
