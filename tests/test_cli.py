"""The `lpr` command: fast help, clear usage errors."""

import subprocess
import sys
import time

import pytest

from lpr_core import cli


def test_help_lists_registered_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: lpr" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_every_command_module_imports_and_builds_its_parser():
    import argparse
    import importlib

    for name, (module, _help) in cli.COMMANDS.items():
        mod = importlib.import_module(module)
        parser = argparse.ArgumentParser(prog=f"lpr {name}")
        mod.add_arguments(parser)
        assert callable(mod.run), name


def test_lpr_help_does_not_import_the_heavy_stack():
    code = (
        "import sys, lpr_core.cli as c\n"
        "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'mlflow', 'dvc', 'great_expectations', 'airflow', 'faiss') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY=\n" in out, out
    assert time.perf_counter() - t0 < 10


def test_importing_lpr_core_has_no_side_effects(tmp_path):
    code = "import os, lpr_core, lpr_core.ids, lpr_core.formats.schema; print(sorted(os.listdir('.')))"
    import os
    from pathlib import Path

    import lpr_core

    env = {**os.environ, "PYTHONPATH": str(Path(lpr_core.__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
