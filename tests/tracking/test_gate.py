"""The promotion gate's decision rules (pure): a table of cases."""

import math
from dataclasses import replace

import pytest

from lpr_core.tracking.gate import CriticalSlice, GateConfig, Scores, decide

SMALL = "test/scale/small/rank1"
LONG = "test/duration/long/rank1"
CFG = GateConfig(min_delta=0.01, critical_slices=(CriticalSlice(SMALL, 0.02),))
NAN = math.nan


def s(version, r1, small=0.3, dv="d1", ok=True, sha=None, **more):
    metrics = {"test/rank1": r1, SMALL: small, **more}
    return Scores(version, {k: v for k, v in metrics.items() if v is not None}, dv, ok, sha)


# (id, candidate, champion, config, promote, words in the reason, expected gate.slice.* tags)
CASES = [
    ("first valid candidate", s("1", 0.2), None, CFG, True, "first", {SMALL: "no_baseline"}),
    ("failed validation, no champion", s("1", 0.9, ok=False), None, CFG, False, "validation", {}),
    ("failed validation allowed", s("1", 0.9, ok=False), None, replace(CFG, require_validation=False), True,
     "first", {}),
    ("better", s("2", 0.6), s("1", 0.5), CFG, True, "improved by +0.1000", {SMALL: "pass"}),
    ("below min_delta", s("2", 0.505), s("1", 0.5), CFG, False, "does not beat", {}),
    ("at min_delta", s("2", 0.51), s("1", 0.5), CFG, True, "improved", {}),
    ("worse", s("2", 0.4), s("1", 0.5), CFG, False, "does not beat", {}),
    # finite scores required
    ("NaN candidate, no champion", s("1", NAN), None, CFG, False, "no finite (nan) 'test/rank1'", {}),
    ("NaN candidate vs champion", s("2", NAN), s("1", 0.1), CFG, False, "no finite", {}),
    ("infinite candidate", s("2", math.inf), s("1", 0.1), CFG, False, "no finite (inf)", {}),
    ("missing candidate score", s("2", None), s("1", 0.1), CFG, False, "has no 'test/rank1' score", {}),
    ("NaN champion replaced", s("2", 0.2), s("1", NAN), CFG, True,
     "champion v1 has no finite (nan) 'test/rank1' score: replaced by the candidate's finite 0.2000", {}),
    ("champion without score replaced", s("2", 0.2), s("1", None), CFG, True, "has no 'test/rank1' score: replaced",
     {}),
    # ties
    ("tie, promote_ties off", s("2", 0.5), s("1", 0.5), replace(CFG, min_delta=0.0), False,
     "ties the champion's: a tie does not move the champion (promote_ties is off)", {SMALL: "pass"}),
    ("tie, promote_ties on", s("2", 0.5), s("1", 0.5), replace(CFG, min_delta=0.0, promote_ties=True), True,
     "ties the champion (promote_ties is on)", {}),
    ("tie under a min_delta", s("2", 0.5), s("1", 0.5), replace(CFG, promote_ties=True), False, "min_delta", {}),
    # identical models
    ("identical to the champion", s("2", 0.5, sha="abc"), s("1", 0.5, sha="abc"), CFG, False,
     "identical to champion v1", {}),
    ("same weights, new data: not identical", s("2", 0.9, dv="d2", sha="abc"), s("1", 0.5, sha="abc"), CFG, False,
     "rescore", {}),
    ("different weights, same scores", s("2", 0.5, sha="abd"), s("1", 0.5, sha="abc"), replace(CFG, min_delta=0),
     False, "tie", {}),
    # data versions
    ("other data version", s("2", 0.9, dv="d2"), s("1", 0.1, dv="d1"), CFG, False, "rescore the champion first", {}),
    # critical slices
    ("slice regressed", s("2", 0.7, small=0.27), s("1", 0.5, small=0.3), CFG, False,
     "critical slices regressed beyond tolerance: test/scale/small/rank1 (-0.0300", {SMALL: "regressed"}),
    ("slice within tolerance", s("2", 0.7, small=0.285), s("1", 0.5, small=0.3), CFG, True, "improved",
     {SMALL: "pass"}),
    ("slice neither has", s("2", 0.7, small=None), s("1", 0.5, small=None), CFG, True,
     "not applicable (neither model has them): test/scale/small/rank1", {SMALL: "not_applicable"}),
    ("slice NaN in both", s("2", 0.7, small=NAN), s("1", 0.5, small=NAN), CFG, True, "not applicable",
     {SMALL: "not_applicable"}),
    ("slice neither has, worse headline", s("2", 0.4, small=None), s("1", 0.5, small=None), CFG, False,
     "does not beat", {SMALL: "not_applicable"}),
    ("slice the champion has, candidate lacks", s("2", 0.9, small=None), s("1", 0.5), CFG, False,
     "lacks critical slice scores the champion has: test/scale/small/rank1", {SMALL: "missing"}),
    ("slice NaN in the candidate only", s("2", 0.9, small=NAN), s("1", 0.5), CFG, False, "lacks critical slice",
     {SMALL: "missing"}),
    ("slice only the candidate has", s("2", 0.9), s("1", 0.5, small=None), CFG, True, "improved",
     {SMALL: "no_baseline"}),
    ("first candidate without the slice", s("1", 0.2, small=None), None, CFG, True, "first",
     {SMALL: "not_applicable"}),
    ("two slices, one not applicable", s("2", 0.6), s("1", 0.5),
     replace(CFG, critical_slices=(CriticalSlice(SMALL, 0.02), CriticalSlice(LONG, 0.0))), True,
     "not applicable (neither model has them): test/duration/long/rank1", {SMALL: "pass", LONG: "not_applicable"}),
]


