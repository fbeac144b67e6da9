"""The one runner behind every DVC stage: command line, params section, MLflow run, errors, logs.

A stage module (:mod:`lpr_core.stages`) declares its options and a body; :func:`run_stage` does the
rest, the same way for every stage:

- ``--params`` (default ``params.yaml``) is added to the stage's options, and the stage's section
  is read into its frozen dataclass (:func:`lpr_core.config.load_section`): a typo is an error
  naming the key, before anything runs;
- the body runs inside the stage's MLflow run (:func:`lpr_core.tracking.run.stage_run`: the
  params section logged, the lineage tags set), on rank 0 only under ``torchrun`` (the other
  ranks run the body with no run: ``ctx.tracker`` is None there);
- logging is set up for the process (:func:`lpr_core.logs.configured`): ``<stage>: message`` on
  stderr (``<stage>: warning: ...``, ``<stage>: error: ...``), ``-v``/``-q`` for more or fewer
  messages; library modules log through ``logging.getLogger(__name__)``;
- what the stage reports as its result (``ctx.report``) goes to stdout once the body succeeded;
- bad input (a :class:`lpr_core.config.ConfigError`, a :class:`lpr_core.inputs.StageInputError`
  or an error type the stage names) is one line on stderr and the stage's error status (1 unless
  the stage says otherwise), never a traceback; any other exception propagates (and marks the
  MLflow run FAILED);
- metrics files are written atomically (:func:`publish_metrics`) and logged to the run.

Example (a whole stage)::

    def add_arguments(parser):
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--metrics", required=True, type=Path)

    def body(ctx):
        result = library_function(ctx.args.out, ctx.params)
        ctx.publish_metrics(ctx.args.metrics, result.metrics)
        ctx.report(f"wrote {ctx.args.out}")

    def run(args):
        return run_stage("my_stage", args, body, params=MyStageParams)

    def main(argv=None):
        return run(parse_args("my_stage", __doc__, add_arguments, argv))
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpr_core.config import ConfigError, load_section, to_mapping
from lpr_core.inputs import StageInputError
from lpr_core.io import atomic_write_json
from lpr_core.logs import add_verbosity_arguments, configured, verbosity
from lpr_core.tracking.run import StageRun, stage_run

__all__ = [
    "EXIT_OK",
    "EXIT_BAD_INPUT",
    "StageContext",
    "parse_args",
    "stage_logging",
    "is_main_rank",
    "publish_metrics",
    "run_stage",
]

EXIT_OK = 0
#: Unusable input or configuration (a stage may choose another status, e.g. ``validate``: 2).
EXIT_BAD_INPUT = 1


@dataclass
class StageContext:
    """What a stage body gets from :func:`run_stage`.

    Attributes:
        name: the stage's name (its params section, its MLflow run name).
        args: the parsed command line.
        params: the stage's params section (its dataclass).
        log: the stage's logger (``<stage>: ...`` on stderr).
        tracker: the stage's MLflow run; None on ranks other than 0 of a ``torchrun`` job.
    """

    name: str
    args: argparse.Namespace
    params: Any
    log: logging.Logger
    tracker: StageRun | None = None
    _report: list[str] = field(default_factory=list)

    def report(self, *lines: str) -> None:
        """Lines of the stage's result, printed on stdout once the body has succeeded."""
        self._report.extend(lines)

    def publish_metrics(self, path: str | os.PathLike[str] | None, metrics: Mapping[str, Any]) -> None:
        """Write the DVC metrics file ``path`` (skipped when None) and log the metrics to the run."""
        if path is not None:
            publish_metrics(path, metrics)
        self.log_metrics(metrics)

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Log the finite numeric ``metrics`` to the run (nothing without a run)."""
        if self.tracker is not None:
            self.tracker.log_metrics({k: v for k, v in metrics.items() if _is_finite_number(v)})

    def log_artifacts(self, *paths: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Log files or directories to the run (nothing without a run; missing paths are skipped)."""
        if self.tracker is not None:
            for path in paths:
                self.tracker.log_artifact(path, artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run (nothing without a run)."""
        if self.tracker is not None:
            self.tracker.set_tags(tags)


def parse_args(
    name: str,
    doc: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    argv: list[str] | None = None,
) -> argparse.Namespace:
    """Parse a stage's command line: its own options plus ``--params`` and ``-v``/``-q``.

    Args:
        name: the stage (``python -m lpr_core.stages.<name>``).
        doc: the stage module's docstring (its first line is the description).
        add_arguments: adds the stage's own options.
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m lpr_core.stages.{name}", description=(doc or "").strip().split("\n")[0] or None
    )
    add_arguments(parser)
    parser.add_argument(
        "--params", default=Path("params.yaml"), type=Path,
        help=f"parameter file (its {name} section; default params.yaml)",
    )
    add_verbosity_arguments(parser)
    return parser.parse_args(argv)


