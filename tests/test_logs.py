"""Logging set up once by the entry points: messages on stderr, a level switch, idempotent set-up,
the loggers restored after an in-process run; the ``lpr`` command and the stage runner use it."""

from __future__ import annotations

import argparse
import logging
import sys
import types

import pytest

from lpr_core import cli
from lpr_core.logs import LOGGER, add_verbosity_arguments, configure, configured, level_for, verbosity
from lpr_core.runner import parse_args, stage_logging

lib = logging.getLogger("lpr_core.some.library")


@pytest.fixture
def pristine():
    """The ``lpr_core`` logger as a test found it, put back afterwards (configure() leaves it set)."""
    logger = logging.getLogger(LOGGER)
    saved = logger.level, list(logger.handlers)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in saved[1]:
        logger.addHandler(handler)
    logger.setLevel(saved[0])


def speak() -> None:
    lib.debug("a detail")
    lib.info("a step")
    lib.warning("a doubt")


def test_messages_reach_stderr_as_they_are_written_and_never_stdout(pristine, capsys):
    configure()
    speak()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "a step\na doubt\n"


def test_the_verbosity_switches_the_level(pristine, capsys):
    assert [level_for(v) for v in (-2, -1, 0, 1, 3)] == [
        logging.WARNING, logging.WARNING, logging.INFO, logging.DEBUG, logging.DEBUG,
    ]
    configure(1)
    speak()
    assert capsys.readouterr().err == "a detail\na step\na doubt\n"
    configure(-1)
    speak()
    assert capsys.readouterr().err == "a doubt\n"


def test_configuring_twice_keeps_one_handler_and_the_last_settings(pristine, capsys):
    configure(-1, prefix="first")
    configure(0, prefix="second")
    assert len(pristine.handlers) == 1
    speak()
    assert capsys.readouterr().err == "second: a step\nsecond: warning: a doubt\n"


def test_configured_restores_the_logger_it_found(pristine, capsys):
    before = list(pristine.handlers), pristine.level
    with configured(1, prefix="stage"):
        lib.debug("inside")
    lib.warning("outside")  # no handler of ours any more: not written by us
    assert (list(pristine.handlers), pristine.level) == before
    assert capsys.readouterr().err.splitlines()[0] == "stage: inside"


def test_an_exception_is_logged_with_its_traceback(pristine, capsys):
    configure(prefix="toy")
    try:
        raise KeyError("k")
    except KeyError:
        lib.exception("failed")
    err = capsys.readouterr().err
    assert err.startswith("toy: error: failed\nTraceback") and "KeyError: 'k'" in err


def test_verbose_and_quiet_options_count_and_exclude_each_other(capsys):
    parser = argparse.ArgumentParser()
    add_verbosity_arguments(parser)
    assert verbosity(parser.parse_args([])) == 0
    assert verbosity(parser.parse_args(["-vv"])) == 2
    assert verbosity(parser.parse_args(["--quiet"])) == -1
    assert verbosity(argparse.Namespace()) == 0  # arguments parsed without the options
    with pytest.raises(SystemExit):
        parser.parse_args(["-v", "-q"])
    assert "not allowed with" in capsys.readouterr().err


def _toy_command(monkeypatch, seen: list) -> None:
    def run(args):
        seen.append((len(logging.getLogger(LOGGER).handlers), args.verbose))
        speak()
        return 0

    def add_arguments(parser):
        parser.add_argument("--verbose", action="store_true")  # a command's own option keeps its meaning

    module = types.ModuleType("toy_command")
    module.add_arguments, module.run = add_arguments, run
    monkeypatch.setitem(cli.COMMANDS, "toy", ("toy_command", "a toy command"))
    monkeypatch.setitem(sys.modules, "toy_command", module)


def test_the_lpr_command_configures_logging_once_for_the_command_it_runs(pristine, monkeypatch, capsys):
    seen: list = []
    _toy_command(monkeypatch, seen)
    handlers = list(pristine.handlers)
    assert cli.main(["toy"]) == 0
    assert capsys.readouterr() == ("", "a step\na doubt\n")
    assert cli.main(["-v", "toy", "--verbose"]) == 0
    assert capsys.readouterr().err == "a detail\na step\na doubt\n"
    assert cli.main(["--quiet", "toy"]) == 0
    assert capsys.readouterr().err == "a doubt\n"
    assert seen == [(len(handlers) + 1, False), (len(handlers) + 1, True), (len(handlers) + 1, False)]
    assert pristine.handlers == handlers  # left as it was found


def test_a_stage_takes_verbose_and_quiet_and_prefixes_its_name(pristine, capsys):
    def no_options(parser):
        pass

    for argv, expected in (
        ([], "toy: a step\ntoy: warning: a doubt\n"),
        (["-v"], "toy: a detail\ntoy: a step\ntoy: warning: a doubt\n"),
        (["-q"], "toy: warning: a doubt\n"),
    ):
        with stage_logging("toy", verbosity(parse_args("toy", None, no_options, argv))):
            speak()
        assert capsys.readouterr() == ("", expected)
