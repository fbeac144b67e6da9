"""Logging for the entry points: set up once, by the ``lpr`` command and by the stage runner.

Library modules never set logging up; they log through a module logger
(``logging.getLogger(__name__)``, so under ``lpr_core``) and leave the choice of stream, format and
level to the process. The two entry points call :func:`configure` (or :func:`configured`, which
restores the loggers afterwards) once:

- the ``lpr`` command (:mod:`lpr_core.cli`): plain ``message`` lines on stderr, ``lpr -v`` for
  debug messages, ``lpr -q`` for warnings and errors only;
- the stage runner (:mod:`lpr_core.runner`): ``<stage>: message`` on stderr, ``<stage>: warning:
  ...`` and ``<stage>: error: ...`` for the levels above info.

A command's *result* (a table, a decision, a JSON document) is not a log: it is printed on stdout.

Example::

    with configured(verbosity(args)):
        return command(args)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["LOGGER", "add_verbosity_arguments", "configure", "configured", "level_for", "verbosity"]

#: The logger every library module logs under (``lpr_core.<module>``).
LOGGER = "lpr_core"
_HANDLER_NAME = "lpr-stderr"


def level_for(verbosity: int) -> int:
    """The logging level of a verbosity: 0 is info, 1 or more debug (``-v``), -1 or less warning (``-q``)."""
    if verbosity > 0:
        return logging.DEBUG
    return logging.INFO if verbosity == 0 else logging.WARNING


class _Formatter(logging.Formatter):
    """``message``, or with a prefix ``<prefix>: message`` and ``<prefix>: error: message``."""

    def __init__(self, prefix: str | None) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if self.prefix:
            level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
            text = f"{self.prefix}: {level}{text}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (a redirect made after set-up is followed)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never raise
            self.handleError(record)


def configure(verbosity: int = 0, *, prefix: str | None = None) -> logging.Logger:
    """Send the ``lpr_core`` loggers to stderr at the level ``verbosity`` picks.

    Idempotent: a second call replaces the handler of the first instead of adding one, so a
    message is written once; the last call's level and prefix hold.

    Args:
        verbosity: 0 info, 1 or more debug, -1 or less warnings and errors only (:func:`level_for`).
        prefix: put before every line as ``<prefix>: `` (the stage runner's stage name); None
            writes the message alone.

    Returns:
        The ``lpr_core`` logger.
    """
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(old)
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(_Formatter(prefix))
    logger.addHandler(handler)
    logger.setLevel(level_for(verbosity))
    return logger


@contextlib.contextmanager
def configured(verbosity: int = 0, *, prefix: str | None = None) -> Iterator[logging.Logger]:
    """:func:`configure` for the length of a block; the ``lpr_core`` logger is restored afterwards.

    An entry point run in-process (by a test, by the demo) leaves logging as it found it.
    """
    logger = logging.getLogger(LOGGER)
    saved_level, saved_handlers = logger.level, list(logger.handlers)
    try:
        yield configure(verbosity, prefix=prefix)
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in saved_handlers:
            logger.addHandler(handler)
        logger.setLevel(saved_level)


def add_verbosity_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``-v/--verbose`` and ``-q/--quiet`` (each may repeat) to a command line; see :func:`verbosity`."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="log_verbose", action="count", default=0,
                       help="more messages on stderr (debug)")
    group.add_argument("-q", "--quiet", dest="log_quiet", action="count", default=0,
                       help="only warnings and errors on stderr")


def verbosity(args: argparse.Namespace) -> int:
    """The verbosity of parsed arguments: ``-v`` counts up, ``-q`` down (0 without either option)."""
    return int(getattr(args, "log_verbose", 0) or 0) - int(getattr(args, "log_quiet", 0) or 0)
