"""The two ways a task runs: ``local`` (a bash command in the project checkout) and ``kubernetes``.

Both build one Airflow operator per ``dvc.yaml`` stage and one per plain command (``promote``,
``setup``). Every task gets the run's id (the Airflow run id) and trigger params
(``params_overrides``, ``data_url``): as environment variables in the checkout, as the container's
arguments in a pod (:func:`components.podspec.run_arguments`, as in the KFP steps). Every task
has an ``execution_timeout``, retries from the settings and the failure callback of
:class:`FailureReporter`.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from typing import TYPE_CHECKING, Any

from components.orchestration import RUN_ID_ENV, TRIGGER_ENV, TRIGGER_PARAMS, Settings, resolve_tool

if TYPE_CHECKING:
    from lpr_core.dvcgraph import Stage

log = logging.getLogger("lpr.pipeline")

#: The run id, as an Airflow template: the MLflow runs of one DAG run share it.
RUN_ID = "{{ run_id }}"
#: The trigger params as Airflow templates (the overrides as JSON), rendered per run.
TRIGGER_TEMPLATES = {"params_overrides": "{{ params.params_overrides | tojson }}",
                     "data_url": "{{ params.data_url }}"}
#: The same for a DAG without trigger params (``lpr_promote``): no overrides, the tracked data.
NO_TRIGGER = {"params_overrides": "{}", "data_url": ""}


def run_environment(trigger_params: bool) -> dict[str, str]:
    """The environment carrying the run id and trigger params into a local task (templates)."""
    values = TRIGGER_TEMPLATES if trigger_params else NO_TRIGGER
    return {RUN_ID_ENV: RUN_ID, **{TRIGGER_ENV[name]: values[name] for name in TRIGGER_PARAMS}}


class FailureReporter:
    """``on_failure_callback``: logs which stage failed, with the exception and where its logs are."""

    def __init__(self, runner: str, namespace: str | None = None) -> None:
        self.runner = runner
        self.namespace = namespace

    def log_locations(self, ti: Any) -> list[str]:
        """Where the failed try's logs are: the UI, the worker's log file, the pod (kubernetes)."""
        where = []
        try:
            where.append(f"Airflow UI: {ti.log_url}")
        except Exception:  # noqa: BLE001 - a missing [api] base_url must not hide the failure itself
            pass
        path = self._log_file(ti)
        if path:
            where.append(f"task log file: {path}")
        if self.runner == "kubernetes":
            where.append(f"pod: kubectl -n {self.namespace} logs -l dag_id={ti.dag_id},task_id={ti.task_id} "
                         "--tail=200 (failed pods are kept)")
        return where

    @staticmethod
    def _log_file(ti: Any) -> str | None:
        try:
            import jinja2
            from airflow.configuration import conf

            folder = conf.get("logging", "base_log_folder")
            name = jinja2.Template(conf.get("logging", "log_filename_template")).render(
                ti=ti, try_number=ti.try_number)
            return f"{folder.rstrip('/')}/{name}"
        except Exception:  # noqa: BLE001 - best effort: the message is still logged without it
            return None

    def message(self, context: Any) -> str:
        """The one-paragraph failure message (also useful to tests)."""
        ti = context["ti"]
        exc = context.get("exception")
        where = "; ".join(self.log_locations(ti)) or "see the task log"
        return (f"LPR pipeline: stage '{ti.task_id}' failed in run {ti.run_id} (try {ti.try_number}, "
                f"{self.runner} runner): {exc!r}. Logs: {where}")

    def __call__(self, context: Any) -> None:
        log.error("%s", self.message(context))


class LocalRunner:
    """Stages as ``dvc repro --single-item <stage>`` in the project checkout (BashOperator)."""

    name = "local"

    def __init__(self, settings: Settings, trigger_params: bool = True) -> None:
        self.settings = settings
        self.env = run_environment(trigger_params)
        self.on_failure = FailureReporter(self.name)

    def _bash(self, task_id: str, command: str, **kwargs: Any):
        from airflow.providers.standard.operators.bash import BashOperator

        # the stages' `python` (run by dvc) must be this interpreter's environment, activated or not
        bin_dir = shlex.quote(os.path.dirname(sys.executable))
        return BashOperator(
            task_id=task_id,
            bash_command=f'export PATH={bin_dir}:"$PATH"; {command}',
            cwd=str(self.settings.project_dir),
            env=self.env,
            append_env=True,
            skip_on_exit_code=None,  # the default (99) would turn a failing stage into a skip
            do_xcom_push=False,
            execution_timeout=self.settings.timeout(task_id),
            on_failure_callback=self.on_failure,
            **self.settings.retry_args(task_id),
            **kwargs,
        )

    def stage(self, stage: Stage):
        """The task of one ``dvc.yaml`` stage."""
        dvc = resolve_tool(self.settings.dvc_command)
        return self._bash(stage.name, f"{dvc} repro --single-item {shlex.quote(stage.name)}",
                          doc_md=f"DVC stage `{stage.name}`: `{stage.cmd}`")

    def command(self, task_id: str, command: str, doc: str, restore: str | None = None, **kwargs: Any):
        """A task running a plain shell command (an Airflow template) in the checkout.

        ``restore`` is ignored: the checkout already holds every stage's outputs.
        """
        return self._bash(task_id, resolve_tool(command), doc_md=doc, **kwargs)

    def configure_run(self):
        """The first task: the checkout's ``params.yaml`` restored to the committed one, then the run's
        ``params_overrides`` applied (``lpr params apply``), and its ``data_url`` fetched into ``data/lpr4m``."""
        return self._bash("configure_run", f"{shlex.quote(sys.executable)} -m components.pod configure",
                          doc_md="Gives the checkout the run's params (committed params.yaml plus "
                                 "`params_overrides`) and data (`data_url`, when set).")


class KubernetesRunner:
    """Stages as pods rendered by ``components.podspec`` (KubernetesPodOperator)."""

    name = "kubernetes"

    def __init__(self, settings: Settings, trigger_params: bool = True) -> None:
        from components import podspec

        self.settings = settings
        k = settings.kubernetes
        overrides = {key: value for key, value in (("image", k.image), ("namespace", k.namespace)) if value}
        self.runtime = podspec.load_runtime(settings.runtime_yaml(), overrides)
        values = TRIGGER_TEMPLATES if trigger_params else NO_TRIGGER
        self.arguments = podspec.run_arguments(RUN_ID, values["params_overrides"], values["data_url"])
        self.on_failure = FailureReporter(self.name, self.runtime.namespace)

    def check_stages(self) -> None:
        """Warn about stages whose outputs pods cannot restore from the DVC remote."""
        from components.podspec import uncached_outputs

        for stage, paths in uncached_outputs(self.settings.dvc_yaml).items():
            log.warning("dvc.yaml: stage %r has uncached outputs (%s): DVC does not push them, so the pods "
                        "after it cannot restore them; drop `cache: false` for the kubernetes runner",
                        stage, ", ".join(paths))

    def _pod(self, task_id: str, template: dict[str, Any], **kwargs: Any):
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

        from components.podspec import k8s_name

        k = self.settings.kubernetes
        timeout = self.settings.timeout(task_id)
        return KubernetesPodOperator(
            task_id=task_id,
            name=k8s_name("lpr", task_id),
            namespace=self.runtime.namespace,
            pod_template_dict=template,
            arguments=list(self.arguments),
            kubernetes_conn_id=k.conn_id,
            in_cluster=k.in_cluster,
            config_file=k.config_file,
            startup_timeout_seconds=self.runtime.startup_timeout_seconds,
            active_deadline_seconds=int(timeout.total_seconds()),
            on_finish_action=k.on_finish_action,
            get_logs=True,
            do_xcom_push=False,
            random_name_suffix=True,
            execution_timeout=timeout,
            on_failure_callback=self.on_failure,
            **self.settings.retry_args(task_id),
            **kwargs,
        )

    def stage(self, stage: Stage):
        """The pod of one ``dvc.yaml`` stage: ``python -m components.pod run <stage>``."""
        from components.podspec import stage_pod_template

        return self._pod(stage.name, stage_pod_template(stage.name, self.runtime),
                         doc_md=f"DVC stage `{stage.name}` in a pod: `{stage.cmd}`")

    def command(self, task_id: str, command: str, doc: str, restore: str | None = None, **kwargs: Any):
        """A pod (stage image, default resources) running a shell command after restoring ``restore``."""
        from components.podspec import exec_command, stage_pod_template

        return self._pod(task_id, stage_pod_template(task_id, self.runtime, command=exec_command(command, restore)),
                         doc_md=doc, **kwargs)


def make_runner(settings: Settings, trigger_params: bool = True) -> LocalRunner | KubernetesRunner:
    """The runner the settings ask for; ``trigger_params``: the DAG has ``params_overrides`` and ``data_url``."""
    return (KubernetesRunner if settings.runner == "kubernetes" else LocalRunner)(settings, trigger_params)
