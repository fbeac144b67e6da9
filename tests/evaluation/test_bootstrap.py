"""Bootstrap over livestreams: reference loop, determinism, and why livestreams are resampled."""

from __future__ import annotations

import numpy as np
import pytest

from lpr_core.evaluation import bootstrap_ci, metric_cis, summarize

from .helpers import synthetic_results


def _reference(values, groups, n_boot, level, seed):
    # literal loop over replicates with the same draws
    labels = sorted(set(groups))
    members = {g: [i for i, x in enumerate(groups) if x == g] for g in labels}
    if len(labels) < 2:
        labels = list(range(len(groups)))
        members = {i: [i] for i in labels}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(n_boot, len(labels)))
    stats = []
    for b in range(n_boot):
        rows = [i for d in draws[b] for i in members[labels[d]]]
        stats.append(values[rows].mean(axis=0))
    alpha = 1 - level
    return np.quantile(np.array(stats), [alpha / 2, 1 - alpha / 2], axis=0).T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_plain_loop(seed):
    rng = np.random.default_rng(seed)
    n = 60
    values = rng.random((n, 3))
    groups = [f"g{int(g)}" for g in rng.integers(0, 7, n)]
    got = bootstrap_ci(values, np.asarray(groups), n_boot=200, level=0.9, seed=seed)
    np.testing.assert_allclose(got, _reference(values, groups, 200, 0.9, seed))


def test_single_group_falls_back_to_queries():
    rng = np.random.default_rng(0)
    values = rng.random((30, 1))
    groups = ["only"] * 30
    got = bootstrap_ci(values, np.asarray(groups), n_boot=100, seed=4)
    np.testing.assert_allclose(got, _reference(values, groups, 100, 0.95, 4))
    assert got[0, 0] < got[0, 1]


def test_seeded_and_containing_the_estimate():
    results = synthetic_results(5)[0]
    a = metric_cis(results, n_boot=300, seed=7)
    assert a == metric_cis(results, n_boot=300, seed=7)
    assert a != metric_cis(results, n_boot=300, seed=8)
    s = summarize(results)
    for name, (low, high) in a.items():
        assert low <= s[name] <= high, name


def test_livestream_effects_widen_the_interval():
    # queries of one livestream move together: resampling livestreams must show it
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 50)
    level = rng.random(10)[groups]  # per-livestream success rate
    values = (rng.random(500) < level).astype(float)[:, None]
    by_live = bootstrap_ci(values, groups, n_boot=500, seed=0)
    by_query = bootstrap_ci(values, np.arange(500), n_boot=500, seed=0)
    assert (by_live[0, 1] - by_live[0, 0]) > 1.5 * (by_query[0, 1] - by_query[0, 0])


def test_bad_arguments():
    with pytest.raises(ValueError):
        bootstrap_ci(np.zeros((3, 1)), np.zeros(2))
    with pytest.raises(ValueError):
        bootstrap_ci(np.zeros((3, 1)), np.zeros(3), level=1.0)
    assert np.isnan(bootstrap_ci(np.zeros((0, 2)), np.zeros(0))).all()
