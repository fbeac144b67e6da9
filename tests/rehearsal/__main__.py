"""The cluster rehearsal (``make rehearsal``): every pod of the pipeline as it would run on Kubernetes.

Real: the DAG's pods (``KubernetesPodOperator.build_pod_request_obj``), the TrainJob's node pods,
their commands, environment and secrets, an S3 API (moto's server), ``mlflow server`` on
PostgreSQL with artifacts in the store, the ``tiny`` world over HTTP (``lpr serve``), each pod in a
fresh copy of ``git archive HEAD``. Stood in: the scheduler (:mod:`tests.rehearsal.scheduler`) and
the kubelet (:mod:`tests.rehearsal.kubelet`). The last line printed is::

    RESULT stages=<n> stage_runs=<n> download_runs=<n> resumed_step=<n> promoters=<n> champions=<n> seconds=<s>

and the exit status is non-zero, with the failed check named, when any check fails.
``LPR_REHEARSAL_KEEP=1`` keeps the working folder (pods' folders and logs) after a success.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.rehearsal import checks, kubelet, scheduler, services
from tests.rehearsal.checks import RehearsalFailure, require

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the locked environment (not resolved: the venv's own bin)
#: The image's ``ENV`` (docker/train.Dockerfile), the project on ``PYTHONPATH`` standing for its
#: editable install; image paths, mapped per pod by the kubelet stand-in.
IMAGE_ENV = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": "/home/lpr", "PYTHONPATH": "/opt/lpr",
             "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
             "GX_ANALYTICS_ENABLED": "false", "NO_ALBUMENTATIONS_UPDATE": "1", "DVC_NO_ANALYTICS": "1"}
TRAIN_STEPS, CHECKPOINT_EVERY = 12, 3
RACE_MODEL = "lpr-encoder-rehearsal-race"
RACE_SCORES = (0.42, 0.61, math.nan, 0.55, None)  # three finite, a NaN and a missing score


def run_overrides(lr: float | None = None) -> dict[str, Any]:
    """The run's ``params_overrides``: the tiny settings of the pipeline tests, longer encoder training."""
    from tests.pipeline.project import TINY_OVERRIDES

    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    out = flat(TINY_OVERRIDES)
    out.update({"train_encoder.train.max_steps": TRAIN_STEPS, "train_encoder.train.checkpoint_every": CHECKPOINT_EVERY})
    if lr is not None:
        out["train_encoder.train.lr"] = lr
    return out


@dataclass
class Pod:
    """A started pod: its name, folder, log and process."""

    name: str
    root: Path
    log: Path
    proc: subprocess.Popen
    started: float

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise RehearsalFailure(f"pod {self.name} did not finish within {timeout:.0f} s; log {self.log}:\n"
                                   f"{self.text()[-3000:]}") from None


class Cluster:
    """The pods' side: the image, the secrets, the kubelet stand-in, a counter for pod folders."""

    def __init__(self, work: Path, image: Path, secrets: dict, as_user: bool) -> None:
        self.work, self.image, self.secrets, self.as_user = work, image, secrets, as_user
        self.pods: list[Pod] = []

    def start(self, name: str, manifest: dict) -> Pod:
        root = self.work / "pods" / f"{len(self.pods):02d}-{name}"
        root.mkdir(parents=True)
        log = root.with_suffix(".log")
        proc = kubelet.start(manifest, root, self.image, self.secrets, IMAGE_ENV, log, self.as_user)
        pod = Pod(name, root, log, proc, time.monotonic())
        self.pods.append(pod)
        print(f"  pod {name:<28} started ({manifest['metadata']['name']})", flush=True)
        return pod

    def finish(self, pod: Pod, expect: int = 0, timeout: float = 600) -> Pod:
        code = pod.wait(timeout)
        print(f"  pod {pod.name:<28} exit {code} in {time.monotonic() - pod.started:5.1f} s", flush=True)
        require(code == expect, f"pod {pod.name} exited {code} (expected {expect}); log {pod.log}:\n"
                                f"{pod.text()[-4000:]}")
        return pod

    def run(self, name: str, manifest: dict, expect: int = 0) -> Pod:
        return self.finish(self.start(name, manifest), expect)

    def stop_all(self) -> None:
        """SIGKILL every pod still running (a failed check or Ctrl-C leaves none behind)."""
        for pod in self.pods:
            if pod.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pod.proc.pid, signal.SIGKILL)
                pod.proc.wait()


