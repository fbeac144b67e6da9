"""The ``lpr`` command.

Each sub-command lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs (``--help`` of a command
imports just that module), so ``lpr --help`` stays fast: no torch, mlflow or dvc at import time.

Logging is set up here, once, for whichever command runs (:mod:`lpr_core.logs`): messages on
stderr, ``lpr -v COMMAND`` for debug messages, ``lpr -q COMMAND`` for warnings and errors only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lpr_core.logs import add_verbosity_arguments, configured, verbosity

log = logging.getLogger(__name__)

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("lpr_core.formats.inspect", "read every LPR4M file in a directory and report rows/rejects"),
    "synth": ("lpr_core.synth.cli", "write a synthetic world in the exact LPR4M formats"),
    "serve": ("lpr_core.synth.server", "serve a world's images over loopback HTTP, with fault injection"),
    "demo": ("lpr_core.demo", "run the whole pipeline on the synthetic world and print a summary"),
    "promote": ("lpr_core.tracking.cli", "register an evaluated model and run the promotion gate"),
    "rollback": ("lpr_core.tracking.rollback_cli", "move the champion alias back to the previous champion"),
    "ui": ("lpr_core.tracking.ui_cli", "open the MLflow UI on the project's tracking store"),
    "params": ("lpr_core.params_overrides", "check params overrides (a preset, JSON, KEY=VALUE) and write them into params.yaml"),
    "evaluate-predictions": ("lpr_core.evaluation.cli", "score an official-format prediction JSON: rank-1/3/5/10, mAP, MRR"),
}


def _build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lpr", description="LPR MLOps workflow: livestreaming product recognition.")
    add_verbosity_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lpr`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    with configured(verbosity(args)):
        try:
            return int(module.run(args) or 0)
        except KeyboardInterrupt:
            log.warning("interrupted")
            return 130


if __name__ == "__main__":
    sys.exit(main())
