"""DVC stage ``download``: the four LPR4M URL lists -> images, manifests and a summary.

    python -m lpr_core.stages.download --urls DIR --out DIR [--params params.yaml]

Reads the ``download`` section of ``params.yaml`` (:class:`lpr_core.data.download.DownloadParams`)
and, for every URL list found in ``--urls`` (a missing list is skipped with a message), runs
img2dataset (``keep_ratio``, incremental), retries failed URLs one by one and writes:

- ``<out>/<split>_<kind>/``: img2dataset's shards (and ``retried/`` for recovered samples);
- ``<out>/manifests/<split>_<kind>.parquet``: every input URL once, with its id, path, sizes,
  status, error and sha256 (``FRAME_MANIFEST_SCHEMA`` / ``IMAGE_MANIFEST_SCHEMA``);
- ``<out>/download_summary.json``: per list total / success / recovered / failed by reason, and
  the URLs the fetch guard refused (private address, too large, too slow).

Restart: img2dataset works in the stage's state folder (:mod:`lpr_core.data.download_state`),
``<LPR_STATE_URL or .lpr/state>/download/<key>/``, keyed by the URL lists' sha256 and the
result-bearing params, and ``--out`` is published from it in one step when the run ends. A rerun
after an interruption (``dvc repro``, which deletes ``--out`` first, or a retried pod sharing an
object-store ``LPR_STATE_URL``) resumes: complete shards are not downloaded again.

Exit status 0 when every list was processed (failed URLs are recorded, the ``validate`` stage gates
on them), 1 on unusable input or configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lpr_core.data.download import DownloadError, DownloadParams, format_summary
from lpr_core.data.download_state import download_resumable
from lpr_core.data.manifest import REFUSAL_REASONS, ManifestError
from lpr_core.formats.report import FormatError
from lpr_core.ids import InvalidIdError
from lpr_core.runner import StageContext, parse_args, run_stage

__all__ = ["STAGE", "add_arguments", "summary_metrics", "run", "main"]

STAGE = "download"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stage's command-line options."""
    parser.add_argument("--urls", required=True, type=Path, help="directory holding the LPR4M URL files")
    parser.add_argument("--out", required=True, type=Path, help="output directory (replaced whole when the run ends)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--metrics", type=Path, default=None,
                        help="also write flat metrics (DVC metrics file) here, outside --out")


def summary_metrics(summary: dict) -> dict[str, float]:
    """Flat numeric metrics of a download summary: per list total, success rate, recovered, failed,
    and of the failed, those the fetch guard refused (in all and per reason)."""
    metrics: dict[str, float] = {}
    for name, s in summary.get("lists", {}).items():
        if "total" not in s:
            continue
        total = s["total"] or 0
        metrics[f"download/{name}/total"] = total
        metrics[f"download/{name}/success_rate"] = round(s["success"] / total, 6) if total else 0.0
        metrics[f"download/{name}/recovered_by_retry"] = s.get("recovered_by_retry", 0)
        metrics[f"download/{name}/failed"] = s.get("failed", 0)
        metrics[f"download/{name}/refused"] = s.get("refused", 0)
        for reason in REFUSAL_REASONS:
            metrics[f"download/{name}/{reason}"] = s.get("refused_by_reason", {}).get(reason, 0)
    return metrics


def _download(ctx: StageContext) -> None:
    args = ctx.args
    summary = download_resumable(args.urls, args.out, ctx.params, progress=not args.no_progress, log=ctx.log.info)
    ctx.publish_metrics(args.metrics, summary_metrics(summary))
    ctx.log_artifacts(args.out / "download_summary.json")
    ctx.report(format_summary(summary), f"summary: {args.out / 'download_summary.json'}")


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit status."""
    return run_stage(STAGE, args, _download, params=DownloadParams,
                     errors=(DownloadError, ManifestError, FormatError, InvalidIdError))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lpr_core.stages.download``."""
    return run(parse_args(STAGE, __doc__, add_arguments, argv))


if __name__ == "__main__":
    sys.exit(main())