@pytest.mark.parametrize(("candidate", "champion", "cfg", "promote", "reason", "slices"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decision_table(candidate, champion, cfg, promote, reason, slices):
    d = decide(candidate, champion, cfg)
    assert d.promote is promote, d.reason
    assert reason in d.reason, d.reason
    tags = d.evidence()
    assert tags["gate.decision"] == ("promoted" if promote else "refused")
    for name, status in slices.items():
        assert tags[f"gate.slice.{name}"] == status, tags


def test_a_nan_score_is_never_promoted_whatever_the_config():
    for cfg in (CFG, replace(CFG, min_delta=-1.0, promote_ties=True, require_validation=False, critical_slices=())):
        for champion in (None, s("1", 0.1), s("1", NAN)):
            assert not decide(s("2", NAN), champion, cfg).promote


def test_min_delta_reports_the_delta():
    d = decide(s("2", 0.505), s("1", 0.5), CFG)
    assert d.delta == pytest.approx(0.005)


def test_evidence_tags_carry_both_scores():
    tags = decide(s("2", 0.6), s("1", 0.5), CFG).evidence()
    assert tags["gate.decision"] == "promoted" and tags["gate.metric"] == "test/rank1"
    assert tags["gate.candidate_score"] == "0.600000" and tags["gate.champion_score"] == "0.500000"
    assert tags["gate.champion_version"] == "1" and tags["gate.delta"] == "+0.100000"
    assert tags["gate.data_version"] == "d1"
    assert tags[f"gate.slice_delta.{SMALL}"] == "+0.000000" and tags[f"gate.slice.{SMALL}"] == "pass"
    nan = decide(s("2", NAN), s("1", 0.5), CFG).evidence()
    assert nan["gate.candidate_score"] == "nan" and nan["gate.decision"] == "refused"
    missing = decide(s("2", None), None, CFG).evidence()
    assert missing["gate.candidate_score"] == "missing"


def test_config_defaults_match_params_yaml():
    """The ``promote`` section of params.yaml is where the defaults live: the class agrees with it."""
    from pathlib import Path

    import yaml

    from lpr_core.config import load_section

    params = Path(__file__).resolve().parents[2] / "params.yaml"
    loaded = load_section(GateConfig, "promote", params)
    section = yaml.safe_load(params.read_text())["promote"]
    assert set(section) == {f for f in GateConfig.__dataclass_fields__}
    assert loaded == GateConfig()
    assert loaded.promote_ties is False


def test_lock_settings_are_checked():
    with pytest.raises(ValueError, match="lock_ttl_s"):
        GateConfig(lock_ttl_s=0)
