"""Fixtures of the validation tests: the real params, the committed GX project, a tiny world."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from lpr_core.validation.params import ValidateParams, load_validate_params

from .world import build_tiny, copy_world

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def params() -> ValidateParams:
    """The real ``validate`` section of the repo's params.yaml."""
    return load_validate_params(REPO / "params.yaml")


@pytest.fixture(scope="session")
def built_world(tmp_path_factory, params) -> Path:
    """A tiny world and its download (manifests + resized files), built once per session."""
    root = tmp_path_factory.mktemp("validate_world")
    build_tiny(root, params.image_size)
    return root


@dataclass
class World:
    """A private copy of the tiny world for one test."""

    annotations: Path
    download: Path
    gx_dir: Path
    params: ValidateParams

    def validate(self, data_docs: bool = False, **overrides):
        """Run the validation (no Data Docs by default: faster) with optional param overrides."""
        from lpr_core.validation.runner import validate

        params = replace(self.params, **overrides)
        return validate(self.annotations, self.download, self.gx_dir, params, data_docs=data_docs)


@pytest.fixture
def world(built_world, tmp_path, params) -> World:
    """A copy of the tiny world, its download and the committed GX project, to plant defects in."""
    annotations, download = copy_world(built_world, tmp_path)
    gx_dir = tmp_path / "gx"
    shutil.copytree(REPO / "gx", gx_dir, ignore=shutil.ignore_patterns("uncommitted"))
    return World(annotations, download, gx_dir, params)
