"""The MLflow model registry: candidates, the ``champion`` alias, promotion and rollback.

Registry stages are deprecated in MLflow; the registry is driven by aliases:
``champion`` (served), ``previous-champion`` (what ``lpr rollback`` restores). Aliases are always
resolved with ``get_model_version_by_alias`` (search results do not carry them).

A version's scores live in its tags: ``metric.<name>`` (e.g. ``metric.test/rank1``),
``lpr.data_version``, ``lpr.validation_passed``. Every gate decision, pass or fail, is recorded on
the candidate as ``gate.*`` tags with its evidence.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from lpr_core.tracking.gate import Decision, GateConfig, Scores, decide

CHAMPION = "champion"
PREVIOUS = "previous-champion"
HISTORY_TAG = "lpr.champion_history"
METRIC_PREFIX = "metric."

#: rescore(version) -> (metrics, data_version): scores a registered version on the current test data.
Rescorer = Callable[[str], tuple[Mapping[str, float], str]]


class RegistryError(RuntimeError):
    """An expected registry failure with a readable message."""


def _client(tracking_uri: str | None = None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def version_tags(metrics: Mapping[str, float], data_version: str | None, validation_passed: bool,
                 extra: Mapping[str, object] | None = None) -> dict[str, str]:
    """The tags that carry a version's scores and lineage."""
    tags = {f"{METRIC_PREFIX}{k}": f"{float(v):.6f}" for k, v in metrics.items()}
    tags["lpr.data_version"] = str(data_version)
    tags["lpr.validation_passed"] = str(bool(validation_passed)).lower()
    tags.update({k: str(v) for k, v in (extra or {}).items() if v is not None})
    return tags


def register_candidate(model_uri: str, metrics: Mapping[str, float], data_version: str | None,
                       validation_passed: bool, *, cfg: GateConfig = GateConfig(), run_id: str | None = None,
                       extra_tags: Mapping[str, object] | None = None, tracking_uri: str | None = None) -> str:
    """Register ``model_uri`` as a new version of ``cfg.model_name``, tagged with its scores; return the version."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        client.get_registered_model(cfg.model_name)
    except MlflowException:
        try:
            client.create_registered_model(cfg.model_name, description="LPR clip/image encoder (+ detector)")
        except MlflowException:  # created concurrently
            pass
    # a logged model (``models:/m-<id>``) must be named by its id too, or a tracking server refuses it
    model_id = model_uri[len("models:/"):] if model_uri.startswith("models:/m-") else None
    mv = client.create_model_version(
        cfg.model_name, model_uri, run_id=run_id,
        tags=version_tags(metrics, data_version, validation_passed, extra_tags), model_id=model_id,
    )
    return str(mv.version)


def read_scores(version: str, cfg: GateConfig = GateConfig(), tracking_uri: str | None = None) -> Scores:
    """Scores of a registered version, read back from its tags."""
    mv = _client(tracking_uri).get_model_version(cfg.model_name, str(version))
    tags = mv.tags or {}
    metrics = {k[len(METRIC_PREFIX):]: float(v) for k, v in tags.items() if k.startswith(METRIC_PREFIX)}
    dv = tags.get("lpr.data_version")
    return Scores(str(mv.version), metrics, None if dv in (None, "None") else dv,
                  tags.get("lpr.validation_passed", "false") == "true")


def alias_version(alias: str, cfg: GateConfig = GateConfig(), tracking_uri: str | None = None) -> str | None:
    """The version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(tracking_uri).get_model_version_by_alias(cfg.model_name, alias).version)
    except MlflowException:
        return None


def _lock_path(tracking_uri: str | None) -> Path:
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).with_suffix(".promote.lock")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"lpr-promote-{digest}.lock"


def _history(client, cfg: GateConfig) -> list[str]:
    tags = client.get_registered_model(cfg.model_name).tags or {}
    try:
        return [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]
    except ValueError:
        return []


def promote(candidate_version: str, cfg: GateConfig = GateConfig(), *, rescore: Rescorer | None = None,
            tracking_uri: str | None = None, timeout_s: float = 120.0) -> Decision:
    """Run the gate for ``candidate_version`` and move ``champion`` when it passes.

    The decision and the alias moves happen under a lock, so two promotions at once are serialised
    and the second is judged against the champion the first may have just set. When the champion
    was scored on another data version and ``rescore`` is given, the champion is scored again first
    (its tags are updated, the old scores kept under ``rescored_from``).
    """
    from filelock import FileLock

    client = _client(tracking_uri)
    with FileLock(str(_lock_path(tracking_uri)), timeout=timeout_s):
        candidate = read_scores(candidate_version, cfg, tracking_uri)
        champ_v = alias_version(CHAMPION, cfg, tracking_uri)
        if champ_v == candidate.version:
            raise RegistryError(f"version {candidate.version} of {cfg.model_name} is already the champion")
        champion = read_scores(champ_v, cfg, tracking_uri) if champ_v else None
        if champion is not None and champion.data_version != candidate.data_version and rescore is not None:
            metrics, dv = rescore(champion.version)
            client.set_model_version_tag(cfg.model_name, champion.version, "rescored_from",
                                         json.dumps({"data_version": champion.data_version,
                                                     "metrics": dict(champion.metrics)}))
            for k, v in version_tags(metrics, dv, champion.validation_passed).items():
                client.set_model_version_tag(cfg.model_name, champion.version, k, v)
            champion = read_scores(champion.version, cfg, tracking_uri)
        decision = decide(candidate, champion, cfg)
        tags = {**decision.evidence(), "gate.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for k, v in tags.items():
            client.set_model_version_tag(cfg.model_name, candidate.version, k, v)
        if decision.promote:
            history = _history(client, cfg)
            if champ_v:
                client.set_registered_model_alias(cfg.model_name, PREVIOUS, champ_v)
            client.set_registered_model_alias(cfg.model_name, CHAMPION, candidate.version)
            client.set_registered_model_tag(cfg.model_name, HISTORY_TAG, json.dumps(history + [candidate.version]))
        return decision


def rollback(cfg: GateConfig = GateConfig(), *, tracking_uri: str | None = None,
             timeout_s: float = 120.0) -> tuple[str, str]:
    """Move ``champion`` back to the previous champion; return ``(from_version, to_version)``."""
    from filelock import FileLock

    client = _client(tracking_uri)
    with FileLock(str(_lock_path(tracking_uri)), timeout=timeout_s):
        current = alias_version(CHAMPION, cfg, tracking_uri)
        previous = alias_version(PREVIOUS, cfg, tracking_uri)
        if current is None or previous is None:
            raise RegistryError(f"{cfg.model_name}: no previous champion to roll back to")
        history = _history(client, cfg)
        if history and history[-1] == current:
            history = history[:-1]
        client.set_registered_model_alias(cfg.model_name, CHAMPION, previous)
        earlier = history[-2] if len(history) >= 2 and history[-1] == previous else None
        if earlier:
            client.set_registered_model_alias(cfg.model_name, PREVIOUS, earlier)
        else:
            client.delete_registered_model_alias(cfg.model_name, PREVIOUS)
        client.set_registered_model_tag(cfg.model_name, HISTORY_TAG, json.dumps(history))
        client.set_model_version_tag(cfg.model_name, current, "gate.rolled_back",
                                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return current, previous