def build_image(work: Path, store: services.Store) -> Path:
    """What the image holds at ``/opt/lpr``: ``git archive HEAD``, with the DVC remote in the store."""
    image = work / "image"
    image.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(image)], input=archive, check=True)
    (image / ".dvc" / "config.local").write_text(
        "[core]\n    no_scm = true\n    analytics = false\n    remote = store\n"
        f"['remote \"store\"']\n    url = {store.url('dvc')}\n")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        print("note: the working tree has uncommitted changes; the pods run HEAD", flush=True)
    return image


def kill_after_first_checkpoint(cluster: Cluster, pod: Pod, store: services.Store) -> None:
    """SIGKILL the pod's process group at a random moment after its first checkpoint is in the store."""
    fs = store.fs()
    pattern = f"{store.bucket}/state/train_encoder/*/checkpoints/last.pt"
    deadline = time.monotonic() + 600
    while not fs.glob(pattern):
        fs.invalidate_cache()
        require(pod.proc.poll() is None, f"pod {pod.name} ended (exit {pod.proc.returncode}) before its first "
                                         f"checkpoint reached the store; log {pod.log}:\n{pod.text()[-3000:]}")
        require(time.monotonic() < deadline, f"no checkpoint of {pod.name} in {pattern} within 600 s")
        time.sleep(0.1)
    time.sleep(random.uniform(0.0, 1.0))
    require(pod.proc.poll() is None, f"pod {pod.name} finished before it could be killed: lengthen training "
                                     f"(max_steps {TRAIN_STEPS})")
    os.killpg(pod.proc.pid, signal.SIGKILL)
    pod.proc.wait()
    print(f"  pod {pod.name:<28} SIGKILLed {time.monotonic() - pod.started:5.1f} s after its start, after its "
          "first checkpoint", flush=True)


def pipeline_run(cluster: Cluster, pods: dict[str, dict], store: services.Store, *, kill_training: bool = False,
                 before: dict[str, Any] | None = None) -> dict[str, list[Pod]]:
    """Every task's pod in the DAG's order; ``before[task]()`` runs first (e.g. a TrainJob)."""
    done: dict[str, list[Pod]] = {}
    for task_id, manifest in pods.items():
        if before and task_id in before:
            done.setdefault(task_id, []).extend(before[task_id]())
        if task_id == "train_encoder" and kill_training:
            first = cluster.start(task_id, manifest)
            kill_after_first_checkpoint(cluster, first, store)
            done.setdefault(task_id, []).append(first)
            done[task_id].append(cluster.run(f"{task_id}-retry", manifest))
            continue
        done.setdefault(task_id, []).append(cluster.run(task_id, manifest))
    return done


@dataclass
class Setting:
    """The services, the image, the DAG and the pods' side, as :func:`set_up` leaves them."""

    store: services.Store
    tracking: str
    data_url: str
    image: Path
    settings: Path
    dag: Any
    stages: list[str]
    cluster: Cluster

    @property
    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking, self.tracking)


def set_up(work: Path, stack: contextlib.ExitStack) -> Setting:
    """Start the services, build the image, parse the DAG, decide the pods' user."""
    from lpr_core.demo import prepare_world

    print("== services", flush=True)
    store = stack.enter_context(services.object_store(work))
    world = prepare_world(work / "world", "tiny", 0, fresh=True)
    prefix = stack.enter_context(services.image_server(world, work / "lpr-serve.log"))
    data_url = services.upload(store, world, "data/lpr4m-tiny")
    tracking = stack.enter_context(services.tracking_server(work, store))
    print(f"  S3 {store.endpoint} (bucket {store.bucket}), MLflow {tracking} (PostgreSQL), images {prefix}, "
          f"data_url {data_url}", flush=True)
    image = build_image(work, store)
    settings = scheduler.write_settings(work, image, {
        "MLFLOW_TRACKING_URI": tracking, "LPR_RUNS_URL": store.url("runs"), "LPR_STATE_URL": store.url("state")})
    dag = scheduler.load_dag(image, settings, work / "airflow")
    order = scheduler.task_order(dag.tasks)
    probe = scheduler.render_pods(dag, "probe", {}, "")["promote"]
    as_user, why = kubelet.can_run_as(*kubelet.pod_user(probe), str(BIN / "python"))
    print(f"  tasks in order: {' -> '.join(order)}; pods run as {why}", flush=True)
    cluster = Cluster(work, image, services.secrets(store), as_user)
    stack.callback(cluster.stop_all)
    return Setting(store, tracking, data_url, image, settings, dag, [t for t in order if t != "promote"], cluster)


