"""What runs inside a pipeline pod: every stage pod, KFP step and TrainJob node runs this module.

A pod shares nothing with the others but the DVC remote, the ``dvc.lock`` exchange
(:mod:`components.exchange`) and the MLflow server. Its container command is one of::

    python -m components.pod run STAGE                    # a stage pod (Airflow, KFP)
    python -m components.pod exec --restore STAGE --command CMD   # a command pod (the registry gate)
    python -m components.pod prepare STAGE                # a TrainJob node, before torchrun
    python -m components.pod record STAGE                 # TrainJob node 0, after torchrun

and ``python -m components.pod lock --run ID > dvc.lock`` assembles a run's complete ``dvc.lock``;
``python -m components.pod configure`` is the local runner's first task. ``run`` does, in order:

1. **workspace**: the working directory (an ``emptyDir`` on a cluster, the root file system being
   read-only) becomes a writable copy of the image's checkout, the one this module is imported
   from; a directory that already is a checkout is used as it is;
2. **params**: the run's ``params_overrides`` are applied with ``lpr params apply`` (a bad key or
   type stops the pod with exit code 2 and names the key);
3. **done already?** a stage whose entry the run has published is not run again (a retried pod);
4. **data**: a stage reading ``data/lpr4m`` gets the run's ``data_url`` fetched there (empty: the
   folder the checkout holds or tracks with a ``.dvc`` file, pulled);
5. **upstream**: the run's published ``dvc.lock`` entries are merged into ``dvc.lock`` and the
   outputs the stage reads are pulled from the DVC remote, never recomputed;
6. ``dvc repro --single-item --pull STAGE`` runs the stage (or restores it from the remote's run
   cache when an earlier run had the same inputs), ``dvc push --run-cache STAGE`` pushes its
   outputs, and its ``dvc.lock`` entry is published for the pods that follow.

Options (``--run-id``, ``--params-overrides``, ``--data-url``, ``--runs-url``) default to the
environment (``LPR_PIPELINE_RUN_ID``, ``LPR_PARAMS_OVERRIDES``, ``LPR_DATA_URL``,
``LPR_RUNS_URL``); the values are exported to the stage, whose MLflow run records them.
Exit codes: 0 done, 2 bad input (overrides, data URL, settings), otherwise the failing step's.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from components.exchange import ExchangeError, LockExchange, dump_lock, merge_lock
from components.orchestration import LPR4M_DIR, RUN_ID_ENV, RUNS_URL_ENV, TRIGGER_ENV

log = logging.getLogger("lpr.pod")

#: The checkout this module is imported from: the image's project (read-only on a cluster).
CHECKOUT = Path(__file__).resolve().parents[1]
#: What a workspace copy leaves out, by folder of the checkout ("." its root, "*" every folder).
_NOT_COPIED = {".": {".git", ".venv", ".venv-kfp", "data", "mlruns", "mlartifacts", "mlflow.db", "dvc.yaml"},
               ".dvc": {"tmp", "cache"}, "*": {"__pycache__"}}


class PodError(RuntimeError):
    """A step that cannot go on; ``code`` is the process exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RunInputs:
    """What a pipeline run hands every pod: its id, its params overrides, its data, the exchange URL."""

    run_id: str = ""
    params_overrides: Mapping[str, Any] = field(default_factory=dict)
    data_url: str = ""
    runs_url: str = ""

    @property
    def overrides_json(self) -> str:
        """The overrides as canonical JSON (sorted keys): what ``lpr params apply`` and MLflow get."""
        return json.dumps(dict(self.params_overrides), sort_keys=True, separators=(",", ":"))

    def environment(self) -> dict[str, str]:
        """The variables that carry these inputs into the stages (their MLflow runs record them)."""
        env = {TRIGGER_ENV["params_overrides"]: self.overrides_json, TRIGGER_ENV["data_url"]: self.data_url}
        if self.run_id:
            env[RUN_ID_ENV] = self.run_id
        if self.runs_url:
            env[RUNS_URL_ENV] = self.runs_url
        return env

    def exchange(self) -> LockExchange:
        """The run's ``dvc.lock`` exchange."""
        try:
            return LockExchange(self.runs_url, self.run_id)
        except ExchangeError as exc:
            raise PodError(str(exc), 2) from None


