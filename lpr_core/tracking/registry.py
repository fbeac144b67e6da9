"""The MLflow model registry: candidates, the ``champion`` alias, promotion and rollback.

Registry stages are deprecated in MLflow; the registry is driven by aliases:
``champion`` (served), ``previous-champion`` (what ``lpr rollback`` restores). Aliases are always
resolved with ``get_model_version_by_alias`` (search results do not carry them).

A version's scores live in its tags: ``metric.<name>`` (e.g. ``metric.test/rank1``),
``lpr.data_version``, ``lpr.validation_passed``, and its identity in ``lpr.model_sha256`` (the
checksum of its weight files). Every gate decision, pass or fail, is recorded on the candidate as
``gate.*`` tags with its evidence. Promotions and rollbacks run under the promotion lock of
:mod:`lpr_core.tracking.lock`, which holds across machines; ``lpr.champion_history`` (a
registered-model tag) lists every champion in order.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lpr_core.tracking.gate import Decision, GateConfig, Scores, decide
from lpr_core.tracking.lock import promotion_lock

CHAMPION = "champion"
PREVIOUS = "previous-champion"
HISTORY_TAG = "lpr.champion_history"
METRIC_PREFIX = "metric."
MODEL_SHA_TAG = "lpr.model_sha256"

#: rescore(version) -> (metrics, data_version): scores a registered version on the current test data.
Rescorer = Callable[[str], tuple[Mapping[str, float], str]]


class RegistryError(RuntimeError):
    """An expected registry failure with a readable message."""


def _client(tracking_uri: str | None = None):
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def version_tags(metrics: Mapping[str, float], data_version: str | None, validation_passed: bool,
                 extra: Mapping[str, object] | None = None) -> dict[str, str]:
    """The tags that carry a version's scores and lineage."""
    tags = {f"{METRIC_PREFIX}{k}": f"{_number(v):.6f}" for k, v in metrics.items()}
    tags["lpr.data_version"] = str(data_version)
    tags["lpr.validation_passed"] = str(bool(validation_passed)).lower()
    tags.update({k: str(v) for k, v in (extra or {}).items() if v is not None})
    return tags


def register_candidate(model_uri: str, metrics: Mapping[str, float], data_version: str | None,
                       validation_passed: bool, *, cfg: GateConfig = GateConfig(), run_id: str | None = None,
                       extra_tags: Mapping[str, object] | None = None, tracking_uri: str | None = None) -> str:
    """Register ``model_uri`` as a new version of ``cfg.model_name``, tagged with its scores; return the version."""
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
    tags = version_tags(metrics, data_version, validation_passed, extra_tags)
    for attempt in range(6):
        try:
            mv = client.create_model_version(cfg.model_name, model_uri, run_id=run_id, tags=tags, model_id=model_id)
            return str(mv.version)
        except MlflowException as exc:
            # the store numbers versions max + 1 and gives up after a few collisions when many
            # candidates register at once (PostgreSQL): one more try is the cure
            if "Giving up after" not in str(exc) or attempt == 5:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def read_scores(version: str, cfg: GateConfig = GateConfig(), tracking_uri: str | None = None) -> Scores:
    """Scores of a registered version, read back from its tags."""
    mv = _client(tracking_uri).get_model_version(cfg.model_name, str(version))
    tags = mv.tags or {}
    metrics = {k[len(METRIC_PREFIX):]: _number(v) for k, v in tags.items() if k.startswith(METRIC_PREFIX)}
    dv = tags.get("lpr.data_version")
    return Scores(str(mv.version), metrics, None if dv in (None, "None") else dv,
                  tags.get("lpr.validation_passed", "false") == "true", tags.get(MODEL_SHA_TAG) or None)