def first_run(s: Setting, run_id: str) -> dict[str, Any]:
    """Run 1 with the training pod killed and retried: checks 1 and 2; returns the figures."""
    print(f"== run {run_id}: every task's pod in order, train_encoder killed and retried", flush=True)
    done = pipeline_run(s.cluster, scheduler.render_pods(s.dag, run_id, run_overrides(), s.data_url), s.store,
                        kill_training=True)
    logs = [p.text() for ps in done.values() for p in ps]
    ran, restored = checks.executions(logs), checks.restorations(logs)
    finished = checks.finished_once(checks.stage_runs(s.client, run_id, s.stages))
    print(f"  commands run: {ran}; restored: {restored}; finished MLflow runs: {finished}", flush=True)
    for stage in s.stages:
        others = [p.text() for t, ps in done.items() if t != stage for p in ps]
        require(checks.executions(others).get(stage, 0) == 0,
                f"check 1: stage {stage} ran in another stage's pod: upstream outputs were recomputed")
        require(checks.executions([p.text() for p in done[stage]]).get(stage, 0) >= 1,
                f"check 1: stage {stage}'s pod did not run it")
        require(finished.get(stage) == 1, f"check 1: stage {stage} has {finished.get(stage)} finished runs "
                                          f"on the tracking server in run {run_id} (expected 1)")
    stage_runs, download_runs = sum(finished.values()), ran.get("download", 0)
    require(stage_runs == len(s.stages) and download_runs == 1,
            f"check 1: stage_runs {stage_runs} (stages {len(s.stages)}), download_runs {download_runs}")

    retry = done["train_encoder"][-1]
    summary = json.loads((retry.workspace / "data/models/encoder/train_summary.json").read_text())
    resumed_step = int(summary.get("resumed_from") or 0)
    require("resuming the checkpoint" in retry.text() and resumed_step > 0,
            f"check 2: the retried train_encoder pod did not resume (resumed_from {summary.get('resumed_from')}); "
            f"log {retry.log}")
    require(summary.get("steps") == TRAIN_STEPS, f"check 2: the resumed pod stopped at {summary.get('steps')}")
    print(f"  check 2: the retry resumed from step {resumed_step} in the store and finished {TRAIN_STEPS} steps",
          flush=True)
    check_keys(retry.workspace)
    return {"stage_runs": stage_runs, "download_runs": download_runs, "resumed_step": resumed_step}


def check_keys(workspace: Path) -> None:
    """Check 3: what keeps the training state key (runtime settings) and what starts fresh."""
    keys = checks.key_variants(workspace)
    for name, (key, note) in keys.items():
        print(f"  check 3: {name:<8} key {key[:12]}  {note}", flush=True)
    base = keys["base"][0]
    require(keys["runtime"][0] == base and "resuming" in keys["runtime"][1],
            "check 3: changed num_workers/progress/device must keep the training state key")
    require(keys["param"][0] != base and keys["input"][0] != base,
            "check 3: a changed lr or input row must change the training state key (start fresh)")