def parse_overrides(text: str | None) -> dict[str, Any]:
    """A run's ``params_overrides``: a JSON object of dotted ``params.yaml`` keys (empty: none).

    Raises:
        PodError: (exit code 2) not JSON, or not an object.
    """
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PodError(f"params overrides: not JSON ({exc.msg} at character {exc.pos}): {text[:200]!r}", 2) from None
    if not isinstance(value, dict):
        raise PodError('params overrides must be a JSON object of dotted params.yaml keys, e.g. '
                       f'{{"train_encoder.train.lr": 0.003}}; got {text[:200]!r}', 2)
    return value


# --- steps -----------------------------------------------------------------------------------------

def enter_workspace(workdir: Path, checkout: Path = CHECKOUT) -> Path:
    """Make ``workdir`` a writable checkout of the project and return it.

    On a cluster the working directory is an empty ``emptyDir`` (the image's file system is
    read-only): the image's checkout is copied into it, ``dvc.yaml`` last, so a container killed
    while copying leaves no ``dvc.yaml`` and its restart copies again. A directory that holds
    ``dvc.yaml`` (the checkout itself, a rehearsal's workspace, a local clone) is used as it is.
    Without a ``.git`` DVC runs with ``core.no_scm``.

    Raises:
        PodError: the directory is not writable, or there is no checkout to copy.
    """
    workdir = workdir.resolve()
    _check_writable(workdir)
    if not (workdir / "dvc.yaml").is_file():
        if not (checkout / "dvc.yaml").is_file():
            raise PodError(f"{workdir}: no dvc.yaml here and no project checkout to copy ({checkout} has none)", 2)
        log.info("workspace: copying the checkout %s into %s", checkout, workdir)
        shutil.copytree(checkout, workdir, symlinks=True, dirs_exist_ok=True, ignore=_not_copied(checkout))
        shutil.copy2(checkout / "dvc.yaml", workdir / "dvc.yaml")
    if not (workdir / ".git").exists() and not _dvc_no_scm(workdir):
        _dvc(workdir, "config", "--local", "core.no_scm", "true")
    return workdir


def _not_copied(checkout: Path):
    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(checkout).as_posix()
        return (_NOT_COPIED.get(rel, set()) | _NOT_COPIED["*"]) & set(names)

    return ignore


def _check_writable(workdir: Path) -> None:
    probe = workdir / ".dvc" / "tmp"
    try:
        probe.mkdir(parents=True, exist_ok=True)
        (probe / ".lpr-writable").touch()
    except OSError as exc:
        raise PodError(f"{workdir}: the working directory is not writable ({exc.strerror}): on a cluster mount "
                       "an emptyDir there (runtime.yaml's workdir)", 2) from None


def _dvc_no_scm(workdir: Path) -> bool:
    parser = configparser.ConfigParser()
    try:
        parser.read([workdir / ".dvc" / "config", workdir / ".dvc" / "config.local"])
    except configparser.Error:
        return False  # `dvc config` reads it and says what is wrong
    return parser.get("core", "no_scm", fallback="false").strip().lower() == "true"


def apply_overrides(workdir: Path, overrides: Mapping[str, Any]) -> None:
    """Apply the run's params overrides to ``workdir/params.yaml`` with ``lpr params apply``.

    Raises:
        PodError: the command rejected them (exit code 2: a bad key or type, named in its output).
    """
    if not overrides:
        return
    from lpr_core import cli

    text = json.dumps(dict(overrides), sort_keys=True)
    log.info("params: lpr params apply --json %s", text)
    code = _in(workdir, cli.main, ["params", "apply", "--json", text])
    if code:
        raise PodError(f"params overrides {text} rejected by `lpr params apply` (exit {code}; the key at fault "
                       "is named above)", 2 if code == 2 else code)


def restore_params(workdir: Path) -> None:
    """Put ``params.yaml`` back to its committed version (a previous run's overrides must not leak)."""
    proc = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=workdir, capture_output=True)
    if proc.returncode:
        log.warning("params: %s/params.yaml is not committed in git here: overrides apply on top of the "
                    "current file", workdir)
        return
    current = workdir / "params.yaml"
    if current.exists() and current.read_bytes() == proc.stdout:
        return
    from lpr_core.io import atomic_write_bytes

    atomic_write_bytes(current, proc.stdout)
    log.info("params: %s restored to the committed version (local changes discarded)", current)


