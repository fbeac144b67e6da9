"""Rank-k, mAP, MRR and the rank-k curve from per-query ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lpr_core.evaluation import metric_names, per_query_metrics, rank_k_curve, summarize

from .helpers import results_from_ranks, synthetic_results


def test_summary_of_known_ranks():
    results = results_from_ranks([1, 2, 4, 11, math.inf])
    s = summarize(results)
    assert s["rank1"] == pytest.approx(1 / 5)
    assert s["rank3"] == pytest.approx(2 / 5)
    assert s["rank5"] == pytest.approx(3 / 5)
    assert s["rank10"] == pytest.approx(3 / 5)
    assert s["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 11) / 5)
    assert s["num_queries"] == 5


def test_curve_is_monotone_and_agrees_with_hits():
    results = synthetic_results(1)[0]
    curve = rank_k_curve(results, max_k=15)
    assert [k for k, _ in curve] == list(range(1, 16))
    accs = [a for _, a in curve]
    assert all(a <= b for a, b in zip(accs, accs[1:]))
    for k, acc in curve:
        assert acc == pytest.approx(results.hits(k).mean())


def test_per_query_columns_average_to_the_summary():
    results = synthetic_results(2)[0]
    values = per_query_metrics(results, (1, 5))
    s = summarize(results, (1, 5))
    for name, col in zip(metric_names((1, 5)), values.T):
        assert s[name] == pytest.approx(col.mean())


def test_empty_results_give_nan_not_a_crash():
    s = summarize(results_from_ranks([]))
    assert math.isnan(s["rank1"]) and s["num_queries"] == 0
    assert all(math.isnan(a) for _, a in rank_k_curve(results_from_ranks([]), 3))


@pytest.mark.parametrize("ks", [(), (0,), (1, 1), (1.5,)])
def test_bad_ks(ks):
    with pytest.raises(ValueError):
        metric_names(ks)


def test_mAP_lower_than_hit_rate_when_many_ground_truths_are_missed():
    results = synthetic_results(3)[0]
    assert np.all(results.average_precision <= 1.0) and np.all(results.average_precision >= 0.0)
    assert summarize(results)["mAP"] <= summarize(results, (10_000,))["rank10000"]