def second_run(s: Setting, run_id: str, first: str) -> None:
    """Run 2 with another lr, the encoder trained by a 2-node TrainJob; check 5 against run ``first``."""
    from tests.tracking.helpers import free_port

    overrides = run_overrides(lr=0.002)
    print(f"== run {run_id}: lr changed; train_encoder on a 2-node TrainJob first", flush=True)

    def trainjob() -> list[Pod]:
        _, nodes = scheduler.trainjob_pods(s.image, s.settings, run_id, json.dumps(overrides, sort_keys=True),
                                           s.data_url, free_port())
        started = [s.cluster.start(f"trainjob-node-{i}", node) for i, node in enumerate(nodes)]
        return [s.cluster.finish(p) for p in started]

    done = pipeline_run(s.cluster, scheduler.render_pods(s.dag, run_id, overrides, s.data_url), s.store,
                        before={"train_encoder": trainjob})
    dag_pod = done["train_encoder"][-1]
    require("already finished in run" in dag_pod.text(),
            f"check 5: the DAG's train_encoder pod of {run_id} did not find the TrainJob's entry; log {dag_pod.log}")
    logs = [p.text() for ps in done.values() for p in ps]
    print(f"  run 2: commands run {checks.executions(logs)}; restored {checks.restorations(logs)}", flush=True)

    runs = {rid: checks.stage_runs(s.client, rid, [*s.stages, "register"]) for rid in (first, run_id)}
    for rid in (first, run_id):
        require(bool(runs[rid]["register"]), f"check 5: the promote pod of {rid} left no register run on the server")
    te = {rid: next(r for r in runs[rid]["train_encoder"] if r.info.status == "FINISHED") for rid in (first, run_id)}
    print("  check 5: side by side on the tracking server:", flush=True)
    rows = [("lpr.params_overrides lr", lambda r: json.loads(r.data.tags.get("lpr.params_overrides") or "{}")
             .get("train_encoder.train.lr", "(default)")),
            ("train_encoder lr param", lambda r: next((v for k, v in r.data.params.items() if k.endswith("train.lr")),
                                                      None)),
            ("encoder/val_rank1", lambda r: r.data.metrics.get("encoder/val_rank1"))]
    for label, get in rows:
        print(f"    {label:<26} {str(get(te[first])):>12} {str(get(te[run_id])):>12}", flush=True)
    require(te[first].data.tags.get("lpr.params_overrides") != te[run_id].data.tags.get("lpr.params_overrides"),
            "check 5: both runs recorded the same params overrides")


def race(s: Setting) -> dict[str, Any]:
    """Check 4: promoter pods racing on the tracking server; returns the figures."""
    from components.podspec import exec_command
    from tests.tracking.helpers import check_race_outcome

    print("== promoters: separate pods racing on the tracking server", flush=True)
    racers = []
    for seed, score in enumerate(RACE_SCORES, start=1):
        manifest = scheduler.render_pods(s.dag, "race", {"promote.model_name": RACE_MODEL}, "")["promote"]
        manifest["spec"]["containers"][0]["command"] = exec_command(
            f"python -m tests.rehearsal.candidate --seed {seed} --score {'none' if score is None else score!r} "
            "--out data/candidate && lpr promote --candidate-from data/candidate")
        racers.append((score, s.cluster.start(f"promoter-{seed}", manifest)))
    versions: dict[str, float | None] = {}
    for score, pod in racers:
        s.cluster.finish(pod)
        found = [v for m, v, _ in checks.verdicts(pod.text()) if m == RACE_MODEL]
        require(len(found) == 1, f"check 4: promoter {pod.name} printed no decision; log {pod.log}")
        versions[found[0]] = score
    try:
        tags = check_race_outcome(s.tracking, RACE_MODEL, versions)
    except AssertionError as exc:
        raise RehearsalFailure(f"check 4: the promotion race: {exc}") from None
    champions = [v for v in versions if "champion" in s.client.get_model_version(RACE_MODEL, v).aliases]
    require(len(champions) == 1, f"check 4: {len(champions)} champions")
    waited = max(float(t.get("gate.lock_waited_s", 0)) for t in tags.values())
    print(f"  check 4: champion v{champions[0]} (score {versions[champions[0]]}); decisions by version "
          f"{ {v: t['gate.decision'] for v, t in tags.items()} }; longest lock wait {waited:.1f} s", flush=True)
    return {"promoters": len(racers), "champions": len(champions)}


def rehearse(work: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Services, two pipeline runs, the kill and resume, the promoters; returns the RESULT figures."""
    s = set_up(work, stack)
    figures = {"stages": len(s.stages), **first_run(s, "rehearsal__run-1")}
    second_run(s, "rehearsal__run-2", "rehearsal__run-1")
    figures.update(race(s))
    return {k: figures[k] for k in ("stages", "stage_runs", "download_runs", "resumed_step", "promoters",
                                    "champions")}


def main() -> int:
    """``python -m tests.rehearsal``: exit 0 when every check passed."""
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="lpr-rehearsal-"))
    print(f"rehearsal in {work}", flush=True)
    try:
        with contextlib.ExitStack() as stack:
            figures = rehearse(work, stack)
    except RehearsalFailure as exc:
        print(f"REHEARSAL FAILED: {exc}\n(pods' folders and logs kept in {work})", file=sys.stderr, flush=True)
        return 1
    seconds = round(time.monotonic() - t0)
    if not os.environ.get("LPR_REHEARSAL_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in {**figures, "seconds": seconds}.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
