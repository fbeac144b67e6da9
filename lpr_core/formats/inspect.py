"""``lpr inspect DIR [--strict]``: read every LPR4M file in a directory and report rows and rejects.

The files are found anywhere under DIR (a release unpacked into sub-folders included; see
:func:`lpr_core.formats.discovery.find_lpr4m_files`) and named by their path under DIR. Every
file is read leniently, so that all its problems are listed; per file the command prints
the rows read, the rows rejected with the first few reasons (file:line), and an error line for a
file that cannot be read at all. Exit status: 0, or 1 when a file cannot be read, or with
``--strict`` when any row was rejected; 2 when DIR is not a directory, holds no LPR4M file, or holds
two candidates for one file kind (both paths are named).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from lpr_core.formats.discovery import DiscoveryError, find_lpr4m_files
from lpr_core.formats.readers import scan
from lpr_core.formats.report import FormatError

log = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "inspect_dir"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lpr inspect``."""
    parser.add_argument("directory", metavar="DIR", help="directory holding LPR4M files")
    parser.add_argument("--strict", action="store_true", help="exit non-zero when any row is rejected")
    parser.add_argument(
        "--show", type=int, default=5, metavar="N", help="rejects listed per file (default 5)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes parsing training_videoinfo (default: up to 2)",
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar on large files")


def inspect_dir(
    directory, *, show: int = 5, workers: int = 1, progress: bool = False, out=None
) -> tuple[int, int]:
    """Print the report of every LPR4M file under ``directory``.

    Returns:
        ``(rows_rejected, files_failed)`` over all files.

    Raises:
        lpr_core.formats.discovery.DiscoveryError: two candidates for one file kind.
    """
    out = out or sys.stdout
    found = find_lpr4m_files(directory)
    total_rejected = 0
    failed = 0
    for kind, files in found.items():
        for path in files:
            name = path.relative_to(Path(directory)).as_posix()
            try:
                report = scan(kind, path, workers=workers, progress=progress)
            except (FormatError, OSError) as exc:
                failed += 1
                print(f"{name}  [{kind}]  ERROR: {exc}", file=out)
                continue
            total_rejected += report.rows_rejected
            empty = "  (empty)" if report.rows_read == 0 else ""
            print(
                f"{name}  [{kind}]  rows={report.rows_read} ok={report.rows_ok} "
                f"rejected={report.rows_rejected}{empty}",
                file=out,
            )
            for r in report.rejects[:show]:
                print(f"    line {r.line}: {r.reason}", file=out)
            if report.rows_rejected > show:
                print(f"    ... and {report.rows_rejected - show} more", file=out)
    return total_rejected, failed


def run(args: argparse.Namespace) -> int:
    """Run ``lpr inspect``."""
    try:
        found = find_lpr4m_files(args.directory)
    except (NotADirectoryError, DiscoveryError) as exc:
        log.error("lpr inspect: %s", exc)
        return 2
    if not found:
        log.error("lpr inspect: no LPR4M file in %s", args.directory)
        return 2
    n_files = sum(len(v) for v in found.values())
    print(f"{args.directory}: {n_files} LPR4M file(s)")
    rejected, failed = inspect_dir(
        args.directory, show=max(0, args.show), workers=max(1, args.workers), progress=args.progress
    )
    print(f"total: {rejected} row(s) rejected, {failed} file(s) unreadable")
    if failed:
        return 1
    if args.strict and rejected:
        return 1
    return 0
