"""Orchestration settings shared by the Airflow DAGs (``dags/``) and the pod side (``components/``).

One module says how a pipeline run is orchestrated, so the Airflow DAGs, the Kubernetes pods and
the Kubeflow pipeline cannot drift apart:

- the **trigger params** of a pipeline run (:data:`TRIGGER_PARAMS`) and the environment variables
  that carry them and the run id into every stage (:data:`TRIGGER_ENV`, :data:`RUN_ID_ENV`);
- the **settings** of the DAGs (:class:`Settings`): where the project is, how stages run,
  timeouts, retries, commands, the promotion pool.

Settings are read at parse time from a YAML file and the environment, never from Airflow
Variables (a Variable read at parse time costs a database round trip on every parse). Precedence,
lowest to highest:

1. the defaults of :class:`Settings`;
2. the YAML file ``$LPR_AIRFLOW_CONFIG`` (default: ``lpr_airflow.yaml`` beside the DAG files);
3. environment variables: ``LPR_RUNNER`` (``local`` or ``kubernetes``), ``LPR_PROJECT_DIR``,
   ``LPR_PROMOTE_COMMAND``, ``LPR_IMAGE`` (the stage image, overriding ``runtime.yaml``).

Commands (``promote_command``, ``setup_command``, ...) are Airflow templates: they may use
``{{ run_id }}`` and ``{{ params.<name> }}``. A command starting with ``dvc`` or ``lpr`` runs
through the parsing interpreter (``python -m ...``) when that tool is not on ``PATH`` (local
runner only: the stage image always has both).

Importing this module imports only the standard library (``yaml`` when settings are read), so the
DAG processor parses fast and the KFP compiler's small environment can use it too.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
#: The DAG folder of this checkout (the Airflow image copies it elsewhere and passes its own).
DAGS_DIR = REPO / "dags"
SETTINGS_FILE_NAME = "lpr_airflow.yaml"
RUNNERS = ("local", "kubernetes")
EDGES = ("chain", "dataflow")
#: Tools the local runner may run through ``python -m <module>`` when they are not on PATH.
_TOOL_MODULES = {"dvc": "dvc", "lpr": "lpr_core.cli"}

#: The id shared by every stage of one pipeline run (the Airflow run id, the KFP job name); the
#: MLflow runs of one pipeline run carry it as ``lpr.pipeline_run_id``.
RUN_ID_ENV = "LPR_PIPELINE_RUN_ID"
#: Where pods exchange the ``dvc.lock`` entries of a pipeline run (an fsspec URL: ``s3://...``).
RUNS_URL_ENV = "LPR_RUNS_URL"
#: The trigger params of a pipeline run and their defaults. ``params_overrides``: a JSON object of
#: dotted ``params.yaml`` keys and values (``{"train_encoder.train.lr": 0.003}``), applied with
#: ``lpr params apply`` before any stage; ``data_url``: an fsspec URL of an LPR4M folder fetched
#: into ``data/lpr4m`` before the stages that read it (empty: the data the checkout or image tracks).
TRIGGER_PARAMS: dict[str, Any] = {"params_overrides": {}, "data_url": ""}
#: The environment variable carrying each trigger param into every task (and the stages' MLflow tags).
TRIGGER_ENV = {"params_overrides": "LPR_PARAMS_OVERRIDES", "data_url": "LPR_DATA_URL"}
#: The folder of the LPR4M URL and annotation files every stage graph reads (``dvc.yaml``).
LPR4M_DIR = "data/lpr4m"


def params_keys(params: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """The dotted keys a run's ``params_overrides`` may name: every value of ``params`` but a section.

    ``train_encoder.train.lr``, ``validate.required``, ... in file order (a non-empty mapping is a
    section, whose keys are named instead); ``lpr params apply`` checks the values' types.
    """
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from params_keys(value, f"{name}.")
        else:
            yield name


class SettingsError(ValueError):
    """A settings file or variable that cannot be used; the message names the file or variable."""


@dataclass(frozen=True)
class KubernetesSettings:
    """How the ``kubernetes`` runner reaches the cluster; pods themselves come from ``runtime.yaml``."""

    runtime_yaml: str | None = None  # default: components/runtime.yaml of the installed project
    image: str | None = None  # overrides runtime.yaml's image (e.g. a freshly pushed tag)
    namespace: str | None = None  # overrides runtime.yaml's namespace
    conn_id: str = "kubernetes_default"
    in_cluster: bool | None = None
    config_file: str | None = None
    on_finish_action: str = "delete_succeeded_pod"  # failed pods stay for `kubectl logs`


@dataclass(frozen=True)
class Settings:
    """Everything the DAG builders need; see the module docstring for where values come from."""

    project_dir: Path = REPO
    runner: str = "local"
    edges: str = "chain"  # chain: one stage at a time in dvc.yaml's order; dataflow: dvc.yaml's edges only
    dvc_command: str = "dvc"
    setup_command: str | None = None
    promote_command: str = "lpr promote --candidate-from data/evaluate"
    promote_version_command: str = "lpr promote --version {{ params.version }}"
    rollback_command: str = "lpr rollback"
    #: The Airflow pool of every task that moves registry aliases (``promote``, ``registry``): one
    #: slot, so two promotions never interleave (created by the set-up: ``airflow pools set``).
    promote_pool: str = "lpr_promote"
    default_timeout_minutes: float = 120.0
    stage_timeout_minutes: Mapping[str, float] = field(default_factory=dict)
    promote_timeout_minutes: float = 30.0
    retries: Mapping[str, int] = field(default_factory=dict)
    retry_delay_seconds: float = 60.0
    retry_backoff: float = 2.0
    max_retry_delay_seconds: float = 1800.0
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    source: str = "defaults"  # where the settings were read from (for messages)

    @property
    def dvc_yaml(self) -> Path:
        """The stage graph every task is derived from."""
        return self.project_dir / "dvc.yaml"

    def timeout(self, task_id: str) -> timedelta:
        """The ``execution_timeout`` of a stage or command task."""
        if task_id in self.stage_timeout_minutes:
            return timedelta(minutes=float(self.stage_timeout_minutes[task_id]))
        if task_id in ("promote", "registry"):
            return timedelta(minutes=self.promote_timeout_minutes)
        return timedelta(minutes=self.default_timeout_minutes)

    def retry_args(self, task_id: str) -> dict[str, Any]:
        """``retries`` and the exponential back-off arguments of a task."""
        retries = int(self.retries.get(task_id, 0))
        return {
            "retries": retries,
            "retry_delay": timedelta(seconds=self.retry_delay_seconds),
            "retry_exponential_backoff": self.retry_backoff if retries else 0,
            "max_retry_delay": timedelta(seconds=self.max_retry_delay_seconds),
        }

    def runtime_yaml(self) -> Path:
        """The ``runtime.yaml`` the kubernetes runner renders pods from (a relative path is project-relative)."""
        if self.kubernetes.runtime_yaml is None:
            from components.podspec import RUNTIME_YAML

            return RUNTIME_YAML
        p = Path(self.kubernetes.runtime_yaml)
        return p if p.is_absolute() else self.project_dir / p


def _check_keys(raw: Mapping[str, Any], cls: type, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SettingsError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _positive(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: expected a number, got {value!r}") from None
    if number <= 0:
        raise SettingsError(f"{where}: must be > 0, got {value!r}")
    return number


def _from_mapping(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    _check_keys(raw, Settings, where)
    values = dict(raw)
    k8s = values.pop("kubernetes", None) or {}
    if not isinstance(k8s, Mapping):
        raise SettingsError(f"{where}: 'kubernetes' must be a mapping")
    _check_keys(k8s, KubernetesSettings, f"{where}: kubernetes")
    values["kubernetes"] = KubernetesSettings(**k8s)
    for key in ("stage_timeout_minutes", "retries"):
        section = values.get(key) or {}
        if not isinstance(section, Mapping):
            raise SettingsError(f"{where}: '{key}' must map stage names to numbers")
        values[key] = dict(section)
    return values


def load_settings(environ: Mapping[str, str] | None = None, dags_dir: str | Path | None = None) -> Settings:
    """Read the settings: defaults, then the YAML file, then the environment.

    Args:
        environ: the environment to read (default ``os.environ``).
        dags_dir: the DAG folder (default: this checkout's ``dags/``); its ``lpr_airflow.yaml`` is
            the default settings file and its parent the default project directory.

    Returns:
        The validated settings.

    Raises:
        SettingsError: an unreadable file, an unknown key, a bad runner or a bad number; the message
            names the file or the variable.
    """
    env = os.environ if environ is None else environ
    dags = Path(dags_dir) if dags_dir is not None else DAGS_DIR
    values: dict[str, Any] = {"project_dir": dags.resolve().parent}
    explicit = env.get("LPR_AIRFLOW_CONFIG")
    path = Path(explicit) if explicit else dags / SETTINGS_FILE_NAME
    source = "defaults"
    if explicit or path.exists():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise SettingsError(f"LPR_AIRFLOW_CONFIG={path}: cannot read it: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, Mapping):
            raise SettingsError(f"{path}: the top level must be a mapping of settings")
        values.update(_from_mapping(raw, str(path)))
        source = str(path)
    if env.get("LPR_RUNNER"):
        values["runner"] = env["LPR_RUNNER"]
    if env.get("LPR_PROJECT_DIR"):
        values["project_dir"] = env["LPR_PROJECT_DIR"]
    if env.get("LPR_PROMOTE_COMMAND"):
        values["promote_command"] = env["LPR_PROMOTE_COMMAND"]
    if env.get("LPR_IMAGE"):
        k8s = values.get("kubernetes", KubernetesSettings())
        values["kubernetes"] = dataclasses.replace(k8s, image=env["LPR_IMAGE"])
    settings = Settings(**{**values, "source": source})
    return _validated(settings)


def _validated(s: Settings) -> Settings:
    where = s.source
    if s.runner not in RUNNERS:
        raise SettingsError(f"{where} / LPR_RUNNER: runner must be one of {', '.join(RUNNERS)}, got {s.runner!r}")
    if s.edges not in EDGES:
        raise SettingsError(f"{where}: edges must be one of {', '.join(EDGES)}, got {s.edges!r}")
    if s.runner == "local" and s.edges == "dataflow":
        raise SettingsError(f"{where}: edges 'dataflow' needs the kubernetes runner: local stages share one "
                            "checkout, where two `dvc repro` cannot run at once")
    project = Path(s.project_dir).expanduser()
    if not project.is_absolute():
        raise SettingsError(f"{where} / LPR_PROJECT_DIR: project_dir must be absolute, got {str(project)!r}")
    for key in ("default_timeout_minutes", "promote_timeout_minutes", "retry_delay_seconds",
                "max_retry_delay_seconds"):
        _positive(getattr(s, key), f"{where}: {key}")
    for stage, minutes in s.stage_timeout_minutes.items():
        _positive(minutes, f"{where}: stage_timeout_minutes.{stage}")
    for stage, n in s.retries.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise SettingsError(f"{where}: retries.{stage} must be an integer >= 0, got {n!r}")
    if not s.promote_pool:
        raise SettingsError(f"{where}: promote_pool must name an Airflow pool")
    if s.retry_backoff < 0:
        raise SettingsError(f"{where}: retry_backoff must be >= 0 (0: constant delay)")
    return dataclasses.replace(s, project_dir=project)


def resolve_tool(command: str) -> str:
    """``command`` with a leading ``dvc``/``lpr`` replaced by ``<python> -m <module>`` when not on PATH.

    Workers started from a virtual environment without activating it have the interpreter but not
    its scripts on ``PATH``; the module form works in both cases.
    """
    head, _, rest = command.strip().partition(" ")
    module = _TOOL_MODULES.get(head)
    if module is None or shutil.which(head):
        return command
    return f"{shlex.quote(sys.executable)} -m {module} {rest}".rstrip()
