"""The promotion gate's decision rules (pure)."""

import pytest

from lpr_core.tracking.gate import CriticalSlice, GateConfig, Scores, decide

CFG = GateConfig(min_delta=0.01, critical_slices=(CriticalSlice("test/scale/small/rank1", 0.02),))


def s(version, r1, small=0.3, dv="d1", ok=True):
    return Scores(version, {"test/rank1": r1, "test/scale/small/rank1": small}, dv, ok)


def test_first_valid_candidate_is_promoted():
    d = decide(s("1", 0.2), None, CFG)
    assert d.promote and "first" in d.reason


def test_failed_validation_is_refused_even_without_champion():
    d = decide(s("1", 0.9, ok=False), None, CFG)
    assert not d.promote and "validation" in d.reason


@pytest.mark.parametrize(("r1", "promote"), [(0.505, False), (0.51, True), (0.6, True), (0.4, False)])
def test_min_delta(r1, promote):
    d = decide(s("2", r1), s("1", 0.5), CFG)
    assert d.promote is promote
    assert d.delta == pytest.approx(r1 - 0.5)


def test_critical_slice_regression_blocks_promotion():
    d = decide(s("2", 0.7, small=0.27), s("1", 0.5, small=0.3), CFG)
    assert not d.promote and "test/scale/small/rank1" in d.reason
    ok = decide(s("2", 0.7, small=0.285), s("1", 0.5, small=0.3), CFG)
    assert ok.promote


def test_different_data_versions_are_not_compared():
    d = decide(s("2", 0.9, dv="d2"), s("1", 0.1, dv="d1"), CFG)
    assert not d.promote and "rescore" in d.reason


def test_evidence_tags_carry_both_scores():
    tags = decide(s("2", 0.6), s("1", 0.5), CFG).evidence()
    assert tags["gate.decision"] == "promoted"
    assert tags["gate.candidate_score"] == "0.600000" and tags["gate.champion_score"] == "0.500000"
    assert tags["gate.champion_version"] == "1" and tags["gate.delta"] == "+0.100000"
    assert tags["gate.data_version"] == "d1"
