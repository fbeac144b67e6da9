"""The great-expectations project (``gx/`` at the repo root) and its checkpoint runner.

The project is a file-mode Data Context whose committed part (``great_expectations.yml``,
``expectations/``, ``validation_definitions/``, ``checkpoints/``) is generated from code:

- one pandas data source ``lpr`` with one dataframe asset per check table, each with a
  whole-dataframe batch definition;
- one expectation suite per table (:mod:`lpr_core.validation.suites`);
- one validation definition per table (its asset's batch definition x its suite);
- one checkpoint, ``lpr_validate``, over all of them, with an ``UpdateDataDocsAction`` and a
  result format that reports the first unexpected rows of each expectation by their ``id``.

``python -m lpr_core.validation.project [--gx-dir gx] [--check]`` writes (or checks) it. The stage
refuses to run on a project that differs from the code (:class:`ProjectDriftError`), so the
committed suites are exactly what runs.

Running the checkpoint: great-expectations 1.x ``Checkpoint.run`` hands one ``batch_parameters``
dict to every validation definition, and a dataframe asset takes exactly one ``dataframe``; with
one asset per table that cannot feed each definition its own table. :func:`run_checkpoint`
therefore performs the checkpoint's two steps itself with public API: each of the checkpoint's
validation definitions runs on its own table (with the checkpoint's id, result format and one
run id), then the checkpoint's actions run on the :class:`CheckpointResult`, as
``Checkpoint.run`` does (the Data Docs action as one build over every result).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lpr_core.validation.suites import build_suites
from lpr_core.validation.tables import TABLE_NAMES

__all__ = [
    "DATASOURCE",
    "BATCH_DEFINITION",
    "CHECKPOINT",
    "DOCS_ACTION",
    "RESULT_FORMAT",
    "MAX_IDS_PER_EXPECTATION",
    "ProjectDriftError",
    "open_context",
    "sync_project",
    "project_drift",
    "run_checkpoint",
    "data_docs_dir",
    "main",
]

DATASOURCE = "lpr"
BATCH_DEFINITION = "whole_table"
CHECKPOINT = "lpr_validate"
DOCS_ACTION = "update_data_docs"
#: Ids reported per expectation: the first unexpected rows, named by their table's ``id`` column.
MAX_IDS_PER_EXPECTATION = 1000
#: ``SUMMARY`` with a long partial list: ``COMPLETE`` would carry every unexpected row through the
#: results and the Data Docs (a minute for half a million rows), for ids nobody reads past the first.
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": MAX_IDS_PER_EXPECTATION,
    "unexpected_index_column_names": ["id"],
}


class ProjectDriftError(RuntimeError):
    """The GX project on disk differs from the one the code defines."""


def open_context(gx_dir: str | Path, *, create: bool = False):
    """The file-mode Data Context at ``gx_dir`` (``great_expectations.yml`` inside).

    Raises:
        ProjectDriftError: there is no project at ``gx_dir`` and ``create`` is false.
    """
    gx_dir = Path(gx_dir)
    if not create and not (gx_dir / "great_expectations.yml").is_file():
        raise ProjectDriftError(
            f"no great-expectations project at {gx_dir}; create it with "
            f"`python -m lpr_core.validation.project --gx-dir {gx_dir}`"
        )
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx.get_context(mode="file", context_root_dir=str(gx_dir))


def data_docs_dir(context) -> Path:
    """Where the checkpoint's Data Docs site is written (``uncommitted/data_docs/local_site``)."""
    return Path(context.root_directory) / "uncommitted" / "data_docs" / "local_site"


def sync_project(gx_dir: str | Path, *, check_only: bool = False) -> list[str]:
    """Make the project at ``gx_dir`` match the code; return what differed (empty: in sync).

    Unchanged objects are not rewritten, so a project in sync stays byte-identical.

    Args:
        gx_dir: the project directory (created when missing, unless ``check_only``).
        check_only: only report the differences, write nothing.
    """
    changes: list[str] = []
    if not (Path(gx_dir) / "great_expectations.yml").is_file():
        if check_only:
            return [f"no project at {gx_dir}"]
        changes.append(f"created project at {gx_dir}")
    context = open_context(gx_dir, create=not check_only)
    return changes + project_drift(context, fix=not check_only)