def fetch_data(url: str, dest: Path) -> int:
    """Fetch the LPR4M folder at ``url`` (any fsspec URL or a local path) into ``dest``; returns its files.

    The folder is downloaded beside ``dest`` and swapped in whole (:func:`lpr_core.io.publish_dir`).

    Raises:
        PodError: (exit code 2) the URL is not a readable folder, or it is empty.
    """
    import fsspec

    from lpr_core.io import clean_leftovers, publish_dir, tmp_sibling

    try:
        fs, root = fsspec.core.url_to_fs(url)
        is_dir = fs.isdir(root)
    except (OSError, ValueError, ImportError) as exc:
        raise PodError(f"data_url {url}: cannot read it: {exc}", 2) from None
    if not is_dir:
        raise PodError(f"data_url {url}: no such folder (an LPR4M folder of URL and annotation files)", 2)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(dest)
    tmp = tmp_sibling(dest)
    log.info("data: fetching %s into %s", url, dest)
    try:
        fs.get(root.rstrip("/") + "/", str(tmp), recursive=True)
        files = sum(len(names) for _, _, names in os.walk(tmp))
        if not files:
            raise PodError(f"data_url {url}: the folder is empty", 2)
        publish_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("data: %d files in %s", files, dest)
    return files


def reads(stage: Any, path: str) -> bool:
    """Whether ``stage`` depends on ``path`` (a dep equal to it, inside it or holding it)."""
    p = PurePosixPath(path)
    return any(PurePosixPath(d) == p or p in PurePosixPath(d).parents or PurePosixPath(d) in p.parents
               for d in stage.deps)


def restore_upstream(workdir: Path, stage: Any, stages: Sequence[Any], exchange: LockExchange) -> dict[str, Any]:
    """Merge the run's published ``dvc.lock`` entries into ``dvc.lock`` and pull what ``stage`` reads.

    Returns:
        The published entries (stage name -> entry).

    Raises:
        PodError: an upstream stage has not published its entry in this run, or an input that no
            stage produces is missing.
    """
    order = [s.name for s in stages]
    entries = exchange.entries(order)
    missing = [u for u in stage.upstream if u not in entries]
    if missing:
        raise PodError(f"stage {stage.name!r} reads the outputs of {', '.join(missing)}, which published no "
                       f"dvc.lock entry in run {exchange.run_id!r} ({exchange.location}): run "
                       f"{'it' if len(missing) == 1 else 'them'} first in this pipeline run")
    write_lock(workdir, merge_lock(read_lock(workdir), entries, order))
    targets = [f"dvc.yaml:{u}" for u in stage.upstream]
    produced = [o for s in stages for o in s.outs]
    for dep in stage.deps:
        if any(PurePosixPath(o) == PurePosixPath(dep) or PurePosixPath(o) in PurePosixPath(dep).parents
               for o in produced) or (workdir / dep).exists():
            continue
        if (workdir / f"{dep}.dvc").is_file():
            targets.append(f"{dep}.dvc")
        else:
            raise PodError(f"stage {stage.name!r} reads {dep}, which is not in the checkout and no stage or "
                           f".dvc file provides it: give the run a data_url, or track it (`dvc add {dep}`, "
                           "`dvc push`, commit the .dvc file) before building the image", 2)
    if targets:
        log.info("upstream: pulling %s (recorded in run %s)", " ".join(targets), exchange.run_id)
        _dvc(workdir, "pull", *targets)
    return entries


def read_lock(workdir: Path) -> dict[str, Any] | None:
    """The ``dvc.lock`` of ``workdir`` (None when there is none)."""
    import yaml

    path = workdir / "dvc.lock"
    return yaml.safe_load(path.read_text()) if path.exists() else None


def write_lock(workdir: Path, document: Mapping[str, Any]) -> None:
    """Write ``workdir/dvc.lock`` atomically."""
    from lpr_core.io import atomic_write_text

    atomic_write_text(workdir / "dvc.lock", dump_lock(document))


def publish(workdir: Path, stage: str, exchange: LockExchange) -> str:
    """Publish ``stage``'s entry of ``workdir/dvc.lock`` for the rest of the run; returns its URL."""
    entry = ((read_lock(workdir) or {}).get("stages") or {}).get(stage)
    if entry is None:
        raise PodError(f"stage {stage!r}: dvc.lock has no entry for it after the run")
    url = exchange.publish(stage, entry)
    log.info("published %s", url)
    return url


# --- commands --------------------------------------------------------------------------------------

