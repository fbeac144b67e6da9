"""The repository's own DVC set-up (``.gitignore``, ``.dvc/config``) in a fresh checkout, with real git and dvc.

A one-stage project gets the repository's files; the stage is a trivial command, so these tests
take seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.project import REPO, without_lock_rule

DVC_YAML = "stages:\n  hello:\n    cmd: python -c \"open('hello.txt', 'w').write('hi')\"\n    outs: [hello.txt]\n"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _commit(root: Path) -> None:
    for args in (["add", "-A"], ["-c", "user.name=lpr-tests", "-c", "user.email=lpr-tests@example.invalid",
                                 "commit", "-q", "-m", "checkout"]):
        proc = _run(["git", *args], root)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A git + DVC project holding a one-stage dvc.yaml and the repository's ``.dvc/config``."""
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "dvc.yaml").write_text(DVC_YAML)
    assert _run(["git", "init", "-q"], root).returncode == 0
    assert _dvc(root, "init", "-q").returncode == 0
    shutil.copy2(REPO / ".dvc" / "config", root / ".dvc" / "config")
    return root


def test_dvc_refuses_to_load_a_pipeline_whose_lock_git_ignores(checkout):
    (checkout / ".gitignore").write_text("/dvc.lock\n")
    _commit(checkout)
    for args in (("status",), ("repro", "--dry"), ("exp", "run", "--dry")):
        proc = _dvc(checkout, *args)
        assert proc.returncode != 0, args
        assert "dvc.lock' is git-ignored" in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)
    # the same project without the rule works
    (checkout / ".gitignore").write_text(without_lock_rule("/dvc.lock\n/data/\n"))
    assert (checkout / ".gitignore").read_text() == "/data/\n"
    proc = _dvc(checkout, "repro")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (checkout / "dvc.lock").is_file()


def test_the_repository_gitignore_leaves_dvc_lock_to_git(checkout):
    """``dvc.lock`` must not be git-ignored: DVC refuses every pipeline command then (see above),
    and experiments and ``dvc pull`` in a clone need the lock committed."""
    shutil.copy2(REPO / ".gitignore", checkout / ".gitignore")
    ignored = _run(["git", "check-ignore", "-v", "dvc.lock"], checkout)
    assert ignored.returncode == 1, f"the repository's .gitignore ignores dvc.lock: {ignored.stdout.strip()}"
    proc = _dvc(checkout, "status")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_default_remote_is_the_ignored_dvc_remote_folder_of_the_checkout(checkout):
    """``.dvc/config``'s remote ``local`` is ``dvc-remote/`` in the checkout, the folder ``.gitignore``
    ignores (a relative url is relative to ``.dvc/``)."""
    # (without a dvc.lock rule, which would stop every dvc command: see the tests above)
    (checkout / ".gitignore").write_text(without_lock_rule((REPO / ".gitignore").read_text()))
    (checkout / "notes.txt").write_text("versioned by DVC\n")
    assert _dvc(checkout, "add", "-q", "notes.txt").returncode == 0
    proc = _dvc(checkout, "push")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outside = checkout.parent / "dvc-remote"
    assert not outside.exists(), f"the default remote points outside the checkout, at {outside}"
    assert (checkout / "dvc-remote" / "files").is_dir()
    assert _run(["git", "check-ignore", "-q", "dvc-remote/files"], checkout).returncode == 0
