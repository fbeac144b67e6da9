"""The promotion gate as a pure decision over two sets of scores (no MLflow here).

The rules, in the order they are applied (the first that settles the case gives the reason):

1. the candidate's data must have passed validation (when ``require_validation``);
2. the candidate needs a finite headline score (NaN, infinite or missing: never promoted);
3. with no champion, the candidate becomes champion;
4. a candidate identical to the champion (same model checksum, same data version) is not a new
   model: refused, nothing moves;
5. both must be scored on the same data version (the caller rescores the champion first);
6. a champion without a finite headline score is replaced by the finite candidate;
7. a critical slice the champion has and the candidate lacks refuses the candidate; one that
   neither has is recorded as not applicable (``gate.slice.<name> = not_applicable``); one only
   the candidate has is recorded as having no baseline;
8. the candidate must reach ``champion + min_delta``; an exact tie moves ``champion`` only
   when ``promote_ties`` is set;
9. no critical slice may drop by more than its tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

#: ``gate.slice.<name>`` values
SLICE_PASS = "pass"
SLICE_REGRESSED = "regressed"
SLICE_MISSING = "missing"  # the champion has a score, the candidate none: refuses
SLICE_NO_BASELINE = "no_baseline"  # the candidate has a score, the champion (or no champion) none
SLICE_NOT_APPLICABLE = "not_applicable"  # neither has a score (e.g. data without slice labels)


@dataclass(frozen=True)
class CriticalSlice:
    """A slice metric that must not regress: ``metric`` may drop by at most ``tolerance``."""

    metric: str
    tolerance: float = 0.0


@dataclass(frozen=True)
class GateConfig:
    """The ``promote`` section of params.yaml.

    Attributes:
        model_name: registered model the gate manages.
        metric: the headline metric (higher is better).
        min_delta: the candidate must beat the champion's metric by at least this much.
        promote_ties: whether a candidate that exactly ties the champion replaces it.
        require_validation: refuse candidates whose data validation did not pass.
        critical_slices: slice metrics that must not drop by more than their tolerance.
        lock_ttl_s: a promotion lock whose holder has not renewed it for this long is stale and
            may be broken by the next promoter.
        lock_wait_s: how long a promotion waits for the lock before giving up.
    """

    model_name: str = "lpr-encoder"
    metric: str = "test/rank1"
    min_delta: float = 0.0
    promote_ties: bool = False
    require_validation: bool = True
    critical_slices: tuple[CriticalSlice, ...] = (CriticalSlice("test/scale_type/small/rank1", 0.05),)
    lock_ttl_s: float = 120.0
    lock_wait_s: float = 3600.0

    def __post_init__(self) -> None:
        if not self.lock_ttl_s > 0:
            raise ValueError(f"lock_ttl_s must be positive, got {self.lock_ttl_s}")
        if self.lock_wait_s < 0:
            raise ValueError(f"lock_wait_s must be at least 0, got {self.lock_wait_s}")


@dataclass(frozen=True)
class Scores:
    """What the gate knows of one model version.

    Attributes:
        version: the registered version.
        metrics: scores by name (``split/metric``); NaN counts as no score.
        data_version: the test data the scores were measured on.
        validation_passed: whether the model's training data passed validation.
        model_sha256: checksum of the model's weights (encoder and detector files), if known.
    """

    version: str
    metrics: Mapping[str, float]
    data_version: str | None
    validation_passed: bool = True
    model_sha256: str | None = None

    def score(self, name: str) -> float | None:
        """The finite score ``name``, or None when it is missing, NaN or infinite."""
        value = self.metrics.get(name)
        if value is None:
            return None
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Decision:
    """The gate's verdict with its evidence (recorded on the candidate version as tags)."""

    promote: bool
    reason: str
    candidate: Scores
    champion: Scores | None
    delta: float | None
    slice_deltas: Mapping[str, float]
    metric: str = "test/rank1"
    slice_status: Mapping[str, str] = field(default_factory=dict)

    def evidence(self) -> dict[str, str]:
        """Flat string tags describing the decision."""
        tags = {
            "gate.decision": "promoted" if self.promote else "refused",
            "gate.reason": self.reason,
            "gate.metric": self.metric,
            "gate.data_version": str(self.candidate.data_version),
            "gate.candidate_score": _fmt(self.candidate.metrics.get(self.metric)),
        }
        if self.champion is not None:
            tags["gate.champion_version"] = self.champion.version
            tags["gate.champion_score"] = _fmt(self.champion.metrics.get(self.metric))
        if self.delta is not None:
            tags["gate.delta"] = f"{self.delta:+.6f}"
        for name, d in self.slice_deltas.items():
            tags[f"gate.slice_delta.{name}"] = f"{d:+.6f}"
        for name, status in self.slice_status.items():
            tags[f"gate.slice.{name}"] = status
        return tags


