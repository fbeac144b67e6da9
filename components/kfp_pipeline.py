"""The pipeline for Kubeflow Pipelines v2: one container step per ``dvc.yaml`` stage, then the gate.

Each step is the stage's container from :func:`components.podspec.stage_container`: the same
image, the same command (``python -m components.pod run <stage>``), the same environment (values
and secret keys), resources, GPUs, node selector, tolerations and writable ``emptyDir`` mounts as
the Airflow pod of that stage; the run's id and trigger params come as arguments
(:func:`components.podspec.run_arguments`), as they do in the Airflow pod. The order, retries and
timeouts are the Airflow DAG's settings (:mod:`components.orchestration`), so both orchestrators
run the same pipeline. KFP's own caching is off: the ``dvc.lock`` exchange and DVC's run cache
decide what reruns.

KFP pins ``kubernetes<31`` and ``protobuf<7``, so this module runs in its own small environment
(``requirements/kfp-lock.txt``)::

    python -m components.kfp_pipeline --out components/pipeline.yaml

Importing the module needs no kfp; :func:`build_pipeline` and :func:`compile_pipeline` do.
"""

# No `from __future__ import annotations`: KFP reads the component signatures' real types.
import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components import orchestration, podspec
from lpr_core.dvcgraph import load_stages

PIPELINE_YAML = Path(__file__).with_name("pipeline.yaml")
PIPELINE_NAME = "lpr-pipeline"
#: Pipeline inputs and their defaults: the trigger params of every orchestrator.
PIPELINE_INPUTS = dict(orchestration.TRIGGER_PARAMS)


def load_dag_settings(environ: dict[str, str] | None = None) -> orchestration.Settings:
    """The DAG settings (order, retries, timeouts, the gate command) of the committed settings file."""
    return orchestration.load_settings({} if environ is None else environ)


def _component(step: str, container: dict[str, Any]) -> Callable:
    """A KFP container component running ``container`` (a podspec container dict)."""
    from kfp import dsl

    command, image = list(container["command"]), container["image"]

    def component(run_id: str, params_overrides: dict, data_url: str):
        return dsl.ContainerSpec(image=image, command=command,
                                 args=podspec.run_arguments(run_id, params_overrides, data_url))

    component.__name__ = f"lpr_{step}"
    component.__doc__ = f"LPR step {step!r}: {' '.join(command[:5])}"
    return dsl.container_component(component)


def _configure(task, step: str, container: dict[str, Any], rt: podspec.Runtime,
               settings: orchestration.Settings) -> None:
    from kfp import kubernetes

    task.set_display_name(step)
    task.set_caching_options(False)  # the dvc.lock exchange and DVC's run cache decide what reruns
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
    secrets: dict[str, dict[str, str]] = {}
    for env in container["env"]:
        if "valueFrom" in env:
            ref = env["valueFrom"]["secretKeyRef"]
            secrets.setdefault(ref["name"], {})[ref["key"]] = env["name"]
        else:
            task.set_env_variable(env["name"], env["value"])
    for name, key_to_env in secrets.items():
        kubernetes.use_secret_as_env(task, secret_name=name, secret_key_to_env=key_to_env, optional=True)
    # KFP sets no working directory: the steps start in the image's WORKDIR, runtime.yaml's workdir
    sizes = {v["name"]: v["emptyDir"] for v in podspec.volumes(rt)}
    for mount in container["volumeMounts"]:
        empty_dir = sizes[mount["name"]]
        kubernetes.empty_dir_mount(task, volume_name=mount["name"], mount_path=mount["mountPath"],
                                   medium=empty_dir.get("medium"), size_limit=empty_dir.get("sizeLimit"))
    sc = container["securityContext"]
    kubernetes.set_security_context(task, run_as_user=sc["runAsUser"], run_as_group=sc["runAsGroup"],
                                    run_as_non_root=sc["runAsNonRoot"])
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


    stages = load_stages(dvc_yaml)
    steps = [(s.name, podspec.stage_container(s.name, rt)) for s in stages]
    promote = podspec.stage_container("promote", rt,
                                      command=podspec.exec_command(settings.promote_command, restore=stages[-1].name))
    components = {name: _component(name, c) for name, c in [*steps, ("promote", promote)]}
    containers = dict([*steps, ("promote", promote)])

    @dsl.pipeline(name=PIPELINE_NAME, description="LPR: every dvc.yaml stage as a pod, then the registry gate.")
    def lpr_pipeline(params_overrides: dict = PIPELINE_INPUTS["params_overrides"],  # noqa: B006 - KFP's default
                     data_url: str = PIPELINE_INPUTS["data_url"]):
        tasks = {}
        for name, _ in [*steps, ("promote", promote)]:
            task = components[name](run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, params_overrides=params_overrides,
                                    data_url=data_url)
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
        print(f"warning: {args.dvc_yaml}: stage {stage!r} has uncached outputs ({', '.join(paths)}): DVC does not "
              "push them, so the steps after it cannot restore them", file=sys.stderr)
    out = compile_pipeline(args.out, args.dvc_yaml, args.runtime, environ=None)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
