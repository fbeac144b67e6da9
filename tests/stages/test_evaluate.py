"""The ``evaluate`` stage on the tiny synthetic world, with tiny untrained checkpoints.

The stage runs in-process through its ``main`` on the index the ``index_gallery`` stage built
(shared inputs: :mod:`tests.stages.test_index_gallery`). The scoring is checked against a
brute-force oracle, the prediction file against ``lpr evaluate-predictions``, and the faiss
search against the exact scoring of the gallery embeddings.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lpr_core.stages.evaluate import EvaluateParams, main
from tests.stages.test_index_gallery import (
    TINY_ENCODER,
    Inputs,
    derived_download,
    fail_rows,
    indexed,
    section,
    tiny_inputs,
    write_params,
)

RATE = re.compile(r"^test/(?:.+/)?(?:rank\d+|mAP|MRR)(?:_ci_low|_ci_high)?$")


def eval_params(path: Path, **changes) -> Path:
    """A params file with a shrunk ``evaluate`` section."""
    changes["embed"] = {"batch_size": 8, "num_workers": 0, **changes.get("embed", {})}
    changes["bootstrap"] = {"n_boot": 100, **changes.get("bootstrap", {})}
    return write_params(path, evaluate=section("evaluate", EvaluateParams(), **changes))


def run_evaluate(
    inputs: Inputs,
    index: Path,
    root: Path,
    params: Path,
    *,
    prepared: Path | None = None,
    download: Path | None = None,
    encoder: Path | None = None,
    validation: Path | None = None,
) -> int:
    return main(
        [
            "--prepared",
            str(prepared or inputs.prepared),
            "--download",
            str(download or inputs.download),
            "--encoder",
            str(encoder or inputs.encoder),
            "--detector",
            str(inputs.detector),
            "--index",
            str(index),
            "--out",
            str(root / "evaluate"),
            "--plots",
            str(root / "plots"),
            "--metrics",
            str(root / "metrics.json"),
            "--validation",
            str(validation or root / "no_validation.json"),
            "--params",
            str(params),
        ]
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def queries_table(prepared: Path) -> list[dict]:
    return pq.read_table(prepared / "test_queries.parquet").to_pylist()


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Inputs:
    return tiny_inputs(tmp_path_factory)


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory) -> Path:
    return indexed(tmp_path_factory)


@pytest.fixture(scope="module")
def evaluated(inputs, index_dir, tmp_path_factory) -> Path:
    """One run as DVC would make it: crops auto (the encoder records crop_boxes: detector boxes)
    and a passed validation summary beside."""
    root = tmp_path_factory.mktemp("evaluate")
    validation = root / "validation_summary.json"
    validation.write_text(json.dumps({"success": True, "suites": {}}))
    assert (
        run_evaluate(inputs, index_dir, root, eval_params(root / "params.yaml"), validation=validation) == 0
    )
    return root


# ------------------------------------------------------------------------------- the stage's outputs


def test_metrics_file_has_the_headline_metrics_bounds_and_slices(evaluated, inputs):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    for name in ("rank1", "rank3", "rank5", "rank10", "mAP", "MRR"):
        value = metrics[f"test/{name}"]
        assert metrics[f"test/{name}_ci_low"] <= value <= metrics[f"test/{name}_ci_high"]
    rates = {k: v for k, v in metrics.items() if RATE.match(k)}
    assert rates and all(0.0 <= v <= 1.0 for v in rates.values())
    assert metrics["test/rank1"] <= metrics["test/rank3"] <= metrics["test/rank5"] <= metrics["test/rank10"]
    queries = queries_table(inputs.prepared)
    assert metrics["test/num_queries"] == len(queries)
    assert metrics["test/num_no_prediction"] == 0 and metrics["test/num_queries_without_frames"] == 0
    assert metrics["test/index_agreement"] == 1.0
    for column in ("scale_type", "duration_type", "number_type", "category_name"):  # the gate's slices
        for value in {q[column] for q in queries}:
            assert 0 <= metrics[f"test/{column}/{value}/rank1"] <= 1
            assert metrics[f"test/{column}/{value}/num_queries"] == sum(q[column] == value for q in queries)
    assert not any(k.startswith("test/livestream/") for k in metrics)


def test_plots_and_per_query_table(evaluated, inputs):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    curve = read_csv(evaluated / "plots" / "rank_k.csv")
    assert list(curve[0]) == ["k", "accuracy"]
    ks = [int(r["k"]) for r in curve]
    acc = [float(r["accuracy"]) for r in curve]
    assert ks == list(range(1, 21)) and acc == sorted(acc)
    assert acc[0] == pytest.approx(metrics["test/rank1"]) and acc[9] == pytest.approx(metrics["test/rank10"])
    slices = {p.stem for p in (evaluated / "plots" / "slices").glob("*.csv")}
    assert slices == {"category_name", "scale_type", "duration_type", "number_type", "livestream"}
    rows = read_csv(evaluated / "evaluate" / "per_query.csv")
    assert [r["query_id"] for r in rows] == [q["clip_id"] for q in queries_table(inputs.prepared)]
    hits = np.mean([r["rank"] != "" and int(r["rank"]) == 1 for r in rows])
    assert hits == pytest.approx(metrics["test/rank1"])


def test_predictions_score_the_same_with_lpr_evaluate_predictions(evaluated, inputs, tmp_path, capsys):
    from lpr_core.cli import main as lpr
    from lpr_core.formats.readers import find_lpr4m_files

    files = find_lpr4m_files(inputs.world)
    out = tmp_path / "rescored.json"
    code = lpr(
        [
            "evaluate-predictions",
            "--gt",
            str(files["test_gt_images"][0]),
            "--pred",
            str(evaluated / "evaluate" / "predictions.json"),
            "--gallery",
            str(files["test_gallery"][0]),
            "--metrics-out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    rescored = json.loads(out.read_text())
    metrics = json.loads((evaluated / "metrics.json").read_text())
    for k in (1, 3, 5, 10):  # predictions hold the top 10: every rank-k up to 10 must agree
        assert rescored[f"test/rank{k}"] == pytest.approx(metrics[f"test/rank{k}"], abs=1e-12)
    predictions = json.loads((evaluated / "evaluate" / "predictions.json").read_text())
    for entries in predictions.values():
        assert 1 <= len(entries) <= 10
        scores = [s for _, s in entries]
        assert scores == sorted(scores, reverse=True)
    # the exact rank of each query (per_query.csv) is its ground truth's place in the faiss list
    gt = {q["clip_id"]: q["gt_image_ids"] for q in queries_table(inputs.prepared)}
    for row in read_csv(evaluated / "evaluate" / "per_query.csv"):
        ids = [i for i, _ in predictions[row["query_id"]]]
        found = [ids.index(g) + 1 for g in gt[row["query_id"]] if g in ids]
        assert (min(found) if found else "") == (
            int(row["rank"]) if row["rank"] and int(row["rank"]) <= 10 else ""
        )


def test_report_shows_the_examples_and_the_worst_queries(evaluated):
    report = (evaluated / "evaluate" / "report.html").read_text()
    assert (
        report.startswith("<!DOCTYPE html>") and "Worst queries" in report and "Retrieval examples" in report
    )
    assert 'src="http' not in report and "file://" not in report  # self-contained
    rows = read_csv(evaluated / "evaluate" / "per_query.csv")
    worst = max(rows, key=lambda r: float(r["rank"] or "inf"))
    assert worst["query_id"] in report
    params = EvaluateParams()
    n = len(rows)
    assert report.count('class="example"') == min(params.report.n_random, n) + min(params.report.n_worst, n)
    assert report.count("data:image/jpeg;base64,") >= 2 * n  # frames strips and gallery thumbnails
    assert ">missing<" not in report
    if any(r["rank"] and int(r["rank"]) <= params.report.top for r in rows):
        assert 'class="thumb gt"' in report  # a hit is highlighted
    assert "crops" in report and "detector" in report


def test_misses_are_counted_and_shown_by_failure_kind(evaluated):
    from lpr_core.evaluation.failures import FAILURE_KINDS

    metrics = json.loads((evaluated / "metrics.json").read_text())
    misses = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("test/misses/")}
    assert set(misses) == set(FAILURE_KINDS)  # crops detector, ground-truth boxes at hand: every kind
    rows = read_csv(evaluated / "evaluate" / "per_query.csv")
    assert sum(misses.values()) == sum(r["rank"] != "1" for r in rows) > 0
    assert misses["no_frames"] == 0, misses
    report = (evaluated / "evaluate" / "report.html").read_text()
    assert "Misses by failure kind" in report and "IoU &gt;= 0.5" in report
    n = EvaluateParams().report.n_per_failure
    shown = report.count('class="example failure"')
    assert shown == sum(min(n, v) for v in misses.values()) > 0
    assert re.search(r"<figcaption>\d{4} (IoU \d\.\d\d|no box|no gt box)</figcaption>", report)


def test_candidate_describes_the_evaluated_model(evaluated, inputs):
    from lpr_core.evaluation.candidate import evaluation_data_version
    from lpr_core.inputs import file_sha256

    candidate = json.loads((evaluated / "evaluate" / "candidate.json").read_text())
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert candidate["metrics"] == metrics
    assert candidate["encoder"] == str(inputs.encoder) and candidate["detector"] == str(inputs.detector)
    assert candidate["crops"] == "detector"  # auto, from the checkpoint's crop_boxes record
    assert candidate["encoder_sha256"] == file_sha256(inputs.encoder / "encoder.pt")
    assert re.fullmatch(r"[0-9a-f]{64}", candidate["data_version"])
    assert candidate["data_version"] == evaluation_data_version(inputs.prepared, inputs.download)
    assert candidate["validation_passed"] is True


def test_the_run_is_logged_to_mlflow(evaluated):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    runs = [
        r
        for exp in client.search_experiments()
        for r in client.search_runs([exp.experiment_id], "tags.`lpr.stage` = 'evaluate'")
        if r.info.status == "FINISHED" and r.data.tags.get("lpr.crops") == "detector"
    ]
    assert runs
    metrics = json.loads((evaluated / "metrics.json").read_text())
    run = runs[0]
    assert run.data.metrics["test/rank1"] == pytest.approx(metrics["test/rank1"])
    assert run.data.params["evaluate.bootstrap.n_boot"] == "100"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "predictions.json", "candidate.json"} <= artifacts


# ------------------------------------------------------------------------------- failure modes


def test_a_query_whose_frames_all_failed_is_a_miss(inputs, index_dir, tmp_path):
    lost = queries_table(inputs.prepared)[2]["clip_id"]
    download = derived_download(
        inputs.download, tmp_path / "download", {"test_frames": lambda t: fail_rows(t, "clip_id", {lost})}
    )
    code = run_evaluate(
        inputs, index_dir, tmp_path, eval_params(tmp_path / "p.yaml", crops="ground_truth"), download=download
    )
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test/num_no_prediction"] == 1 and metrics["test/num_queries_without_frames"] == 1
    row = next(r for r in read_csv(tmp_path / "evaluate" / "per_query.csv") if r["query_id"] == lost)
    assert row["rank"] == "" and row["has_prediction"] == "0"
    predictions = json.loads((tmp_path / "evaluate" / "predictions.json").read_text())
    assert lost not in predictions and len(predictions) == metrics["test/num_queries"] - 1
    misses = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("test/misses/")}
    assert set(misses) == {"no_frames", "no_box", "right_box_wrong_image"}  # an oracle's boxes are right
    assert misses["no_frames"] == 1
    candidate = json.loads((tmp_path / "evaluate" / "candidate.json").read_text())
    assert candidate["crops"] == "ground_truth" and candidate["detector"] is None
    assert candidate["validation_passed"] is False  # no validation summary


def test_an_unsafe_clip_id_never_becomes_a_path(inputs, index_dir, tmp_path, capsys):
    prepared = tmp_path / "prepared"
    shutil.copytree(inputs.prepared, prepared)
    table = pq.read_table(prepared / "test_queries.parquet")
    clips = table.column("clip_id").to_pylist()
    clips[1] = "../../escaped"
    table = table.set_column(0, "clip_id", pa.array(clips, pa.string()))
    pq.write_table(table, prepared / "test_queries.parquet")
    out_root = tmp_path / "run"
    assert run_evaluate(inputs, index_dir, out_root, eval_params(tmp_path / "p.yaml"), prepared=prepared) == 1
    err = capsys.readouterr().err
    assert "row 1" in err and "escaped" in err
    assert not out_root.exists() and not any("escaped" in p.name for p in tmp_path.rglob("*"))


def test_an_index_built_with_another_encoder_is_refused(inputs, index_dir, tmp_path, capsys):
    import torch

    from lpr_core.models.encoder import EncoderConfig, build_encoder, save_encoder

    torch.manual_seed(1)
    save_encoder(build_encoder(EncoderConfig(**TINY_ENCODER)), tmp_path / "enc" / "encoder.pt")
    code = run_evaluate(
        inputs, index_dir, tmp_path / "run", eval_params(tmp_path / "p.yaml"), encoder=tmp_path / "enc"
    )
    assert code == 1
    assert "rerun index_gallery" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- pure parts


def test_data_version_follows_content_not_download_layout(inputs, tmp_path):
    from lpr_core.evaluation.candidate import evaluation_data_version

    base = evaluation_data_version(inputs.prepared, inputs.download)
    assert evaluation_data_version(inputs.prepared, inputs.download) == base

    def relocate(table: pa.Table) -> pa.Table:  # another server, another shard layout, other order
        urls = [u.replace("http://", "http://elsewhere.") for u in table.column("url").to_pylist()]
        table = table.set_column(table.schema.get_field_index("url"), "url", pa.array(urls, pa.string()))
        return table.take(pa.array(list(reversed(range(table.num_rows)))))

    moved = derived_download(
        inputs.download, tmp_path / "moved", {"test_frames": relocate, "test_images": relocate}
    )
    assert evaluation_data_version(inputs.prepared, moved) == base
    changed = derived_download(
        inputs.download,
        tmp_path / "changed",
        {"test_images": lambda t: fail_rows(t, "image_id", {t.column("image_id")[0].as_py()})},
    )
    assert evaluation_data_version(inputs.prepared, changed) != base
    prepared = tmp_path / "prepared"
    shutil.copytree(inputs.prepared, prepared)
    table = pq.read_table(prepared / "test_gallery.parquet")
    pq.write_table(table.slice(1), prepared / "test_gallery.parquet")
    assert evaluation_data_version(prepared, inputs.download) != base


def test_the_repo_params_section_parses():
    from lpr_core.config import load_section
    from tests.stages.test_index_gallery import REPO

    params = load_section(EvaluateParams, "evaluate", REPO / "params.yaml")
    assert 1 in params.ks
