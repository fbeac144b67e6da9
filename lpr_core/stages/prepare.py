"""DVC stage ``prepare``: annotations + manifests -> the prepared Parquet tables.

    python -m lpr_core.stages.prepare --annotations DIR --download DIR --out DIR [--params params.yaml]

Writes ``<out>/<table>.parquet`` for every table of :func:`lpr_core.data.prepare.prepare`,
``<out>/rejects.parquet`` (annotation rows the lenient readers rejected, with file, line and
reason) and ``<out>/prepare_summary.json`` (counts). Reads the ``prepare`` section of params.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lpr_core import io
from lpr_core.data.prepare import PreparedTables, PrepareParams, prepare
from lpr_core.formats.parquet import write_table
from lpr_core.formats.report import FormatError
from lpr_core.runner import StageContext, parse_args, run_stage

__all__ = ["STAGE", "add_arguments", "run", "main"]

STAGE = "prepare"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stage's command-line options."""
    parser.add_argument("--annotations", required=True, type=Path, help="directory of the LPR4M annotation files")
    parser.add_argument("--download", required=True, type=Path, help="output directory of the download stage")
    parser.add_argument("--out", required=True, type=Path, help="output directory (replaced atomically)")


def _write_outputs(result: PreparedTables, out: Path) -> None:
    """All tables into a temporary sibling directory swapped in at once: never a half output."""
    with io.atomic_dir(out) as tmp:
        for name, table in result.tables.items():
            write_table(table, tmp / f"{name}.parquet")
        if result.rejects is not None:
            write_table(result.rejects, tmp / "rejects.parquet")
        summary = {"counts": result.counts, "notes": result.notes}
        (tmp / "prepare_summary.json").write_text(json.dumps(summary, indent=1))


def _prepare(ctx: StageContext) -> None:
    args = ctx.args
    result = prepare(args.annotations, args.download, ctx.params, progress=True)
    _write_outputs(result, args.out)
    ctx.log_metrics({f"prepare/{k}": v for k, v in result.counts.items()})
    ctx.log_artifacts(args.out / "prepare_summary.json")
    ctx.report(*(f"  {k:<30} {v}" for k, v in result.counts.items()), *(f"  note: {n}" for n in result.notes))


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit status."""
    return run_stage(STAGE, args, _prepare, params=PrepareParams, errors=(FileNotFoundError, FormatError))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lpr_core.stages.prepare``."""
    return run(parse_args(STAGE, __doc__, add_arguments, argv))


if __name__ == "__main__":
    sys.exit(main())
