"""The pipeline for Kubeflow Pipelines v2: one container component per ``dvc.yaml`` stage.

Each component is the stage's container from :func:`components.podspec.stage_container`: the same
image, the same ``dvc repro --pull <stage>`` / ``dvc push --run-cache <stage>`` script, the same
CPU, memory and GPUs, node selector and tolerations (from ``runtime.yaml``). The order, retries
and timeouts are the Airflow DAG's (``dags/lpr_airflow.yaml``), so both orchestrators run the
same pipeline. KFP's own caching is off: DVC's run cache decides what reruns.

KFP pins ``kubernetes<31`` and ``protobuf<7``, so this module runs in its own small environment
(``requirements/kfp-lock.txt``)::

    python -m components.kfp_pipeline --out components/pipeline.yaml

Importing the module needs no kfp; :func:`build_pipeline` and :func:`compile_pipeline` do.
"""

# No `from __future__ import annotations`: KFP reads the component signatures' real types.
import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components import podspec

REPO = Path(__file__).resolve().parents[1]
DAG_SETTINGS_MODULE = REPO / "dags" / "lpr_dags" / "settings.py"
PIPELINE_YAML = Path(__file__).with_name("pipeline.yaml")
PIPELINE_NAME = "lpr-pipeline"
#: Pipeline inputs and their defaults: the Airflow DAG's params (a test keeps them equal), exported
#: to every step as LPR_<NAME>.
PIPELINE_INPUTS = {"world_size": "tiny", "seed": 0, "data_prefix": "data"}
#: Keys of the DVC remote's secret (runtime.yaml's env_from_secret) exposed to the steps (S3-style remotes).
REMOTE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
#: Exports the run id and the inputs, then runs the stage's own script unchanged (the last argument).
ENTRYPOINT = ('export LPR_PIPELINE_RUN_ID="$0" LPR_WORLD_SIZE="$1" LPR_SEED="$2" LPR_DATA_PREFIX="$3"\n'
              'exec bash -c "$4"\n')


def load_dag_settings(environ: dict[str, str] | None = None):
    """The Airflow DAG settings (order, retries, timeouts), read by the DAGs' own loader.

    ``dags/`` is not a package; the loader is imported from its file (it imports only yaml).
    """
    spec = importlib.util.spec_from_file_location("lpr_dag_settings", DAG_SETTINGS_MODULE)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses resolve their module while the class is created
    spec.loader.exec_module(module)
    return module.load_settings({} if environ is None else environ)


def _component(step: str, container: dict[str, Any]) -> Callable:
    """A KFP container component running ``container`` (a podspec container dict)."""
    from kfp import dsl

    script = container["command"][-1]
    image = container["image"]

    def component(run_id: str, world_size: str, seed: int, data_prefix: str):
        return dsl.ContainerSpec(image=image, command=["bash", "-c", ENTRYPOINT],
                                 args=[run_id, world_size, seed, data_prefix, script])

    component.__name__ = f"lpr_{step}"
    component.__doc__ = f"LPR step {step!r}: {script.splitlines()[1] if len(script.splitlines()) > 1 else ''}"
    return dsl.container_component(component)


def _configure(task, step: str, container: dict[str, Any], rt: podspec.Runtime, settings) -> None:
    from kfp import kubernetes

    task.set_display_name(step)
    task.set_caching_options(False)  # DVC's run cache decides what reruns, not KFP's cache
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    task.set_cpu_request(requests["cpu"]).set_cpu_limit(limits["cpu"])
    task.set_memory_request(requests["memory"]).set_memory_limit(limits["memory"])
    gpus = limits.get(rt.gpu_resource)
    if gpus:
        task.set_accelerator_type(rt.gpu_resource).set_accelerator_limit(gpus)
        for key, value in rt.gpu_node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for t in rt.gpu_tolerations:
            kubernetes.add_toleration(task, key=t.get("key"), operator=t.get("operator"), value=t.get("value"),
                                      effect=t.get("effect"))
    for env in container["env"]:
        task.set_env_variable(env["name"], env["value"])
    if rt.env_from_secret:
        kubernetes.use_secret_as_env(task, secret_name=rt.env_from_secret,
                                     secret_key_to_env={k: k for k in REMOTE_SECRET_KEYS}, optional=True)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                               size_limit=rt.shm_size)
    kubernetes.set_image_pull_policy(task, rt.image_pull_policy)
    kubernetes.add_pod_label(task, "app.kubernetes.io/name", "lpr-pipeline")
    kubernetes.set_timeout(task, int(settings.timeout(step).total_seconds()))
    retry = settings.retry_args(step)
    if retry["retries"]:
        task.set_retry(num_retries=retry["retries"],
                       backoff_duration=f"{int(retry['retry_delay'].total_seconds())}s",
                       backoff_factor=float(retry["retry_exponential_backoff"]) or None,
                       backoff_max_duration=f"{int(retry['max_retry_delay'].total_seconds())}s")


