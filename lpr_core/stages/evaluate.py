"""DVC stage ``evaluate``: rank the test query clips against their livestream's gallery (LPR protocol).

    python -m lpr_core.stages.evaluate --prepared DIR --download DIR --encoder DIR --detector DIR
        --index DIR --out DIR --plots DIR --metrics FILE [--validation FILE] [--params params.yaml]

Each query clip of ``<prepared>/test_queries.parquet`` is embedded from T uniformly spaced frames,
cropped to the product as the encoder was trained (``evaluate.crops``: ``auto`` follows the
encoder checkpoint, ``detector``, ``ground_truth`` or ``none``), and ranked only against its own
livestream's gallery, exactly and through the saved faiss index of the ``index_gallery`` stage:
:func:`lpr_core.evaluation.run.evaluate`. A query without any downloaded frame counts as a miss.

Writes (each directory replaced as a whole, the metrics file last):

- ``--metrics``: ``test/rank1``, ``test/rank3``, ``test/rank5``, ``test/rank10``, ``test/mAP``,
  ``test/MRR`` with ``_ci_low`` / ``_ci_high`` bounds, counts, and per slice value
  ``test/<column>/<value>/<metric>`` (e.g. ``test/scale_type/small/rank1``) for the gate, and the
  rank-1 misses per failure kind ``test/misses/<kind>`` (``no_frames``, ``no_box``, ``wrong_box``,
  ``right_box_wrong_image``: those the crop mode can give);
- ``--plots``: ``rank_k.csv`` (``k, accuracy``) and ``slices/<column>.csv`` per slice column;
- ``--out``: ``report.html`` (self-contained: metrics, curve, the misses by failure kind with a few
  of each, slices, retrieval examples and the worst queries), ``per_query.csv``, ``predictions.json`` (the official format
  ``{video_id: [[image_id, score], ...]}``, best first, ``top_k`` entries) and ``candidate.json``
  (the evaluated model for the registry gate: encoder and detector paths, metrics, the
  ``data_version`` of the test data and whether its validation passed).

Reads the ``evaluate`` section of params.yaml (:class:`~lpr_core.evaluation.params.EvaluateParams`);
logs it, every metric and the report, predictions and candidate files to MLflow. Exit status 1 on
a missing or malformed input (or an index built with another encoder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lpr_core.evaluation.crops import DETECTOR_FILE
from lpr_core.evaluation.params import EvaluateParams
from lpr_core.evaluation.run import DEFAULT_VALIDATION, evaluate, write_evaluation_outputs
from lpr_core.index.gallery import IndexFileError
from lpr_core.runner import StageContext, parse_args, run_stage

__all__ = ["STAGE", "EvaluateParams", "add_arguments", "run", "main"]

STAGE = "evaluate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stage's command-line options."""
    parser.add_argument("--prepared", required=True, type=Path, help="output directory of the prepare stage")
    parser.add_argument("--download", required=True, type=Path, help="output directory of the download stage")
    parser.add_argument("--encoder", required=True, type=Path, help="directory holding encoder.pt")
    parser.add_argument("--detector", type=Path, help=f"directory holding {DETECTOR_FILE} (needed for detector crops)")
    parser.add_argument("--index", required=True, type=Path, help="output directory of the index_gallery stage")
    parser.add_argument("--out", required=True, type=Path,
                        help="report, per-query table, predictions, candidate (replaced atomically)")
    parser.add_argument("--plots", required=True, type=Path, help="DVC plot tables (replaced atomically)")
    parser.add_argument("--metrics", required=True, type=Path, help="DVC metrics JSON")
    parser.add_argument("--validation", type=Path, default=DEFAULT_VALIDATION,
                        help=f"validation summary of the test data (default {DEFAULT_VALIDATION}; "
                        "missing: validation_passed false)")


def _evaluate(ctx: StageContext) -> None:
    args, params = ctx.args, ctx.params
    result = evaluate(args.prepared, args.download, args.encoder, args.detector, args.index, params,
                      validation=args.validation)
    write_evaluation_outputs(result, args.out, args.plots, top_k=params.top_k)
    ctx.publish_metrics(args.metrics, result.metrics)
    ctx.log_metrics({f"evaluate/time_{k}_s": v for k, v in result.info["timings_s"].items()})
    candidate = result.candidate
    ctx.set_tags(
        {
            "lpr.encoder_sha256": candidate["encoder_sha256"],
            "lpr.test_data_version": candidate["data_version"],
            "lpr.validation_passed": str(candidate["validation_passed"]).lower(),
            "lpr.crops": candidate["crops"],
        }
    )
    ctx.log_artifacts(*(Path(args.out) / n for n in ("report.html", "predictions.json", "candidate.json", "per_query.csv")))
    s, ci = result.evaluation.summary, result.evaluation.ci
    ctx.report(
        f"evaluate: {int(s['num_queries'])} queries, {len(result.info['missing_query_ids'])} without frames, "
        f"crops {candidate['crops']}"
    )
    for name in (f"rank{k}" for k in params.ks):
        ctx.report(f"  test/{name:<7} {100 * s[name]:6.2f}%  [{100 * ci[name][0]:.2f}, {100 * ci[name][1]:.2f}]")
    misses = ", ".join(f"{kind} {n}" for kind, n in result.failures.counts.items())
    ctx.report(
        f"  test/mAP     {100 * s['mAP']:6.2f}%   test/MRR {100 * s['MRR']:6.2f}%",
        f"  rank-1 misses: {misses}",
        f"  report: {Path(args.out) / 'report.html'}   ({result.info['timings_s']['total']:.1f} s)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit status (1 with a message on bad input)."""
    return run_stage(STAGE, args, _evaluate, params=EvaluateParams, errors=(IndexFileError, FileNotFoundError, ValueError))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lpr_core.stages.evaluate``."""
    return run(parse_args(STAGE, __doc__, add_arguments, argv))


if __name__ == "__main__":
    sys.exit(main())