def _fmt(value: float | None) -> str:
    if value is None:
        return "missing"
    try:
        return f"{float(value):.6f}"
    except (TypeError, ValueError):
        return "missing"


def slice_status(candidate: Scores, champion: Scores | None, cfg: GateConfig) -> tuple[dict[str, str], dict[str, float]]:
    """The status of every critical slice (``gate.slice.<name>``) and the deltas of those both have."""
    status: dict[str, str] = {}
    deltas: dict[str, float] = {}
    for sl in cfg.critical_slices:
        cand = candidate.score(sl.metric)
        champ = champion.score(sl.metric) if champion is not None else None
        if cand is not None and champ is not None:
            deltas[sl.metric] = cand - champ
            status[sl.metric] = SLICE_REGRESSED if cand - champ < -sl.tolerance else SLICE_PASS
        elif champ is not None:
            status[sl.metric] = SLICE_MISSING
        elif cand is not None:
            status[sl.metric] = SLICE_NO_BASELINE
        else:
            status[sl.metric] = SLICE_NOT_APPLICABLE
    return status, deltas


def decide(candidate: Scores, champion: Scores | None, cfg: GateConfig) -> Decision:
    """Decide whether ``candidate`` replaces ``champion`` (the rules are in the module docstring)."""
    slices, slice_deltas = slice_status(candidate, champion, cfg)

    def verdict(ok: bool, reason: str, delta: float | None = None) -> Decision:
        return Decision(ok, reason, candidate, champion, delta, slice_deltas, cfg.metric, slices)

    cand = candidate.score(cfg.metric)
    if cfg.require_validation and not candidate.validation_passed:
        return verdict(False, "data validation did not pass for the candidate's data")
    if cand is None:
        raw = candidate.metrics.get(cfg.metric)
        what = "no" if raw is None else f"no finite ({raw})"
        return verdict(False, f"the candidate has {what} '{cfg.metric}' score: it cannot be promoted")
    if champion is None:
        return verdict(True, "no champion yet: the first valid candidate becomes champion")
    if (candidate.model_sha256 and candidate.model_sha256 == champion.model_sha256
            and candidate.data_version == champion.data_version):
        return verdict(False, f"the candidate is identical to champion v{champion.version} "
                              f"(same model checksum and data version): nothing to promote", 0.0)
    if champion.data_version != candidate.data_version:
        return verdict(
            False,
            f"champion v{champion.version} was scored on data {champion.data_version}, the candidate on "
            f"{candidate.data_version}: rescore the champion first",
        )
    champ = champion.score(cfg.metric)
    if champ is None:
        raw = champion.metrics.get(cfg.metric)
        what = "no" if raw is None else f"no finite ({raw})"
        return verdict(True, f"champion v{champion.version} has {what} '{cfg.metric}' score: "
                             f"replaced by the candidate's finite {cand:.4f}")
    delta = cand - champ
    missing = [n for n, s in slices.items() if s == SLICE_MISSING]
    if missing:
        return verdict(False, f"the candidate lacks critical slice scores the champion has: {', '.join(missing)}",
                       delta)
    if delta < cfg.min_delta:
        return verdict(False, f"{cfg.metric} {cand:.4f} does not beat the champion's {champ:.4f} by "
                              f"min_delta {cfg.min_delta}", delta)
    if delta == 0 and not cfg.promote_ties:
        return verdict(False, f"{cfg.metric} {cand:.4f} ties the champion's: a tie does not move the champion "
                              f"(promote_ties is off)", delta)
    tolerance = {c.metric: c.tolerance for c in cfg.critical_slices}
    regressed = [f"{n} ({slice_deltas[n]:+.4f} < -{tolerance[n]})" for n, s in slices.items() if s == SLICE_REGRESSED]
    if regressed:
        return verdict(False, "critical slices regressed beyond tolerance: " + ", ".join(regressed), delta)
    how = "ties the champion (promote_ties is on)" if delta == 0 else f"improved by {delta:+.4f}"
    na = [n for n, s in slices.items() if s == SLICE_NOT_APPLICABLE]
    note = f"; critical slices not applicable (neither model has them): {', '.join(na)}" if na else ""
    return verdict(True, f"{cfg.metric} {how}{note}", delta)
