"""The committed great-expectations project: generated from code, kept in sync, refused on drift."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from lpr_core.validation.params import ValidateParams
from lpr_core.validation.project import CHECKPOINT, ProjectDriftError, sync_project
from lpr_core.validation.suites import build_suites
from lpr_core.validation.tables import TABLE_NAMES

from .conftest import REPO


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "uncommitted" not in p.parts
    }


def test_committed_project_matches_the_code():
    assert sync_project(REPO / "gx", check_only=True) == []


def test_committed_project_layout():
    gx = REPO / "gx"
    assert (gx / "great_expectations.yml").is_file()
    assert sorted(p.stem for p in (gx / "expectations").glob("*.json")) == sorted(TABLE_NAMES)
    assert sorted(p.stem for p in (gx / "validation_definitions").glob("*.json")) == sorted(TABLE_NAMES)
    checkpoint = json.loads((gx / "checkpoints" / f"{CHECKPOINT}.json").read_text())
    assert [v["name"] for v in checkpoint["validation_definitions"]] == list(TABLE_NAMES)
    assert [a["type"] for a in checkpoint["actions"]] == ["update_data_docs"]


def test_sync_writes_a_project_once_and_then_leaves_it_untouched(tmp_path):
    gx = tmp_path / "gx"
    assert sync_project(gx)  # created
    before = digest(gx)
    assert sync_project(gx) == []
    assert digest(gx) == before


def test_every_suite_parameter_comes_from_params():
    names = set()
    for suite in build_suites().values():
        for e in suite.expectations:
            for v in e.configuration.kwargs.values():
                if isinstance(v, dict) and "$PARAMETER" in v:
                    names.add(v["$PARAMETER"])
    assert names == set(ValidateParams().expectation_parameters())


def test_every_expectation_names_its_check_and_a_column_of_its_table(world):
    from lpr_core.validation.images import decode_sample
    from lpr_core.validation.inputs import load_inputs
    from lpr_core.validation.tables import build_tables

    inputs = load_inputs(world.annotations, world.download)
    tables = build_tables(inputs, decode_sample(inputs.manifests, world.download, sample=0), world.params)
    for name, suite in build_suites().items():
        checks = [e.meta["check"] for e in suite.expectations]
        assert len(checks) == len(set(checks)), name
        for e in suite.expectations:
            kwargs = e.configuration.kwargs
            for column in [kwargs.get("column")] + list(kwargs.get("column_list") or []):
                if column is not None:
                    assert column in tables[name].columns, (name, column)


def test_a_drifted_project_is_refused(world):
    path = world.gx_dir / "expectations" / "test_queries.json"
    suite = json.loads(path.read_text())
    suite["expectations"] = suite["expectations"][:-1]  # someone deleted an expectation by hand
    path.write_text(json.dumps(suite))
    assert sync_project(world.gx_dir, check_only=True) == ["expectation suite test_queries"]
    with pytest.raises(ProjectDriftError, match="python -m lpr_core.validation.project"):
        world.validate()


def test_a_missing_project_is_refused(world):
    shutil.rmtree(world.gx_dir)
    with pytest.raises(ProjectDriftError, match="no great-expectations project"):
        world.validate()
