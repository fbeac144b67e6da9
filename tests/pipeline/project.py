"""A real checkout of the project's pipeline on the ``tiny`` synthetic world, for the slow tests.

:func:`build_template` makes, once per test session, a temporary project directory: the
repository's ``dvc.yaml``, ``.gitignore`` (less a rule ignoring ``dvc.lock``, which DVC refuses:
see :func:`without_lock_rule`), ``gx/`` and ``lpr_core/`` (the stages' code and DVC
dependencies), its ``.dvc/config`` (the remote ``local`` re-pointed, in ``.dvc/config.local``, at a
temporary folder), a ``params.yaml`` shrunk by :data:`TINY_OVERRIDES` (every key kept), the
``tiny`` world in ``data/lpr4m`` (``lpr demo``'s own :func:`~lpr_core.demo.prepare_world`), all of
it committed to a fresh git repository. The world's URLs point at one in-process
:class:`~lpr_core.synth.ImageServer` on a free loopback port, alive for the whole session.

Tests work on copies (:meth:`TinyProject.copy`): each copy has its own MLflow store (a sqlite file
beside the project, passed as ``MLFLOW_TRACKING_URI``) and its own DVC remote. ``dvc`` runs as
``lpr demo`` runs it: this interpreter's ``bin`` first on ``PATH`` (``dvc.yaml`` runs ``python``).

The module imports no Airflow, so both test packages (``tests/pipeline`` and ``tests/dags``) use it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
#: What a checkout of the pipeline holds besides its params: the stage graph, the stages' code
#: (their DVC dependencies), the great-expectations project and the ignore rules.
COPIED = ("dvc.yaml", ".gitignore", "lpr_core", "gx")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "uncommitted")

#: The ``params.yaml`` overrides that make every stage take seconds on the tiny world (CPU, no
#: worker processes, a few training steps, a small bootstrap). Merged into the repository's file.
TINY_OVERRIDES: dict[str, Any] = {
    "download": {"processes": 1, "thread_count": 8, "timeout": 5, "retry_pass": {"attempts": 1, "backoff": 0.1}},
    "validate": {"workers": 1},
    "train_detector": {
        "model": {"min_size": 64, "max_size": 96, "rpn_proposals": 32, "rois_per_image": 16, "box_head_dim": 32},
        "train": {"max_steps": 2, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1,
                  "num_workers": 0, "persistent_workers": False, "device": "cpu", "progress": False},
    },
    "train_encoder": {
        "model": {"backbone": "resnet10", "backbone_width": 16, "image_size": 32, "num_frames": 2,
                  "embed_dim": 32, "decoder_dim": 32},
        "train": {"max_steps": 3, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 1,
                  "num_workers": 0, "persistent_workers": False, "device": "cpu", "progress": False},
    },
    "index_gallery": {"index": {"device": "cpu"}, "embed": {"num_workers": 0, "device": "cpu"}},
    "evaluate": {
        "detector_batch_size": 8, "index_device": "cpu",
        "bootstrap": {"n_boot": 20},
        "report": {"n_random": 2, "n_worst": 2, "max_frames": 2, "top": 3},
        "embed": {"num_workers": 0, "device": "cpu"},
    },
}


def stage_outputs(dvc_yaml: Path = REPO / "dvc.yaml") -> dict[str, tuple[str, ...]]:
    """Stage name -> its outputs (outs, metrics, plots), in ``dvc.yaml``'s order."""
    from lpr_core.dvcgraph import load_stages

    return {stage.name: stage.outs for stage in load_stages(dvc_yaml)}


#: The stages of ``dvc.yaml``, in order.
STAGES = tuple(stage_outputs())
#: Lines of ``dvc repro`` saying what happened to a stage.
_RAN = re.compile(r"^Running stage '([^']+)'", re.M)
_SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping", re.M)
_FROM_RUN_CACHE = re.compile(r"^(?:Stage '([^']+)' is cached - skipping run|Restored stage '([^']+)' from run-cache)",
                             re.M)
_GIT_ID = ("-c", "user.name=lpr-tests", "-c", "user.email=lpr-tests@example.invalid", "-c", "commit.gpgsign=false")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively; an override key unknown to ``base`` is an
    error (the stages reject unknown keys, so a typo here would only fail later)."""
    out = dict(base)
    for key, value in override.items():
        if key not in base:
            raise KeyError(f"params override: {key!r} is not a key of the section (known: {', '.join(base)})")
        out[key] = deep_merge(base[key], value) if isinstance(value, Mapping) else value
    return out


def tiny_params(source: Path = REPO / "params.yaml") -> dict[str, Any]:
    """The repository's params with :data:`TINY_OVERRIDES` applied."""
    return deep_merge(yaml.safe_load(source.read_text(encoding="utf-8")), TINY_OVERRIDES)


