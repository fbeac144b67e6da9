"""Imports sit at module top, so a module's first lines show what it depends on.

An import inside a function hides a dependency (and ``dvc.yaml``'s deps follow imports). Laziness
is kept only where start-up time is measured or a dependency is optional, and each such place is
listed in :data:`LAZY` with its reason: the CLI's command modules keep the heavy stack (torch,
MLflow, matplotlib) out of ``lpr <command> --help``, optional extras (open_clip, pyspark, kfp, a
PostgreSQL driver, the Hugging Face hub) are imported where they are used, img2dataset and Great
Expectations after the environment switches that keep them off the network, and one import
breaks a cycle. ``dags/`` is outside this walk: its parse time has its own test under ``tests/dags``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lpr_core", "components")

_CLI_HEAVY = "a module `lpr` imports to parse its command's arguments: the heavy stack loads when the command runs"
_OPTIONAL = "an optional extra, imported where it is used"
_AFTER_ENV = "imported after the environment switch that keeps it off the network is set"

#: (module, imported module or package) -> why the import stays inside a function. A module
#: listed alone (imported module None) keeps every inner import.
LAZY: dict[tuple[str, str | None], str] = {
    # the CLI's command modules: `lpr promote --help` must not load torch or MLflow
    ("lpr_core.tracking.cli", "mlflow"): _CLI_HEAVY,
    ("lpr_core.tracking.cli", "lpr_core.tracking.registry"): _CLI_HEAVY + " (MLflow)",
    ("lpr_core.tracking.cli", "lpr_core.tracking.model"): _CLI_HEAVY + " (MLflow, torch)",
    ("lpr_core.tracking.cli", "lpr_core.tracking.run"): _CLI_HEAVY + " (MLflow)",
    ("lpr_core.tracking.cli", "lpr_core.tracking.lock"): _CLI_HEAVY + " (MLflow)",
    ("lpr_core.tracking.cli", "lpr_core.models.encoder"): _CLI_HEAVY + " (torch)",
    ("lpr_core.evaluation.cli", "lpr_core.evaluation"): _CLI_HEAVY + " (matplotlib)",
    # imported after the switch that keeps them off the network is set (no update check, no
    # analytics), and img2dataset while the worker server imports it in parallel
    ("lpr_core.data.download", "img2dataset"): _AFTER_ENV + " (NO_ALBUMENTATIONS_UPDATE)",
    ("lpr_core.data.download_workers", "img2dataset"): _AFTER_ENV + " (NO_ALBUMENTATIONS_UPDATE)",
    ("lpr_core.data.fetch_guard", "img2dataset"): _AFTER_ENV + " (NO_ALBUMENTATIONS_UPDATE)",
    ("lpr_core.validation.project", "great_expectations"): _AFTER_ENV + " (GX_ANALYTICS_ENABLED)",
    ("lpr_core.validation.suites", "great_expectations"): _AFTER_ENV + " (GX_ANALYTICS_ENABLED)",
    # optional extras
    ("lpr_core.models.backbone", "open_clip"): _OPTIONAL + " (the paper's ViT-B-32 backbone)",
    ("lpr_core.models.weights", "open_clip"): _OPTIONAL + " (the paper's ViT-B-32 backbone)",
    ("lpr_core.models.weights", "huggingface_hub"): _OPTIONAL + " (open_clip's pretrained tags)",
    ("lpr_core.models.weights", "safetensors"): _OPTIONAL + " (open_clip's hub checkpoints)",
    ("lpr_core.data.download", "lpr_core.data.download_spark"): _OPTIONAL + " (the pyspark distributor)",
    ("lpr_core.data.download_spark", "pyspark"): _OPTIONAL + " (the pyspark distributor)",
    ("lpr_core.evaluation.ranking", "threadpoolctl"): _OPTIONAL + " (BLAS thread limits; without it BLAS "
                                                      "keeps its own threads)",
    ("lpr_core.tracking.lock", "psycopg2"): _OPTIONAL + " (PostgreSQL tracking stores only)",
    ("components.kfp_pipeline", "kfp"): "the KFP SDK lives in its own environment (.venv-kfp); "
                                        "without it the command says how to get it",
    # a cycle: components.podspec imports components.orchestration at its top
    ("components.orchestration", "components.podspec"): "components.podspec imports this module",
    # owned by the pod change in flight; its imports move with it
    ("components.pod", None): "its imports move with the pod change now in progress",
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _inner_imports(tree: ast.Module) -> list[tuple[str, int, str]]:
    """``(function, line, imported module)`` of every import inside a function."""
    out: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            name = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name if function is None else f"{function}.{child.name}"
            if function is not None and isinstance(child, ast.Import):
                out.extend((function, child.lineno, alias.name) for alias in child.names)
            elif function is not None and isinstance(child, ast.ImportFrom):
                module = "." * child.level + (child.module or "")
                out.extend((function, child.lineno, f"{module}.{alias.name}") for alias in child.names)
            visit(child, name)

    visit(tree, None)
    return out


def _allowed(module: str, imported: str) -> bool:
    if (module, None) in LAZY:
        return True
    return any(m == module and (imported == p or imported.startswith(p + ".")) for m, p in LAZY if p)


FILES = sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))
INNER = {_module(p): _inner_imports(ast.parse(p.read_text(encoding="utf-8"))) for p in FILES}


@pytest.mark.parametrize("module", sorted(INNER))
def test_imports_are_at_module_top_unless_listed(module):
    hidden = [f"line {line} in {function}(): import {imported}" for function, line, imported in INNER[module]
              if not _allowed(module, imported)]
    assert not hidden, (f"{module}: imports inside functions (move them to the top, or list them in LAZY "
                        f"with the reason): " + "; ".join(hidden))


def test_every_listed_lazy_import_still_exists():
    """A stale entry would let a new inner import in unnoticed."""
    stale = [(m, p) for m, p in LAZY
             if not any(p is None or imported == p or imported.startswith(p + ".") for _, _, imported in INNER.get(m, []))]
    assert not stale, f"LAZY lists imports that are no longer inside a function: {stale}"


def test_the_walk_sees_the_packages():
    assert {"lpr_core.cli", "lpr_core.runner", "components.orchestration"} <= set(INNER)
