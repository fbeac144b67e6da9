"""A tiny synthetic world, generated once per test session."""

from __future__ import annotations

import pytest

from lpr_core.synth.world import generate_world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The WorldSummary of a tiny world (seed 0). Tests must not modify it."""
    return generate_world(tmp_path_factory.mktemp("synth") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def release_world(tmp_path_factory):
    """The WorldSummary of a tiny world of the ``release`` family (seed 0). Tests must not modify it."""
    return generate_world(tmp_path_factory.mktemp("synth") / "release", size="tiny", seed=0, family="release")