@dataclass
class Outcome:
    """A finished command: exit status, merged stdout/stderr, wall-clock seconds."""

    args: list[str]
    returncode: int
    output: str
    seconds: float

    def check(self) -> Outcome:
        """Raise with the command's output when it failed; returns self."""
        if self.returncode:
            raise AssertionError(f"`{' '.join(self.args)}` exited {self.returncode}:\n{self.output[-6000:]}")
        return self

    @property
    def ran(self) -> list[str]:
        """Stages ``dvc repro`` / ``dvc exp run`` ran (their command executed), in order."""
        return _RAN.findall(self.output)

    @property
    def skipped(self) -> list[str]:
        """Stages that did not change."""
        return _SKIPPED.findall(self.output)

    @property
    def restored(self) -> list[str]:
        """Stages whose outputs came from the run cache instead of running."""
        return [a or b for a, b in _FROM_RUN_CACHE.findall(self.output)]


def _run(args: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 1200) -> Outcome:
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=dict(env) if env is not None else None, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return Outcome(args, proc.returncode, proc.stdout, time.perf_counter() - t0)


@dataclass
class TinyProject:
    """One project directory (``root``) with its MLflow store and DVC remote beside it."""

    root: Path

    @property
    def tracking_uri(self) -> str:
        """The project's private MLflow store (outside the git tree)."""
        return f"sqlite:///{self.root.parent / 'mlflow' / 'mlflow.db'}"

    @property
    def remote(self) -> Path:
        """The folder the project's DVC remote ``local`` points at."""
        return self.root.parent / "dvc-remote"

    def env(self, pipeline_run_id: str | None = None) -> dict[str, str]:
        """The environment of a stage run (``lpr demo``'s), with this project's MLflow store."""
        from lpr_core.demo import stage_env

        env = stage_env(pipeline_run_id)
        env.update(MLFLOW_TRACKING_URI=self.tracking_uri, LPR_MLFLOW_EXPERIMENT="lpr-pipeline",
                   DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
        (self.root.parent / "mlflow").mkdir(exist_ok=True)
        return env

    def dvc(self, *args: str, pipeline_run_id: str | None = None, check: bool = True, cwd: Path | None = None) -> Outcome:
        """``dvc <args>`` in the project (or ``cwd``); raises with its output on failure when ``check``."""
        out = _run([sys.executable, "-m", "dvc", *args], cwd or self.root, self.env(pipeline_run_id))
        return out.check() if check else out

    def git(self, *args: str, cwd: Path | None = None) -> str:
        """``git <args>`` in the project with a fixed identity; returns stdout, raises on failure."""
        return _run(["git", *_GIT_ID, *args], cwd or self.root).check().output

    def lpr(self, *args: str, pipeline_run_id: str | None = None) -> Outcome:
        """``lpr <args>`` (``python -m lpr_core.cli``) in the project."""
        return _run([sys.executable, "-m", "lpr_core.cli", *args], self.root, self.env(pipeline_run_id))

    def copy(self, base: Path) -> TinyProject:
        """A copy at ``base/project`` (git history, workspace, DVC cache and run cache) with its own
        MLflow store and its remote at ``base/dvc-remote``; the remote setting is not committed."""
        dest = base / "project"
        shutil.copytree(self.root, dest, symlinks=True, ignore=_ignore_dvc_tmp(self.root))
        project = TinyProject(dest)
        project.dvc("remote", "modify", "--local", "local", "url", str(project.remote))
        return project

    def clone(self, base: Path, url_prefix: str) -> TinyProject:
        """A ``git clone`` at ``base/project`` (what a colleague checks out: no outputs, no DVC cache),
        using this project's remote, with the world regenerated (it is deterministic) and served at
        ``url_prefix``: the world is a dependency that neither git nor DVC tracks."""
        from lpr_core.demo import point_world_at, prepare_world

        dest = base / "project"
        base.mkdir(parents=True, exist_ok=True)
        _run(["git", "clone", "-q", str(self.root), str(dest)], base).check()
        project = TinyProject(dest)
        project.dvc("remote", "modify", "--local", "local", "url", str(self.remote))
        point_world_at(dest, prepare_world(dest, "tiny", 0, fresh=False), url_prefix)
        return project

    def set_param(self, dotted: str, value: Any) -> None:
        """Set ``section.key...`` in ``params.yaml`` (as an edit by hand would)."""
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        if leaf not in node:
            raise KeyError(f"{path}: no parameter {dotted}")
        node[leaf] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")

    def lock(self) -> dict[str, Any]:
        """``dvc.lock``'s stages (an empty mapping before the first run)."""
        path = self.root / "dvc.lock"
        return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {}) if path.exists() else {}

    def forget_stages_after(self, stage: str) -> None:
        """Make DVC run every stage after ``stage`` again: drop their ``dvc.lock`` entries and the
        run cache (which would otherwise restore them); the outputs stay until the stages rerun."""
        path = self.root / "dvc.lock"
        lock = yaml.safe_load(path.read_text(encoding="utf-8"))
        keep = STAGES[: STAGES.index(stage) + 1]
        lock["stages"] = {name: entry for name, entry in lock["stages"].items() if name in keep}
        path.write_text(yaml.safe_dump(lock, sort_keys=False), encoding="utf-8")
        shutil.rmtree(self.root / ".dvc" / "cache" / "runs", ignore_errors=True)

    def stage_runs(self) -> list[Any]:
        """The MLflow runs of the project's store that belong to a stage, oldest first."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        exp = client.get_experiment_by_name("lpr-pipeline")
        if exp is None:
            return []
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        return sorted((r for r in runs if r.data.tags.get("lpr.stage") in STAGES), key=lambda r: r.info.start_time)

    def output_mtimes(self) -> dict[str, float]:
        """The newest modification time of the files of each stage's outputs (what a rerun rewrites)."""
        def newest(path: Path) -> float:
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            return max((p.stat().st_mtime for p in files), default=0.0)

        return {stage: max(newest(self.root / out) for out in outs)
                for stage, outs in stage_outputs(self.root / "dvc.yaml").items()}