def project_drift(context, *, fix: bool = False) -> list[str]:
    """How the project of ``context`` differs from the code (empty: in sync); ``fix`` repairs it.

    Args:
        context: a file-mode Data Context (:func:`open_context`).
        fix: write what differs.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.exceptions import DataContextError


    check_only = not fix
    changes: list[str] = []
    suites = build_suites()

    # progress bars of metric calculations would flood a stage's log
    pb = context.variables.progress_bars
    pb = dict(pb) if isinstance(pb, Mapping) else vars(pb) if pb is not None else {}
    if pb.get("globally", True) or pb.get("metric_calculations", True):
        changes.append("progress bars: off")
        if not check_only:
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            context.variables.save()

    # data source, assets, batch definitions
    try:
        source = context.data_sources.get(DATASOURCE)
    except (KeyError, ValueError, DataContextError):
        source = None
    if source is None or getattr(source, "type", None) != "pandas":
        changes.append(f"data source {DATASOURCE} (pandas)")
        if check_only:
            return changes
        source = context.data_sources.add_or_update_pandas(DATASOURCE)
    batch_defs = {}
    existing_assets = {a.name: a for a in source.assets}
    for name in TABLE_NAMES:
        asset = existing_assets.get(name)
        if asset is None or asset.type != "dataframe":
            changes.append(f"dataframe asset {name}")
            if check_only:
                continue
            if asset is not None:
                source.delete_asset(name)
            asset = source.add_dataframe_asset(name)
        bd = next((b for b in asset.batch_definitions if b.name == BATCH_DEFINITION), None)
        if bd is None:
            changes.append(f"batch definition {name}/{BATCH_DEFINITION}")
            if check_only:
                continue
            bd = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)
        batch_defs[name] = bd
    for name in sorted(set(existing_assets) - set(TABLE_NAMES)):
        changes.append(f"remove asset {name}")
        if not check_only:
            source.delete_asset(name)

    # suites
    stored = {}
    for name, suite in suites.items():
        try:
            old = context.suites.get(name)
        except DataContextError:
            old = None
        if old is None or _expectation_configs(old) != _expectation_configs(suite):
            changes.append(f"expectation suite {name}")
            if not check_only:
                old = context.suites.add_or_update(suite)
        stored[name] = old

    # validation definitions
    vds = []
    for name in TABLE_NAMES:
        try:
            old = context.validation_definitions.get(name)
        except (DataContextError, ValueError, KeyError):
            old = None
        ok = (
            old is not None
            and old.data.data_asset.name == name
            and old.data.name == BATCH_DEFINITION
            and old.suite.name == name
            and stored.get(name) is not None
            and old.suite.id == stored[name].id
        )
        if not ok:
            changes.append(f"validation definition {name}")
            if check_only:
                continue
            old = context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=name, data=batch_defs[name], suite=stored[name])
            )
        vds.append(old)

    # the checkpoint
    try:
        cp = context.checkpoints.get(CHECKPOINT)
    except (DataContextError, ValueError, KeyError):
        cp = None
    ok = (
        cp is not None
        and [vd.name for vd in cp.validation_definitions] == list(TABLE_NAMES)
        and all(a.id == b.id for a, b in zip(cp.validation_definitions, vds))
        and [(a.type, a.name) for a in cp.actions] == [("update_data_docs", DOCS_ACTION)]
        and _result_format(cp.result_format) == RESULT_FORMAT
    )
    if not ok:
        changes.append(f"checkpoint {CHECKPOINT}")
        if not check_only:
            context.checkpoints.add_or_update(
                gx.Checkpoint(
                    name=CHECKPOINT,
                    validation_definitions=vds,
                    actions=[UpdateDataDocsAction(name=DOCS_ACTION)],
                    result_format=RESULT_FORMAT,
                )
            )

    # anything else in the project is left over from an older version of the code
    for kind, factory, keep in (
        ("checkpoint", context.checkpoints, {CHECKPOINT}),
        ("validation definition", context.validation_definitions, set(TABLE_NAMES)),
        ("expectation suite", context.suites, set(TABLE_NAMES)),
    ):
        for name in sorted({o.name for o in factory.all()} - keep):
            changes.append(f"remove {kind} {name}")
            if not check_only:
                factory.delete(name)
    return changes


def _expectation_configs(suite) -> list[dict]:
    """A suite's expectations as comparable dicts (ids left out: they are random)."""
    out = []
    for e in suite.expectations:
        d = e.configuration.to_json_dict()
        d.pop("id", None)
        out.append(d)
    return out