def _number(value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan  # an unreadable score counts as no score


def alias_version(alias: str, cfg: GateConfig = GateConfig(), tracking_uri: str | None = None) -> str | None:
    """The version an alias points at, or None."""
    try:
        return str(_client(tracking_uri).get_model_version_by_alias(cfg.model_name, alias).version)
    except MlflowException:
        return None


def _history(client, cfg: GateConfig) -> list[str]:
    tags = client.get_registered_model(cfg.model_name).tags or {}
    try:
        return [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]
    except ValueError:
        return []


def _uri(tracking_uri: str | None) -> str:
    return tracking_uri or mlflow.get_tracking_uri()


def _lock(client, cfg: GateConfig, tracking_uri: str | None, purpose: str, wait_s: float | None):
    return promotion_lock(client, _uri(tracking_uri), cfg.model_name, purpose=purpose, ttl_s=cfg.lock_ttl_s,
                          wait_s=cfg.lock_wait_s if wait_s is None else wait_s)


def identical_champion(model_sha256: str | None, data_version: str | None, cfg: GateConfig = GateConfig(),
                       tracking_uri: str | None = None) -> str | None:
    """The champion's version when it has this model checksum and data version, else None."""
    champ_v = alias_version(CHAMPION, cfg, tracking_uri)
    if not model_sha256 or champ_v is None:
        return None
    champ = read_scores(champ_v, cfg, tracking_uri)
    return champ_v if (champ.model_sha256 == model_sha256 and champ.data_version == data_version) else None


def record_resubmission(version: str, cfg: GateConfig = GateConfig(), *, details: Mapping[str, object] | None = None,
                        tracking_uri: str | None = None, wait_s: float | None = None) -> int:
    """Record on ``version`` that an identical candidate was submitted again; return the count.

    The version gets ``lpr.resubmitted_count`` and ``lpr.resubmitted_last`` (time and the
    submitter's lineage), under the promotion lock so concurrent counts are not lost.
    """
    client = _client(tracking_uri)
    with _lock(client, cfg, tracking_uri, f"record a resubmission of v{version}", wait_s) as lock:
        tags = client.get_model_version(cfg.model_name, str(version)).tags or {}
        count = int(tags.get("lpr.resubmitted_count", "0") or 0) + 1
        lock.ensure_held()
        last = {"time": _now(), **{k: str(v) for k, v in (details or {}).items() if v is not None}}
        client.set_model_version_tag(cfg.model_name, str(version), "lpr.resubmitted_count", str(count))
        client.set_model_version_tag(cfg.model_name, str(version), "lpr.resubmitted_last", json.dumps(last))
        return count


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _rescore_champion(client, champion: Scores, rescore: Rescorer, cfg: GateConfig, tracking_uri: str | None) -> Scores:
    """Score the champion on the current data; its old scores move to ``rescored_from`` and metric
    tags the new scoring does not produce are removed (a slice the new data lacks is not kept)."""
    metrics, dv = rescore(champion.version)
    name, version = cfg.model_name, champion.version
    client.set_model_version_tag(name, version, "rescored_from", json.dumps(
        {"data_version": champion.data_version, "metrics": dict(champion.metrics)}))
    new_tags = version_tags(metrics, dv, champion.validation_passed)
    for k in champion.metrics:
        if f"{METRIC_PREFIX}{k}" not in new_tags:
            client.delete_model_version_tag(name, version, f"{METRIC_PREFIX}{k}")
    for k, v in new_tags.items():
        client.set_model_version_tag(name, version, k, v)
    return read_scores(version, cfg, tracking_uri)


def promote(candidate_version: str, cfg: GateConfig = GateConfig(), *, rescore: Rescorer | None = None,
            tracking_uri: str | None = None, timeout_s: float | None = None) -> Decision:
    """Run the gate for ``candidate_version`` and move ``champion`` when it passes.

    The decision and the alias moves happen under the promotion lock (:mod:`lpr_core.tracking.lock`),
    so promotions from any number of machines are serialised and each is judged against the
    champion the previous one left. When the champion was scored on another data version and
    ``rescore`` is given, the champion is scored again first (its tags are updated, the old scores
    kept under ``rescored_from``). The decision is recorded on the candidate as ``gate.*`` tags,
    with the lock ticket it was taken under (``gate.lock_ticket``).

    Raises:
        RegistryError: the candidate is already the champion.
        LockError: the lock could not be taken in ``timeout_s`` (default ``cfg.lock_wait_s``), or
            was lost because this process stalled for longer than ``cfg.lock_ttl_s``.
    """
    client = _client(tracking_uri)
    with _lock(client, cfg, tracking_uri, f"promote v{candidate_version}", timeout_s) as lock:
        candidate = read_scores(candidate_version, cfg, tracking_uri)
        champ_v = alias_version(CHAMPION, cfg, tracking_uri)
        if champ_v == candidate.version:
            raise RegistryError(f"version {candidate.version} of {cfg.model_name} is already the champion")
        champion = read_scores(champ_v, cfg, tracking_uri) if champ_v else None
        if champion is not None and champion.data_version != candidate.data_version and rescore is not None:
            lock.ensure_held()
            champion = _rescore_champion(client, champion, rescore, cfg, tracking_uri)
        decision = decide(candidate, champion, cfg)
        tags = {**decision.evidence(), "gate.time": _now(), "gate.lock_ticket": str(lock.ticket),
                "gate.lock_waited_s": f"{lock.waited_s:.1f}"}
        if lock.broken:
            tags["gate.lock_broken"] = "; ".join(lock.broken)
        lock.ensure_held()
        for k, v in tags.items():
            client.set_model_version_tag(cfg.model_name, candidate.version, k, v)
        if decision.promote:
            lock.ensure_held()
            history = _history(client, cfg)
            if champ_v:
                client.set_registered_model_alias(cfg.model_name, PREVIOUS, champ_v)
            client.set_registered_model_alias(cfg.model_name, CHAMPION, candidate.version)
            client.set_registered_model_tag(cfg.model_name, HISTORY_TAG, json.dumps(history + [candidate.version]))
        return decision


def rollback(cfg: GateConfig = GateConfig(), *, tracking_uri: str | None = None,
             timeout_s: float | None = None) -> tuple[str, str]:
    """Move ``champion`` back to the previous champion; return ``(from_version, to_version)``."""
    client = _client(tracking_uri)
    with _lock(client, cfg, tracking_uri, "rollback", timeout_s) as lock:
        current = alias_version(CHAMPION, cfg, tracking_uri)
        previous = alias_version(PREVIOUS, cfg, tracking_uri)
        if current is None or previous is None:
            raise RegistryError(f"{cfg.model_name}: no previous champion to roll back to")
        history = _history(client, cfg)
        if history and history[-1] == current:
            history = history[:-1]
        lock.ensure_held()
        client.set_registered_model_alias(cfg.model_name, CHAMPION, previous)
        earlier = history[-2] if len(history) >= 2 and history[-1] == previous else None
        if earlier:
            client.set_registered_model_alias(cfg.model_name, PREVIOUS, earlier)
        else:
            client.delete_registered_model_alias(cfg.model_name, PREVIOUS)
        client.set_registered_model_tag(cfg.model_name, HISTORY_TAG, json.dumps(history))
        client.set_model_version_tag(cfg.model_name, current, "gate.rolled_back", _now())
        return current, previous