def _ignore_dvc_tmp(root: Path):
    """Leave out ``.dvc/tmp`` (locks, the state database) when copying a project."""
    dvc_dir = str(root / ".dvc")

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {"tmp"} if directory == dvc_dir and "tmp" in names else set()

    return ignore


def without_lock_rule(gitignore: str) -> str:
    """A ``.gitignore`` without rules that ignore the top-level ``dvc.lock``: DVC refuses to load a
    pipeline whose lock file git ignores (``dvc repro``, ``status`` and ``exp run`` all stop with
    "dvc.lock is git-ignored"), and the lock must be committed for experiments and ``dvc pull``."""
    return "".join(line for line in gitignore.splitlines(keepends=True)
                   if line.strip() not in ("/dvc.lock", "dvc.lock"))


def build_template(base: Path, serve: Any, *, keep_lock_ignored: bool = False) -> tuple[TinyProject, Any]:
    """Build the project at ``base/project``, serve its world, point the URLs there and commit.

    Args:
        base: an empty folder; the project, its MLflow store and remote go under it.
        serve: ``serve(world_dir)`` starts an image server on the world and returns it (anything
            with a ``url_prefix``).
        keep_lock_ignored: keep the repository's ``.gitignore`` as it is, even a rule ignoring
            ``dvc.lock`` (by default such a rule is dropped; see :func:`without_lock_rule`).

    Returns:
        The project (nothing has run yet: no ``dvc.lock``) and the server.
    """
    from lpr_core.demo import point_world_at, prepare_world

    root = base / "project"
    root.mkdir(parents=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=_IGNORED)
        else:
            shutil.copy2(src, root / name)
    if not keep_lock_ignored:
        (root / ".gitignore").write_text(without_lock_rule((root / ".gitignore").read_text()))
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False), encoding="utf-8")
    world = prepare_world(root, "tiny", 0, fresh=False)
    server = serve(world)
    point_world_at(root, world, server.url_prefix)
    project = TinyProject(root)
    project.git("init", "-q", "-b", "main")
    project.dvc("init", "-q")
    shutil.copy2(REPO / ".dvc" / "config", root / ".dvc" / "config")
    project.dvc("config", "core.analytics", "false")
    project.dvc("remote", "modify", "--local", "local", "url", str(project.remote))
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "the pipeline on the tiny world")
    return project, server


@dataclass
class Session:
    """The session's image server, template project and (lazily) its first full ``dvc repro``."""

    server: Any
    template: TinyProject
    first_repro: Outcome | None = None
    reproduced: TinyProject | None = None


_SESSION: dict[str, Session] = {}


def session(tmp_path_factory: Any, request: Any) -> Session:
    """The session's template project, built once and shared by every fixture that asks for it
    (from either test package); the image server stops at the end of the test session."""
    if "s" not in _SESSION:
        from lpr_core.synth import ImageServer

        def serve(world: Path) -> ImageServer:
            server = ImageServer(world, host="127.0.0.1", port=0).start()
            request.session.addfinalizer(server.stop)
            return server

        template, server = build_template(tmp_path_factory.mktemp("tiny-template"), serve)
        request.session.addfinalizer(lambda: _SESSION.pop("s", None))
        _SESSION["s"] = Session(server, template)
    return _SESSION["s"]


def reproduced(tmp_path_factory: Any, request: Any) -> Session:
    """The session's template after one full ``dvc repro`` (in a copy; run once per session)."""
    s = session(tmp_path_factory, request)
    if s.reproduced is None:
        project = s.template.copy(tmp_path_factory.mktemp("tiny-reproduced"))
        s.first_repro = project.dvc("repro", check=False)
        s.reproduced = project
    return s


def fresh_copy(tmp_path_factory: Any, request: Any, name: str, *, reproduced_state: bool) -> TinyProject:
    """A private copy of the template (``reproduced_state``: after the first full ``dvc repro``)."""
    if reproduced_state:
        s = reproduced(tmp_path_factory, request)
        s.first_repro.check()
        return s.reproduced.copy(tmp_path_factory.mktemp(name))
    return session(tmp_path_factory, request).template.copy(tmp_path_factory.mktemp(name))