def _start(args: argparse.Namespace) -> tuple[Path, RunInputs]:
    inputs = RunInputs(run_id=args.run_id or "", params_overrides=parse_overrides(args.params_overrides),
                       data_url=(args.data_url or "").strip(), runs_url=(args.runs_url or "").strip())
    os.environ.update(inputs.environment())
    workdir = enter_workspace(Path.cwd())
    os.environ.setdefault("DVC_SITE_CACHE_DIR", str(workdir / ".dvc" / "tmp" / "site-cache"))
    apply_overrides(workdir, inputs.params_overrides)
    return workdir, inputs


def _stage(workdir: Path, name: str) -> tuple[Any, list[Any]]:
    from lpr_core.dvcgraph import load_stages

    stages = load_stages(workdir / "dvc.yaml")
    by_name = {s.name: s for s in stages}
    if name not in by_name:
        raise PodError(f"{workdir / 'dvc.yaml'}: no stage {name!r} (stages: {', '.join(by_name)})", 2)
    return by_name[name], stages


def _inputs_of(workdir: Path, stage: Any, stages: Sequence[Any], inputs: RunInputs, exchange: LockExchange) -> None:
    if inputs.data_url and reads(stage, LPR4M_DIR):
        fetch_data(inputs.data_url, workdir / LPR4M_DIR)
    restore_upstream(workdir, stage, stages, exchange)


def cmd_run(args: argparse.Namespace) -> int:
    """A stage pod: the stage once per pipeline run, its outputs and record handed on."""
    workdir, inputs = _start(args)
    stage, stages = _stage(workdir, args.stage)
    exchange = inputs.exchange()
    if exchange.get(stage.name) is not None:
        log.info("stage %r already finished in run %r (%s): nothing to do", stage.name, inputs.run_id,
                 exchange.location)
        return 0
    _inputs_of(workdir, stage, stages, inputs, exchange)
    _dvc(workdir, "repro", "--single-item", "--pull", f"dvc.yaml:{stage.name}")
    _dvc(workdir, "push", "--run-cache", f"dvc.yaml:{stage.name}")
    publish(workdir, stage.name, exchange)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """A TrainJob node before its launcher: workspace, params, the stage's inputs restored."""
    workdir, inputs = _start(args)
    stage, stages = _stage(workdir, args.stage)
    _inputs_of(workdir, stage, stages, inputs, inputs.exchange())
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    """TrainJob node 0 after its launcher: record the stage's outputs, push them, publish its entry."""
    workdir, inputs = _start(args)
    stage, _ = _stage(workdir, args.stage)
    _dvc(workdir, "commit", "--force", f"dvc.yaml:{stage.name}")
    _dvc(workdir, "push", "--run-cache", f"dvc.yaml:{stage.name}")
    publish(workdir, stage.name, inputs.exchange())
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    """A command pod: the run's complete ``dvc.lock`` restored with a stage's outputs and its inputs, then a
    shell command.

    The outputs of the stages ``--restore`` reads are pulled too: what the stage's own pod had. The
    registry gate needs them: ``candidate.json`` names the trained encoder and detector, and
    rescoring a champion reruns ``index_gallery`` and ``evaluate`` on the prepared test data.
    """
    workdir, inputs = _start(args)
    if args.restore:
        stage, stages = _stage(workdir, args.restore)
        exchange = inputs.exchange()
        entries = exchange.entries([s.name for s in stages])
        if stage.name not in entries:
            raise PodError(f"stage {stage.name!r} published no dvc.lock entry in run {inputs.run_id!r} "
                           f"({exchange.location}): nothing to restore")
        write_lock(workdir, merge_lock(read_lock(workdir), entries, [s.name for s in stages]))
        _dvc(workdir, "pull", *(f"dvc.yaml:{name}" for name in [*stage.upstream, stage.name]))
    log.info("running: %s", args.command)
    return subprocess.run(["bash", "-c", args.command], cwd=workdir, env=_child_env()).returncode


