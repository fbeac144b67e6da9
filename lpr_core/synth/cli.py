"""``lpr synth``: write a synthetic world in the exact LPR4M formats."""

from __future__ import annotations

import argparse
import logging

from lpr_core.synth.families import DEFAULT_FAMILY, FAMILIES
from lpr_core.synth.preview import make_contact_sheet
from lpr_core.synth.world import DEFAULT_URL_PREFIX, SIZES, WorldExistsError, generate_world

log = logging.getLogger(__name__)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lpr synth``."""
    parser.add_argument("--out", required=True, help="world directory to write")
    parser.add_argument("--size", choices=list(SIZES), default="demo", help="world size (default demo)")
    parser.add_argument("--family", choices=list(FAMILIES), default=DEFAULT_FAMILY,
                        help="world family (default: the demo's world; release: the LPR4M release as unpacked, "
                             "its own frame geometry, JSON lists, boxes past the edge, sub-folders, no slice labels)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--url-prefix", default=DEFAULT_URL_PREFIX,
                        help=f"prefix of every URL, ending with '/' (default {DEFAULT_URL_PREFIX})")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: the CPUs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT even when it is a non-empty directory that is not a world")
    parser.add_argument("--preview", default=None, metavar="PNG", help="also write a contact sheet of test clips")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Generate the world and print its counts."""
    try:
        summary = generate_world(args.out, size=args.size, seed=args.seed, url_prefix=args.url_prefix,
                                 family=args.family, workers=args.workers, overwrite=args.overwrite,
                                 progress=not args.quiet)
    except (WorldExistsError, ValueError) as exc:
        log.error("lpr synth: error: %s", exc)
        return 1
    family = "" if summary.family == "default" else f"{summary.family} "
    print(f"wrote {summary.size} {family}world (seed {summary.seed}) to {summary.out_dir} in {summary.seconds:.1f} s")
    for key, value in summary.counts.items():
        print(f"  {key:20s} {value}")
    if args.preview:
        print(f"preview: {make_contact_sheet(summary.out_dir, args.preview)}")
    return 0
