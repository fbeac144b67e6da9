"""DVC stage ``prepare``: annotations + manifests -> the prepared Parquet tables.

    python -m lpr_core.stages.prepare --annotations DIR --download DIR --out DIR [--params params.yaml]

Writes ``<out>/<table>.parquet`` for every table of :func:`lpr_core.data.prepare.prepare`,
``<out>/rejects.parquet`` (annotation rows the lenient readers rejected, with file, line and
reason) and ``<out>/prepare_summary.json`` (counts). Reads the ``prepare`` section of params.yaml.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stage's command-line options."""
    parser.add_argument("--annotations", required=True, type=Path, help="directory of the LPR4M annotation files")
    parser.add_argument("--download", required=True, type=Path, help="output directory of the download stage")
    parser.add_argument("--out", required=True, type=Path, help="output directory (replaced atomically)")
    parser.add_argument("--params", default=Path("params.yaml"), type=Path, help="parameter file")


def _write_outputs(result, out: Path) -> None:
    """All tables into a temporary sibling directory, then one rename: never a half output."""
    from lpr_core.formats.parquet import write_table

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, table in result.tables.items():
        write_table(table, tmp / f"{name}.parquet")
    if result.rejects is not None:
        write_table(result.rejects, tmp / "rejects.parquet")
    summary = {"counts": result.counts, "notes": result.notes}
    (tmp / "prepare_summary.json").write_text(json.dumps(summary, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit status."""
    from lpr_core.config import ConfigError, load_section
    from lpr_core.data.prepare import PrepareParams, prepare
    from lpr_core.formats.report import FormatError
    from lpr_core.tracking.run import stage_run

    try:
        params = load_section(PrepareParams, "prepare", args.params)
    except ConfigError as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 1
    try:
        with stage_run("prepare", {"prepare": params.__dict__}) as tracker:
            result = prepare(args.annotations, args.download, params, progress=True)
            _write_outputs(result, args.out)
            tracker.log_metrics({f"prepare/{k}": v for k, v in result.counts.items()})
            tracker.log_artifact(args.out / "prepare_summary.json")
    except (FileNotFoundError, FormatError) as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 1
    for k, v in result.counts.items():
        print(f"  {k:<30} {v}")
    for note in result.notes:
        print(f"  note: {note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lpr_core.stages.prepare``."""
    parser = argparse.ArgumentParser(prog="python -m lpr_core.stages.prepare", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
