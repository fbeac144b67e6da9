"""Fixtures of the real-pipeline tests: the tiny project of :mod:`tests.pipeline.project`.

A full ``dvc repro`` of the tiny world costs minutes, so it runs once per session
(:func:`reproduced`) and each test module works on its own copy of the result.
"""

from __future__ import annotations

import pytest

from tests.pipeline.project import Session
from tests.pipeline.project import reproduced as _reproduced


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, request) -> Session:
    """The session's tiny project after its first full ``dvc repro`` (the outcome is kept, not
    checked: a test asserts on it)."""
    return _reproduced(tmp_path_factory, request)
