"""DVC stage ``validate``: great-expectations checks of annotations, download manifests and images.

    python -m lpr_core.stages.validate --annotations DIR --download DIR --out DIR \\
        [--metrics FILE] [--params params.yaml] [--gx-dir gx]

Reads the ``validate`` section of ``params.yaml``, runs the checkpoint of the GX project in
``--gx-dir`` and writes to ``--out``:

- ``validation_summary.json``: pass/fail per suite, counts, download success rates (DVC metrics);
- ``failing_ids.csv``: ``suite, check, expectation, column, severity, id, detail`` per
  unexpected row (``severity`` ``warning``: within an allowed share, e.g. duplicate images);
- ``data_docs/``: the Data Docs site (``index.html``);

and, with ``--metrics FILE``, its flat numeric metrics (``validate/success``,
``validate/suite/<name>``, counts, download success rates: a DVC metrics file outside the output
directory, as the other stages write theirs). The run is logged to MLflow (params, the same
metrics, the summary, failing ids and Data Docs as artifacts, a ``validation`` tag).

Exit status: 0 when every expectation passes, 1 when one fails (a short summary names each
failed expectation, its row count and first ids), 2 on unusable input or configuration. The
inputs are only read; ``--out`` is written through a temporary directory and swapped in.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from lpr_core import io
from lpr_core.runner import StageContext, parse_args, publish_metrics, run_stage
from lpr_core.validation.inputs import InputError
from lpr_core.validation.params import load_validate_params
from lpr_core.validation.project import ProjectDriftError
from lpr_core.validation.runner import ValidationOutcome, format_summary, summary_metrics, validate

__all__ = ["STAGE", "EXIT_INPUT", "add_arguments", "check_paths", "write_outputs", "run", "main"]

STAGE = "validate"
#: Exit status of unusable input or configuration (1 means: a check failed).
EXIT_INPUT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stage's command-line options."""
    parser.add_argument("--annotations", required=True, type=Path, help="directory of the LPR4M files")
    parser.add_argument("--download", required=True, type=Path, help="download stage output (manifests/, files)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (replaced)")
    parser.add_argument("--metrics", type=Path, help="also write the summary to this file (DVC metrics)")
    parser.add_argument("--gx-dir", default=Path("gx"), type=Path, help="great-expectations project (default: gx)")
    parser.add_argument("--progress", action="store_true", help="show progress bars")


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def check_paths(args: argparse.Namespace) -> None:
    """The inputs exist and no output lies inside one (the stage never writes into its inputs)."""
    for name, d in (("--annotations", args.annotations), ("--download", args.download)):
        for opt, target in (("--out", args.out), ("--metrics", args.metrics)):
            if target is not None and _overlaps(target, d):
                raise InputError(f"{opt} {target} overlaps {name} {d}: the stage never writes into its inputs")
    for name, d in (("annotations", args.annotations), ("download", args.download)):
        if not d.is_dir():
            raise InputError(f"{name} directory not found: {d}")


def write_outputs(outcome: ValidationOutcome, out_dir: str | Path, metrics: str | Path | None = None) -> Path:
    """Write the summary, failing ids and Data Docs to ``out_dir`` (swapped in once complete).

    Args:
        outcome: what :func:`lpr_core.validation.runner.validate` returned.
        out_dir: the output directory; a previous one is replaced once the new one is complete.
        metrics: write the flat numeric metrics to this file (atomically).
    """
    out_dir = Path(out_dir)
    with io.atomic_dir(out_dir) as tmp:
        (tmp / "validation_summary.json").write_text(json.dumps(outcome.summary, indent=2, sort_keys=True) + "\n")
        outcome.failing.to_csv(tmp / "failing_ids.csv", index=False)
        if outcome.data_docs is not None and Path(outcome.data_docs).is_dir():
            shutil.copytree(outcome.data_docs, tmp / "data_docs")
    if metrics is not None:
        publish_metrics(metrics, summary_metrics(outcome.summary))
    return out_dir


def _validate(ctx: StageContext) -> int:
    args = ctx.args
    outcome = validate(args.annotations, args.download, args.gx_dir, ctx.params, progress=args.progress)
    write_outputs(outcome, args.out, args.metrics)
    ctx.log_metrics(summary_metrics(outcome.summary))
    ctx.set_tags({"validation": "passed" if outcome.success else "failed"})
    ctx.log_artifacts(args.out / "validation_summary.json", args.out / "failing_ids.csv")
    ctx.log_artifacts(args.out / "data_docs", artifact_path="data_docs")
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in outcome.seconds.items())
    ctx.report(format_summary(outcome, out_dir=args.out), f"({timing})")
    return 0 if outcome.success else 1


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit status."""
    return run_stage(STAGE, args, _validate, load=load_validate_params, check=check_paths,
                     errors=(InputError, ProjectDriftError, FileNotFoundError), error_status=EXIT_INPUT)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lpr_core.stages.validate``."""
    return run(parse_args(STAGE, __doc__, add_arguments, argv))


if __name__ == "__main__":
    sys.exit(main())
