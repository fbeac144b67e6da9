"""The two ways a task runs: ``local`` (a bash command in the project checkout) and ``kubernetes``.

Both build one Airflow operator per ``dvc.yaml`` stage and one per plain command (``promote``,
``setup``). Every task gets the same environment (``LPR_PIPELINE_RUN_ID`` = the Airflow run id,
plus the run's params), an ``execution_timeout``, retries from the settings and the failure
callback of :class:`FailureReporter`.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from typing import TYPE_CHECKING, Any

from lpr_dags.settings import Settings, resolve_tool

if TYPE_CHECKING:
    from lpr_core.dvcgraph import Stage

log = logging.getLogger("lpr.pipeline")

#: Environment of every task: the MLflow runs of one DAG run share LPR_PIPELINE_RUN_ID.
RUN_ENV = {"LPR_PIPELINE_RUN_ID": "{{ run_id }}"}


def params_env(names: tuple[str, ...]) -> dict[str, str]:
    """``LPR_<NAME>`` variables carrying the run's params (templates, rendered per run)."""
    return {f"LPR_{n.upper()}": f"{{{{ params.{n} }}}}" for n in names}


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

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = {**RUN_ENV, **env}
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

    def command(self, task_id: str, command: str, doc: str, restore: str | None = None):
        """A task running a plain shell command (an Airflow template) in the checkout.

        ``restore`` is ignored: the checkout already holds every stage's outputs.
        """
        return self._bash(task_id, resolve_tool(command), doc_md=doc)


class KubernetesRunner:
    """Stages as pods rendered by ``components.podspec`` (KubernetesPodOperator)."""

    name = "kubernetes"

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        from components import podspec

        self.settings = settings
        k = settings.kubernetes
        overrides = {key: value for key, value in (("image", k.image), ("namespace", k.namespace)) if value}
        self.runtime = podspec.load_runtime(settings.runtime_yaml(), overrides)
        self.env = {**RUN_ENV, **env}
        self.on_failure = FailureReporter(self.name, self.runtime.namespace)

    def check_stages(self) -> None:
        """Warn about stages whose outputs pods cannot restore from the DVC remote."""
        from components.podspec import uncached_outputs

        for stage, paths in uncached_outputs(self.settings.dvc_yaml).items():
            log.warning("dvc.yaml: stage %r has uncached outputs (%s): pods cannot restore it from the DVC "
                        "remote, so each downstream pod will run it again; drop `cache: false` for the "
                        "kubernetes runner", stage, ", ".join(paths))

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
            env_vars=dict(self.env),
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
        """The pod of one ``dvc.yaml`` stage: ``dvc repro --pull``, then ``dvc push --run-cache``."""
        from components.podspec import stage_pod_template

        return self._pod(stage.name, stage_pod_template(stage.name, self.runtime),
                         doc_md=f"DVC stage `{stage.name}` in a pod: `{stage.cmd}`")

    def command(self, task_id: str, command: str, doc: str, restore: str | None = None):
        """A pod (stage image, default resources) running a shell command after restoring ``restore``."""
        from components.podspec import command_script, stage_pod_template

        script = command_script(command, restore)
        return self._pod(task_id, stage_pod_template(task_id, self.runtime, command=["bash", "-c", script]),
                         doc_md=doc)


def make_runner(settings: Settings, env: dict[str, str]) -> LocalRunner | KubernetesRunner:
    """The runner the settings ask for."""
    return (KubernetesRunner if settings.runner == "kubernetes" else LocalRunner)(settings, env)
