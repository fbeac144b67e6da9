"""The stage graph of ``dvc.yaml``: the single definition of every stage.

The demo and the Airflow DAG both derive their steps from here, so a stage is never listed twice
by hand. Only YAML is parsed (no dvc import), which keeps DAG parsing cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml


@dataclass(frozen=True)
class Stage:
    """One stage of ``dvc.yaml``: its name, command, dependencies and outputs (paths as written)."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]
    upstream: tuple[str, ...]


def _paths(entries: list | None) -> tuple[str, ...]:
    out = []
    for e in entries or []:
        out.append(next(iter(e)) if isinstance(e, dict) else str(e))
    return tuple(out)


def _params(entries: list | None) -> tuple[str, ...]:
    out: list[str] = []
    for e in entries or []:
        if isinstance(e, dict):  # {params_file: [keys]}
            for keys in e.values():
                out.extend(str(k) for k in keys or [])
        else:
            out.append(str(e))
    return tuple(out)


def _inside(path: str, out: str) -> bool:
    p, o = PurePosixPath(path), PurePosixPath(out)
    return p == o or o in p.parents


def load_stages(dvc_yaml: str | Path = "dvc.yaml") -> list[Stage]:
    """Stages of ``dvc_yaml`` in a topological order (file order among independent stages).

    A stage is upstream of another when one of the other's deps is, or lies inside, one of its
    outs (metrics and plots count as outs).

    Raises:
        ValueError: the file has no stages, a cmd is missing, or the graph has a cycle.
    """
    path = Path(dvc_yaml)
    doc = yaml.safe_load(path.read_text()) or {}
    raw = doc.get("stages") or {}
    if not raw:
        raise ValueError(f"{path}: no stages")
    outs: dict[str, tuple[str, ...]] = {}
    for name, spec in raw.items():
        if "foreach" in spec or "matrix" in spec:
            raise ValueError(f"{path}: stage {name!r}: foreach/matrix stages are not supported here")
        if not spec.get("cmd"):
            raise ValueError(f"{path}: stage {name!r} has no cmd")
        outs[name] = _paths(spec.get("outs")) + _paths(spec.get("metrics")) + _paths(spec.get("plots"))
    stages: dict[str, Stage] = {}
    for name, spec in raw.items():
        deps = _paths(spec.get("deps"))
        upstream = tuple(
            other for other in raw if other != name and any(_inside(d, o) for d in deps for o in outs[other])
        )
        cmd = spec["cmd"] if isinstance(spec["cmd"], str) else " && ".join(spec["cmd"])
        stages[name] = Stage(name, cmd, deps, outs[name], _params(spec.get("params")), upstream)
    order: list[str] = []
    visiting: set[str] = set()

    def visit(n: str) -> None:
        if n in order:
            return
        if n in visiting:
            raise ValueError(f"{path}: the stage graph has a cycle through {n!r}")
        visiting.add(n)
        for u in stages[n].upstream:
            visit(u)
        visiting.discard(n)
        order.append(n)

    for n in stages:
        visit(n)
    return [stages[n] for n in order]
