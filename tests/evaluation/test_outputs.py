"""DVC metrics JSON and plot tables."""

from __future__ import annotations

import csv
import json
import math

import pytest

from lpr_core.evaluation import (
    dvc_metrics,
    metric_cis,
    rank_k_curve,
    slice_metrics,
    summarize,
    write_metrics,
    write_per_query,
    write_rank_k_curve,
    write_slice_tables,
)

from .helpers import results_from_ranks, synthetic_results


def test_metrics_json_has_split_keys_and_intervals(tmp_path):
    results = synthetic_results(0)[0]
    summary, ci = summarize(results), metric_cis(results, n_boot=50)
    path = write_metrics(tmp_path / "out" / "metrics.json", summary, ci)
    data = json.loads(path.read_text())
    for name in ("rank1", "rank3", "rank5", "rank10", "mAP", "MRR"):
        assert data[f"test/{name}"] == pytest.approx(summary[name])
        assert data[f"test/{name}_ci_low"] <= data[f"test/{name}"] <= data[f"test/{name}_ci_high"]
    assert data["test/num_queries"] == len(results)
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary file left behind
    assert dvc_metrics({"rank1": 0.5}, split="val") == {"val/rank1": 0.5}


def test_nan_is_written_as_null(tmp_path):
    data = json.loads(write_metrics(tmp_path / "m.json", summarize(results_from_ranks([]))).read_text())
    assert data["test/rank1"] is None


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_rank_k_curve_file(tmp_path, suffix):
    results = synthetic_results(1)[0]
    path = write_rank_k_curve(tmp_path / f"curve{suffix}", results, max_k=12)
    if suffix == ".csv":
        rows = list(csv.DictReader(path.open()))
    else:
        rows = json.loads(path.read_text())
    assert [int(r["k"]) for r in rows] == list(range(1, 13))
    for row, (_, acc) in zip(rows, rank_k_curve(results, 12)):
        assert float(row["accuracy"]) == pytest.approx(acc)


def test_slice_tables(tmp_path):
    results = synthetic_results(2)[0]
    rows = slice_metrics(results, {"category name": ["a", "b"] * (len(results) // 2)}, n_boot=30)
    paths = write_slice_tables(tmp_path / "slices", rows)
    assert [p.name for p in paths] == ["category_name.csv", "livestream.csv"]
    table = list(csv.DictReader(paths[0].open()))
    assert [r["value"] for r in table] == ["a", "b"]
    for written, row in zip(table, [r for r in rows if r.column == "category name"]):
        assert int(written["num_queries"]) == row.num_queries
        assert float(written["rank1"]) == pytest.approx(row.metrics["rank1"])
        assert float(written["rank1_ci_high"]) == pytest.approx(row.ci["rank1"][1])


def test_per_query_file(tmp_path):
    results = results_from_ranks([1, 3, math.inf])
    rows = list(csv.DictReader(write_per_query(tmp_path / "q.csv", results).open()))
    assert [r["rank"] for r in rows] == ["1", "3", ""]
    assert [r["query_id"] for r in rows] == results.query_ids.tolist()
