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
import os
import shutil
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "write_outputs", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stage's command-line options."""
    parser.add_argument("--annotations", required=True, type=Path, help="directory of the LPR4M files")
    parser.add_argument("--download", required=True, type=Path, help="download stage output (manifests/, files)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (replaced)")
    parser.add_argument("--metrics", type=Path, help="also write the summary to this file (DVC metrics)")
    parser.add_argument("--params", default=Path("params.yaml"), type=Path, help="params file (validate section)")
    parser.add_argument("--gx-dir", default=Path("gx"), type=Path, help="great-expectations project (default: gx)")
    parser.add_argument("--progress", action="store_true", help="show progress bars")


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def write_outputs(outcome, out_dir: str | Path, metrics: str | Path | None = None) -> Path:
    """Write the summary, failing ids and Data Docs to ``out_dir`` (atomically replaced).

    Args:
        outcome: what :func:`lpr_core.validation.runner.validate` returned.
        out_dir: the output directory; a previous one is replaced once the new one is complete.
        metrics: write the flat numeric metrics to this file (through a temporary file and a rename).
    """
    from lpr_core.validation.runner import summary_metrics

    out_dir = Path(out_dir)
    text = json.dumps(outcome.summary, indent=2, sort_keys=True) + "\n"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    (tmp / "validation_summary.json").write_text(text)
    outcome.failing.to_csv(tmp / "failing_ids.csv", index=False)
    if outcome.data_docs is not None and Path(outcome.data_docs).is_dir():
        shutil.copytree(outcome.data_docs, tmp / "data_docs")
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old.exists():
        shutil.rmtree(old)
    if metrics is not None:
        metrics = Path(metrics)
        metrics.parent.mkdir(parents=True, exist_ok=True)
        part = metrics.with_name(f".{metrics.name}.tmp-{os.getpid()}")
        part.write_text(json.dumps(summary_metrics(outcome.summary), indent=1, sort_keys=True) + "\n")
        os.replace(part, metrics)
    return out_dir


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit status."""
    from lpr_core.config import ConfigError, to_mapping
    from lpr_core.tracking.run import stage_run
    from lpr_core.validation.inputs import InputError
    from lpr_core.validation.params import load_validate_params
    from lpr_core.validation.project import ProjectDriftError
    from lpr_core.validation.runner import format_summary, summary_metrics, validate

    try:
        for name, d in (("--annotations", args.annotations), ("--download", args.download)):
            for opt, target in (("--out", args.out), ("--metrics", args.metrics)):
                if target is not None and _overlaps(target, d):
                    raise InputError(f"{opt} {target} overlaps {name} {d}: the stage never writes into its inputs")
        for name, d in (("annotations", args.annotations), ("download", args.download)):
            if not d.is_dir():
                raise InputError(f"{name} directory not found: {d}")
        params = load_validate_params(args.params)
        with stage_run("validate", {"validate": to_mapping(params)}) as tracker:
            outcome = validate(args.annotations, args.download, args.gx_dir, params, progress=args.progress)
            write_outputs(outcome, args.out, args.metrics)
            tracker.log_metrics(summary_metrics(outcome.summary))
            tracker.set_tags({"validation": "passed" if outcome.success else "failed"})
            for name in ("validation_summary.json", "failing_ids.csv"):
                tracker.log_artifact(args.out / name)
            tracker.log_artifact(args.out / "data_docs", artifact_path="data_docs")
    except (InputError, ConfigError, ProjectDriftError, FileNotFoundError) as exc:
        print(f"validate: error: {exc}", file=sys.stderr)
        return 2
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in outcome.seconds.items())
    print(format_summary(outcome, out_dir=args.out))
    print(f"({timing})")
    return 0 if outcome.success else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lpr_core.stages.validate``."""
    parser = argparse.ArgumentParser(prog="python -m lpr_core.stages.validate", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
