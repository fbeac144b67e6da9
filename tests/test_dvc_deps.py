"""``dvc.yaml`` lists every ``lpr_core`` module a stage runs, and no ``lpr_core`` path it does not.

DVC reruns a stage only when one of its listed dependencies changes: a module the stage imports
but ``dvc.yaml`` omits can change results while ``dvc status`` stays clean. The dependencies are
derived here from the code itself: every ``import`` / ``from`` statement of the stage's module
(``python -m lpr_core.stages.<name>`` in its ``cmd``), transitively within ``lpr_core``, including
imports inside functions, excluding ``if TYPE_CHECKING:`` blocks (they never run). Importing a
module runs its packages' ``__init__`` too, so those count, unless they hold nothing that runs (a
docstring, ``__all__``, ``__version__``). A listed directory covers every module under it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path, PurePosixPath

import pytest

from lpr_core.dvcgraph import load_stages

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "lpr_core"
_STAGE_MODULE = re.compile(r"-m\s+(lpr_core\.stages\.\w+)")


def module_path(root: Path, name: str) -> Path | None:
    """The file of module ``name`` under ``root`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at any depth, but not under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def imported_modules(root: Path, name: str) -> set[str]:
    """Modules of ``root``'s packages that module ``name`` imports directly (``from p import m``
    counts ``p.m`` when ``m`` is a module, ``p`` otherwise; relative imports resolved)."""
    path = module_path(root, name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        out.add(target)
        out.update(f"{target}.{alias.name}" for alias in node.names if module_path(root, f"{target}.{alias.name}"))
    return {m for m in out if m.split(".")[0] == PACKAGE and module_path(root, m) is not None}


def _with_packages(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def runs_code(path: Path) -> bool:
    """False for a package ``__init__`` that holds only a docstring, ``__all__`` / ``__version__``
    and ``from __future__`` imports (changing it cannot change what a stage computes)."""
    if path.name != "__init__.py":
        return True
    for stmt in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            continue
        if isinstance(stmt, ast.Assign) and all(
            isinstance(t, ast.Name) and t.id in ("__all__", "__version__") for t in stmt.targets
        ):
            continue
        return True
    return False


def module_closure(root: Path, name: str) -> set[Path]:
    """The files (relative to ``root``) of every module ``name`` runs, transitively."""
    seen: set[str] = set()
    todo = _with_packages(name)
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if module_path(root, current) is None:  # a namespace package: no file runs
            continue
        for imported in imported_modules(root, current):
            todo.extend(_with_packages(imported))
    files = {module_path(root, m) for m in seen}
    return {p.relative_to(root) for p in files if p is not None and runs_code(p)}


def covers(dep: str, path: PurePosixPath) -> bool:
    """A listed dependency (a file or a directory) covers ``path``."""
    d = PurePosixPath(dep.rstrip("/"))
    return path == d or d in path.parents


def check_stage_deps(root: Path, cmd: str, deps: tuple[str, ...]) -> list[str]:
    """Problems of one stage's ``lpr_core`` dependencies (empty: none)."""
    m = _STAGE_MODULE.search(cmd)
    if m is None:
        return [f"cmd runs no lpr_core stage module: {cmd}"]
    module = m.group(1)
    used = sorted(PurePosixPath(p.as_posix()) for p in module_closure(root, module))
    own = PurePosixPath(*module.split(".")).with_suffix(".py")
    listed = [d for d in deps if PurePosixPath(d).parts[:1] == (PACKAGE,)]
    problems = []
    if not deps or PurePosixPath(deps[0]) != own:
        problems.append(f"its own script {own} must come first (deps start with {deps[:1]})")
    problems += [f"omits {p}" for p in used if not any(covers(d, p) for d in listed)]
    problems += [f"lists {d}, which it does not use" for d in listed if not any(covers(d, p) for p in used)]
    return problems


STAGES = load_stages(REPO / "dvc.yaml")


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_dvc_yaml_lists_exactly_the_modules_the_stage_imports(stage):
    problems = check_stage_deps(REPO, stage.cmd, stage.deps)
    assert not problems, f"dvc.yaml, stage {stage.name}: " + "; ".join(problems)


# ------------------------------------------------------------------------ the derivation itself


def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def toy(tmp_path) -> Path:
    """A small ``lpr_core`` tree with every kind of import the derivation must follow (or not)."""
    return _package(tmp_path, {
        "lpr_core/__init__.py": '"""Docstring only."""\n__version__ = "0"\n',
        "lpr_core/stages/__init__.py": '"""Stages."""\n',
        "lpr_core/stages/one.py": (
            "from __future__ import annotations\n"
            "from typing import TYPE_CHECKING\n"
            "import numpy\n"
            "from lpr_core import io\n"
            "from lpr_core.lib import helper\n"
            "if TYPE_CHECKING:\n"
            "    from lpr_core.typing_only import T\n"
            "def main():\n"
            "    from lpr_core.lazy import thing\n"
            "    return thing\n"
        ),
        "lpr_core/io.py": "import os\n",
        "lpr_core/lib/__init__.py": "from lpr_core.lib.core import value\n",
        "lpr_core/lib/core.py": "from .shared import x\n",
        "lpr_core/lib/shared.py": "x = 1\n",
        "lpr_core/lib/helper.py": "from . import core\n",
        "lpr_core/lazy.py": "import lpr_core.ns.mod\nthing = 2\n",
        "lpr_core/ns/mod.py": "y = 3\n",  # a namespace package (no __init__)
        "lpr_core/typing_only.py": "T = int\n",
        "lpr_core/unused.py": "\n",
    })


def test_derivation_follows_function_level_relative_and_package_imports(toy):
    files = {p.as_posix() for p in module_closure(toy, "lpr_core.stages.one")}
    assert files == {
        "lpr_core/stages/one.py",
        "lpr_core/io.py",  # `from lpr_core import io`: a module, not the package
        "lpr_core/lib/__init__.py",  # runs before lpr_core.lib.helper, and imports core
        "lpr_core/lib/helper.py",
        "lpr_core/lib/core.py",
        "lpr_core/lib/shared.py",  # relative import
        "lpr_core/lazy.py",  # inside a function
        "lpr_core/ns/mod.py",
    }  # not: typing_only (TYPE_CHECKING), unused, the docstring-only __init__ files


def test_a_missing_a_stale_and_a_misplaced_dependency_are_each_reported(toy):
    cmd = "python -m lpr_core.stages.one --out x"
    good = ("lpr_core/stages/one.py", "lpr_core/io.py", "lpr_core/lib", "lpr_core/lazy.py", "lpr_core/ns", "data/in")
    assert check_stage_deps(toy, cmd, good) == []
    assert check_stage_deps(toy, cmd, tuple(d for d in good if d != "lpr_core/lazy.py")) == [
        "omits lpr_core/lazy.py"
    ]
    assert check_stage_deps(toy, cmd, (*good, "lpr_core/unused.py")) == [
        "lists lpr_core/unused.py, which it does not use"
    ]
    assert check_stage_deps(toy, cmd, (*good, "lpr_core/gone.py")) == ["lists lpr_core/gone.py, which it does not use"]
    moved = (good[1], good[0], *good[2:])
    assert check_stage_deps(toy, cmd, moved)[0].startswith("its own script lpr_core/stages/one.py must come first")
    assert check_stage_deps(toy, "echo hi", good) == ["cmd runs no lpr_core stage module: echo hi"]