def _result_format(value) -> dict:
    if isinstance(value, Mapping):
        return dict(value)
    return {"result_format": str(getattr(value, "value", value))}


def run_checkpoint(
    context, tables: Mapping[str, Any], expectation_parameters: Mapping[str, Any], *, run_actions: bool = True
):
    """Run the checkpoint ``lpr_validate``: each validation definition on its own table, then its actions.

    Args:
        context: the project's Data Context (:func:`open_context`), in sync with the code.
        tables: asset (table) name -> pandas DataFrame.
        expectation_parameters: values of the suites' ``$PARAMETER`` thresholds.
        run_actions: run the checkpoint's actions (Data Docs); tests of the checks alone skip them.

    Returns:
        The ``great_expectations.checkpoint.CheckpointResult`` (Data Docs are updated).
    """
    from great_expectations.checkpoint import CheckpointResult, UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    checkpoint = context.checkpoints.get(CHECKPOINT)
    run_id = RunIdentifier(run_name="validate", run_time=dt.datetime.now(dt.UTC))
    run_results = {}
    for vd in checkpoint.validation_definitions:
        asset = vd.data.data_asset.name
        if asset not in tables:
            raise ProjectDriftError(f"checkpoint {CHECKPOINT} validates asset {asset!r}, which no table feeds")
        result = vd.run(
            checkpoint_id=checkpoint.id,
            batch_parameters={"dataframe": tables[asset]},
            expectation_parameters=dict(expectation_parameters),
            result_format=checkpoint.result_format,
            run_id=run_id,
        )
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=vd.suite.name),
            run_id=run_id,
            batch_identifier=result.batch_id,
        )
        result.meta["checkpoint_id"] = checkpoint.id
        run_results[key] = result
    checkpoint_result = CheckpointResult(run_id=run_id, run_results=run_results, checkpoint_config=checkpoint)
    # data docs first, as Checkpoint.run orders its actions
    actions = sorted(checkpoint.actions, key=lambda a: a.type != "update_data_docs")
    for action in actions if run_actions else []:
        if isinstance(action, UpdateDataDocsAction):
            _update_data_docs(context, action, checkpoint_result)
        else:
            action.run(checkpoint_result=checkpoint_result)
    return checkpoint_result


def _update_data_docs(context, action, checkpoint_result) -> None:
    """What ``UpdateDataDocsAction.run`` builds, in one Data Docs build instead of one per result.

    The action rebuilds the sites (and their index) once per validation result, each time with
    fresh template environments; one build over every result and suite writes the same pages
    (the same files, the same index) in a fraction of the time.
    """
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    identifiers: list = []
    for key, result in checkpoint_result.run_results.items():
        identifiers += [key, ExpectationSuiteIdentifier(name=result.suite_name)]
    context.build_data_docs(
        site_names=action.site_names, resource_identifiers=identifiers, dry_run=False, build_index=True
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m lpr_core.validation.project``: write or check the GX project."""
    parser = argparse.ArgumentParser(
        prog="python -m lpr_core.validation.project",
        description="Write the great-expectations project of the validate stage from code (or check it).",
    )
    parser.add_argument("--gx-dir", default="gx", help="project directory (default: gx)")
    parser.add_argument("--check", action="store_true", help="only report differences; exit 1 if any")
    args = parser.parse_args(argv)
    changes = sync_project(args.gx_dir, check_only=args.check)
    if not changes:
        print(f"{args.gx_dir}: in sync")
        return 0
    verb = "differs" if args.check else "updated"
    print(f"{args.gx_dir}: {verb}:\n  " + "\n  ".join(changes))
    return 1 if args.check else 0


if __name__ == "__main__":
    sys.exit(main())
