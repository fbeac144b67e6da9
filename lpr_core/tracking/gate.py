"""The promotion gate as a pure decision over two sets of scores (no MLflow here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


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
        critical_slices: slice metrics that must not drop by more than their tolerance.
        require_validation: refuse candidates whose data validation did not pass.
    """

    model_name: str = "lpr-encoder"
    metric: str = "test/rank1"
    min_delta: float = 0.0
    critical_slices: tuple[CriticalSlice, ...] = ()
    require_validation: bool = True


@dataclass(frozen=True)
class Scores:
    """What the gate knows of one model version."""

    version: str
    metrics: Mapping[str, float]
    data_version: str | None
    validation_passed: bool = True


@dataclass(frozen=True)
class Decision:
    """The gate's verdict with its evidence (recorded on the candidate version as tags)."""

    promote: bool
    reason: str
    candidate: Scores
    champion: Scores | None
    delta: float | None
    slice_deltas: Mapping[str, float]

    def evidence(self) -> dict[str, str]:
        """Flat string tags describing the decision."""
        tags = {
            "gate.decision": "promoted" if self.promote else "refused",
            "gate.reason": self.reason,
            "gate.data_version": str(self.candidate.data_version),
            "gate.candidate_score": f"{self.candidate.metrics.get(_HEADLINE, float('nan')):.6f}",
        }
        if self.champion is not None:
            tags["gate.champion_version"] = self.champion.version
            tags["gate.champion_score"] = f"{self.champion.metrics.get(_HEADLINE, float('nan')):.6f}"
        if self.delta is not None:
            tags["gate.delta"] = f"{self.delta:+.6f}"
        for name, d in self.slice_deltas.items():
            tags[f"gate.slice_delta.{name}"] = f"{d:+.6f}"
        return tags


_HEADLINE = "__headline__"


def decide(candidate: Scores, champion: Scores | None, cfg: GateConfig) -> Decision:
    """Decide whether ``candidate`` replaces ``champion``.

    Rules: validation must have passed (when required); the headline metric must be present; with
    no champion the candidate is promoted; both must be scored on the same data version; the
    candidate must reach ``champion + min_delta``; no critical slice may drop by more than its
    tolerance.
    """

    def headline(s: Scores) -> Scores:
        return Scores(s.version, {**s.metrics, _HEADLINE: s.metrics.get(cfg.metric, float("nan"))},
                      s.data_version, s.validation_passed)

    cand = headline(candidate)
    champ = headline(champion) if champion is not None else None

    def verdict(ok: bool, reason: str, delta: float | None = None, slices: Mapping[str, float] | None = None):
        return Decision(ok, reason, cand, champ, delta, dict(slices or {}))

    if cfg.require_validation and not candidate.validation_passed:
        return verdict(False, "data validation did not pass for the candidate's data")
    if cfg.metric not in candidate.metrics:
        return verdict(False, f"the candidate has no '{cfg.metric}' score")
    if champ is None:
        return verdict(True, "no champion yet: the first valid candidate becomes champion")
    if champion.data_version != candidate.data_version:
        return verdict(
            False,
            f"champion v{champion.version} was scored on data {champion.data_version}, the candidate on "
            f"{candidate.data_version}: rescore the champion first",
        )
    if cfg.metric not in champion.metrics:
        return verdict(False, f"champion v{champion.version} has no '{cfg.metric}' score")
    delta = candidate.metrics[cfg.metric] - champion.metrics[cfg.metric]
    tolerance = {c.metric: c.tolerance for c in cfg.critical_slices}
    slice_deltas = {
        name: candidate.metrics[name] - champion.metrics[name]
        for name in tolerance
        if name in candidate.metrics and name in champion.metrics
    }
    missing = [n for n in tolerance if n not in candidate.metrics]
    if missing:
        return verdict(False, f"the candidate lacks critical slice scores: {', '.join(missing)}", delta, slice_deltas)
    if delta < cfg.min_delta:
        return verdict(
            False,
            f"{cfg.metric} {candidate.metrics[cfg.metric]:.4f} does not beat the champion's "
            f"{champion.metrics[cfg.metric]:.4f} by min_delta {cfg.min_delta}",
            delta,
            slice_deltas,
        )
    regressed = [f"{n} ({d:+.4f} < -{tolerance[n]})" for n, d in slice_deltas.items() if d < -tolerance[n]]
    if regressed:
        return verdict(False, "critical slices regressed beyond tolerance: " + ", ".join(regressed), delta, slice_deltas)
    return verdict(True, f"{cfg.metric} improved by {delta:+.4f}", delta, slice_deltas)