def build_pipeline(dvc_yaml: str | Path, rt: podspec.Runtime, settings) -> Callable:
    """The KFP pipeline function: the stages of ``dvc_yaml`` in the DAG's order, then ``promote``.

    Args:
        dvc_yaml: the stage graph.
        rt: the parsed ``runtime.yaml`` (image, resources, GPUs).
        settings: the DAG settings (:func:`load_dag_settings`): edges, retries, timeouts, promote command.
    """
    from kfp import dsl

    from lpr_core.dvcgraph import load_stages

    stages = load_stages(dvc_yaml)
    steps = [(s.name, podspec.stage_container(s.name, rt)) for s in stages]
    promote = podspec.stage_container("promote", rt, command=[
        "bash", "-c", podspec.command_script(settings.promote_command, restore=stages[-1].name)])
    components = {name: _component(name, c) for name, c in [*steps, ("promote", promote)]}
    containers = dict([*steps, ("promote", promote)])

    @dsl.pipeline(name=PIPELINE_NAME, description="LPR: every dvc.yaml stage as a pod, then the registry gate.")
    def lpr_pipeline(world_size: str = PIPELINE_INPUTS["world_size"], seed: int = PIPELINE_INPUTS["seed"],
                     data_prefix: str = PIPELINE_INPUTS["data_prefix"]):
        tasks = {}
        for name, _ in [*steps, ("promote", promote)]:
            task = components[name](run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, world_size=world_size, seed=seed,
                                    data_prefix=data_prefix)
            _configure(task, name, containers[name], rt, settings)
            tasks[name] = task
        if settings.edges == "chain":
            order = [s.name for s in stages] + ["promote"]
            for before, after in zip(order, order[1:]):
                tasks[after].after(tasks[before])
        else:
            for s in stages:
                for up in s.upstream:
                    tasks[s.name].after(tasks[up])
            feeding = {u for s in stages for u in s.upstream}
            for s in stages:
                if s.name not in feeding:
                    tasks["promote"].after(tasks[s.name])

    return lpr_pipeline


def compile_pipeline(out: str | Path = PIPELINE_YAML, dvc_yaml: str | Path = podspec.DVC_YAML,
                     runtime_yaml: str | Path = podspec.RUNTIME_YAML,
                     environ: dict[str, str] | None = None) -> Path:
    """Compile the pipeline to ``out`` (a KFP v2 IR YAML); returns the path.

    The DAG settings are read from the committed ``dags/lpr_airflow.yaml`` only (``environ`` empty
    by default), so the compiled file depends on committed files alone.
    """
    from kfp import compiler

    settings = load_dag_settings(environ)
    pipeline = build_pipeline(dvc_yaml, podspec.load_runtime(runtime_yaml), settings)
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.tmp.yaml")  # the compiler wants a .yaml name; renamed when complete
    compiler.Compiler().compile(pipeline, str(tmp))
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m components.kfp_pipeline``: compile the pipeline YAML."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PIPELINE_YAML, help="where to write the pipeline YAML")
    parser.add_argument("--dvc-yaml", type=Path, default=podspec.DVC_YAML, help="the stage graph")
    parser.add_argument("--runtime", type=Path, default=podspec.RUNTIME_YAML, help="runtime.yaml")
    args = parser.parse_args(argv)
    try:
        import kfp  # noqa: F401
    except ImportError:
        print("kfp is not installed here: build the KFP environment from requirements/kfp-lock.txt "
              "(`make kfp`)", file=sys.stderr)
        return 2
    if not args.dvc_yaml.is_file():
        print(f"{args.dvc_yaml}: no such file", file=sys.stderr)
        return 2
    for stage, paths in podspec.uncached_outputs(args.dvc_yaml).items():
        print(f"warning: {args.dvc_yaml}: stage {stage!r} has uncached outputs ({', '.join(paths)}): steps "
              "cannot restore it from the DVC remote, so each downstream step will run it again", file=sys.stderr)
    out = compile_pipeline(args.out, args.dvc_yaml, args.runtime, environ=None)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