@contextlib.contextmanager
def stage_logging(stage: str, verbose: int = 0) -> Iterator[logging.Logger]:
    """Send the ``lpr_core`` loggers to stderr as ``<stage>: message`` while the block runs.

    The ``lpr_core`` logger is restored afterwards (a stage run in-process, e.g. by a test, leaves
    logging as it found it).

    Args:
        stage: the stage's name, put before every line.
        verbose: the verbosity (:func:`lpr_core.logs.level_for`: 0 info, 1 debug, -1 warnings only).

    Yields:
        The stage's own logger (``lpr_core.stages.<stage>``).
    """
    with configured(verbose, prefix=stage):
        yield logging.getLogger(f"lpr_core.stages.{stage}")


def is_main_rank() -> bool:
    """True unless this process is a rank other than 0 of a ``torchrun`` job (``RANK`` set)."""
    rank = os.environ.get("RANK", "0").strip() or "0"
    return not rank.isdigit() or int(rank) == 0


def _is_finite_number(value: Any) -> bool:
    try:
        return not isinstance(value, str) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _finite(value: Any) -> Any:
    # JSON has no NaN/inf: write null (DVC and browsers choke on bare NaN).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def publish_metrics(path: str | os.PathLike[str], metrics: Mapping[str, Any]) -> Path:
    """Write a DVC metrics file atomically: JSON, keys sorted, NaN and infinities as null."""
    return atomic_write_json(path, _finite(metrics))


def run_stage(
    name: str,
    args: argparse.Namespace,
    body: Callable[[StageContext], int | None],
    *,
    params: type | None = None,
    load: Callable[[Path], Any] | None = None,
    check: Callable[[argparse.Namespace], None] | None = None,
    errors: tuple[type[BaseException], ...] = (),
    error_status: int = EXIT_BAD_INPUT,
) -> int:
    """Run a stage body with the shared set-up (see the module docstring).

    Args:
        name: the stage (its params section and MLflow run name).
        args: the parsed command line (:func:`parse_args`; ``args.params`` is the params file).
        body: the stage's work; returns its exit status (None: 0).
        params: the dataclass of the stage's params section.
        load: reads the params section from the file instead (when it needs more than one section).
        check: checks the command line before anything else (raise one of the handled errors).
        errors: further exception types that mean bad input (reported in one line).
        error_status: the exit status of bad input or configuration.

    Returns:
        The exit status.
    """
    if (params is None) == (load is None):
        raise TypeError("run_stage needs exactly one of params= and load=")
    main = is_main_rank()
    # ranks other than 0 of a torchrun job say only warnings and errors, whatever -v asks
    with stage_logging(name, verbosity(args) if main else min(verbosity(args), -1)) as log:
        try:
            if check is not None:
                check(args)
            section = load(args.params) if load is not None else load_section(params, name, args.params)
            ctx = StageContext(name, args, section, log)
            if main:
                with stage_run(name, {name: to_mapping(section)}) as tracker:
                    ctx.tracker = tracker
                    status = body(ctx)
            else:
                status = body(ctx)
        except (ConfigError, StageInputError, *errors) as exc:
            log.error("%s", exc)
            return error_status
    if ctx._report:
        print("\n".join(ctx._report), flush=True)
    return EXIT_OK if status is None else int(status)