def cmd_configure(args: argparse.Namespace) -> int:
    """The local runner's first task: committed ``params.yaml`` plus the run's overrides, and its data."""
    inputs = RunInputs(run_id=args.run_id or "", params_overrides=parse_overrides(args.params_overrides),
                       data_url=(args.data_url or "").strip())
    workdir = Path.cwd()
    restore_params(workdir)
    apply_overrides(workdir, inputs.params_overrides)
    if inputs.data_url:
        fetch_data(inputs.data_url, workdir / LPR4M_DIR)
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    """Print a pipeline run's complete ``dvc.lock``, assembled from its published entries."""
    from lpr_core.dvcgraph import load_stages

    order = [s.name for s in load_stages(args.dvc_yaml)]
    exchange = RunInputs(run_id=args.run, runs_url=args.runs_url or "").exchange()
    document = exchange.lock(order)
    found = list(document["stages"])
    if not found:
        raise PodError(f"run {args.run!r}: no dvc.lock entry published under {exchange.location}")
    missing = [n for n in order if n not in found]
    if missing:
        log.warning("run %r: no entry for %s (not run, or failed): the lock is partial", args.run,
                    ", ".join(missing))
    sys.stdout.write(dump_lock(document))
    return 0


# --- plumbing --------------------------------------------------------------------------------------

def _child_env() -> dict[str, str]:
    # `python` in dvc.yaml's commands must be this interpreter's environment, activated or not
    env = {"PYTHONDONTWRITEBYTECODE": "1", **os.environ}  # no __pycache__ in the code directories DVC hashes
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@contextlib.contextmanager
def _stdout_to_log() -> Iterator[None]:
    """Send file descriptor 1 to stderr (the log): stdout is left to the command of ``exec`` and to ``lock``."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _in(workdir: Path, main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run a command's ``main(argv)`` in this process (one interpreter start per pod) in ``workdir``."""
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        with _stdout_to_log():
            return int(main(argv) or 0)
    finally:
        os.chdir(previous)


def _dvc(workdir: Path, *args: str) -> None:
    from dvc.cli import main

    code = _in(workdir, main, list(args))
    if code:
        raise PodError(f"`dvc {' '.join(args)}` failed (exit {code})", code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m components.pod", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)

    def run_options(p: argparse.ArgumentParser, runs: bool = True) -> None:
        p.add_argument("--run-id", default=os.environ.get(RUN_ID_ENV, ""),
                       help=f"the pipeline run id (default ${RUN_ID_ENV})")
        p.add_argument("--params-overrides", default=os.environ.get(TRIGGER_ENV["params_overrides"], ""),
                       help="a JSON object of dotted params.yaml keys "
                            f"(default ${TRIGGER_ENV['params_overrides']})")
        p.add_argument("--data-url", default=os.environ.get(TRIGGER_ENV["data_url"], ""),
                       help=f"an LPR4M folder to fetch into {LPR4M_DIR} (default ${TRIGGER_ENV['data_url']})")
        if runs:
            p.add_argument("--runs-url", default=os.environ.get(RUNS_URL_ENV, ""),
                           help=f"where the run's dvc.lock entries are exchanged (default ${RUNS_URL_ENV})")

    for name, func, help_text in (("run", cmd_run, cmd_run.__doc__), ("prepare", cmd_prepare, cmd_prepare.__doc__),
                                  ("record", cmd_record, cmd_record.__doc__)):
        p = sub.add_parser(name, help=help_text.splitlines()[0], description=help_text)
        p.add_argument("stage", help="the dvc.yaml stage")
        run_options(p)
        p.set_defaults(func=func)
    p = sub.add_parser("exec", help=cmd_exec.__doc__, description=cmd_exec.__doc__)
    p.add_argument("--command", required=True, help="the shell command to run (bash -c)")
    p.add_argument("--restore", help="a stage whose outputs the command reads")
    run_options(p)
    p.set_defaults(func=cmd_exec)
    p = sub.add_parser("configure", help=cmd_configure.__doc__, description=cmd_configure.__doc__)
    run_options(p, runs=False)
    p.set_defaults(func=cmd_configure)
    p = sub.add_parser("lock", help=cmd_lock.__doc__, description=cmd_lock.__doc__)
    p.add_argument("--run", required=True, help="the pipeline run id")
    p.add_argument("--runs-url", default=os.environ.get(RUNS_URL_ENV, ""), help=f"default ${RUNS_URL_ENV}")
    p.add_argument("--dvc-yaml", default="dvc.yaml", help="the stage graph (for the stages' order)")
    p.set_defaults(func=cmd_lock)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m components.pod``."""
    sys.dont_write_bytecode = True  # the workspace's code directories are DVC dependencies
    os.environ.update(_child_env())  # for the stages DVC starts from this process
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="lpr pod: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except (PodError, ExchangeError) as exc:
        code = getattr(exc, "code", 1)
        what = getattr(args, "stage", None) or getattr(args, "restore", None) or args.command_name
        print(f"lpr pod: {what}: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
