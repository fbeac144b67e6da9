"""Per-slice metrics equal the metrics of the slice's queries."""

from __future__ import annotations

import numpy as np
import pytest

from lpr_core.evaluation import LIVESTREAM, metric_cis, slice_metrics, summarize

from .helpers import synthetic_results


def test_each_slice_is_the_summary_of_its_queries():
    results = synthetic_results(0)[0]
    n = len(results)
    rng = np.random.default_rng(0)
    labels = {
        "category": rng.choice(["shoes", "food", "toys"], n).tolist(),
        "scale_type": rng.integers(0, 3, n).tolist(),
    }
    rows = slice_metrics(results, labels, n_boot=100, seed=3)
    assert [r.column for r in rows][:3] == ["category"] * 3
    assert {r.column for r in rows} == {"category", "scale_type", LIVESTREAM}
    assert sum(r.num_queries for r in rows if r.column == LIVESTREAM) == n
    for row in rows:
        source = results.live_ids if row.column == LIVESTREAM else np.asarray([str(v) for v in labels[row.column]])
        mask = source == row.value
        sub = results.subset(mask)
        expected = summarize(sub)
        assert row.num_queries == mask.sum()
        assert row.num_livestreams == len(set(sub.live_ids.tolist()))
        for name, value in row.metrics.items():
            assert value == pytest.approx(expected[name]), (row.column, row.value, name)
        assert row.ci == metric_cis(sub, n_boot=100, seed=3)


def test_labels_order_missing_and_errors():
    results = synthetic_results(1, n_live=2, per_live=6)[0]
    labels = {"number_type": [10, 2, None, float("nan"), 1, 2] * 2}
    rows = slice_metrics(results, labels, by_livestream=False, n_boot=20)
    assert [r.value for r in rows] == ["1", "2", "10", "(missing)"]
    assert rows[-1].num_queries == 4
    with pytest.raises(ValueError, match="number_type"):
        slice_metrics(results, {"number_type": [1, 2]}, n_boot=20)
    with pytest.raises(ValueError, match="reserved"):
        slice_metrics(results, {LIVESTREAM: [1] * len(results)}, n_boot=20)
