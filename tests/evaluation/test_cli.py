"""`lpr evaluate-predictions` end to end, on files written like the official ones."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lpr_core.cli import main

from .oracle import oracle_from_predictions, oracle_summary, random_world

REPO = Path(__file__).resolve().parents[2]


def _files(tmp_path, seed=0):
    rnd = random.Random(seed)
    gt, query_ids, _, raw = random_world(seed, n_queries=80)
    gt = {q: list(dict.fromkeys(images)) for q, images in gt.items()}  # the LPR4M reader refuses a repeated image
    predictions = {}
    for query_id in query_ids:
        if query_id not in gt or rnd.random() < 0.1:
            continue  # some queries have no prediction at all
        ids = list(raw.get(query_id[:36], ([], []))[0])
        rnd.shuffle(ids)
        predictions[query_id] = [[i, round(1 - n / 50, 4)] for n, i in enumerate(ids)]
    gt_path, pred_path = tmp_path / "test_videoid_to_gtimage.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt, indent=1))
    pred_path.write_text(json.dumps(predictions, indent=1))
    return gt, predictions, gt_path, pred_path


def _printed(out: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^([\w-]+):\s+([\d.]+)%", out, re.M)}


def test_prints_the_protocol_metrics(tmp_path, capsys):
    gt, predictions, gt_path, pred_path = _files(tmp_path)
    metrics_path = tmp_path / "metrics.json"
    assert main(["evaluate-predictions", "--gt", str(gt_path), "--pred", str(pred_path), "--metrics-out", str(metrics_path)]) == 0
    out = capsys.readouterr().out
    ks = (1, 3, 5, 10)
    expected = oracle_summary(oracle_from_predictions(gt, predictions, ks), ks)
    printed = _printed(out)
    for k in ks:
        assert printed[f"rank-{k}"] == pytest.approx(100 * expected[f"rank{k}"], abs=0.005)
    assert printed["mAP"] == pytest.approx(100 * expected["mAP"], abs=0.005)
    assert printed["MRR"] == pytest.approx(100 * expected["MRR"], abs=0.005)
    missing = sum(1 for q in gt if not predictions.get(q))
    assert missing > 0
    assert f"queries without prediction: {missing}" in out
    assert f"queries: {len(gt)}" in out
    assert json.loads(metrics_path.read_text())["test/rank1"] == pytest.approx(expected["rank1"])


def test_ci_and_gallery_check(tmp_path, capsys):
    gt, predictions, gt_path, pred_path = _files(tmp_path, seed=1)
    assert main(["evaluate-predictions", "--gt", str(gt_path), "--pred", str(pred_path), "--ci", "--ks", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^rank-2:\s+[\d.]+%\s+\[[\d.]+, [\d.]+\]$", out, re.M)
    # a prediction outside its livestream's gallery is a protocol breach
    query = next(q for q, p in predictions.items() if p)
    galleries = {query[:36]: [e[0] for e in predictions[query][1:]]}
    gallery_path = tmp_path / "gallery.json"
    gallery_path.write_text(json.dumps(galleries))
    code = main(["evaluate-predictions", "--gt", str(gt_path), "--pred", str(pred_path), "--gallery", str(gallery_path)])
    assert code == 2
    assert "is not in the gallery" in capsys.readouterr().err


def test_malformed_file_exits_2_naming_file_and_key(tmp_path, capsys):
    gt, predictions, gt_path, pred_path = _files(tmp_path)
    query = next(iter(predictions))
    predictions[query] = [["not-an-id", 0.3]]
    pred_path.write_text(json.dumps(predictions))
    assert main(["evaluate-predictions", "--gt", str(gt_path), "--pred", str(pred_path)]) == 2
    err = capsys.readouterr().err
    assert str(pred_path) in err and query in err and "entry 0" in err


def test_a_repeated_ground_truth_image_exits_2_naming_file_line_and_key(tmp_path, capsys):
    gt, _, gt_path, pred_path = _files(tmp_path)
    query = next(iter(gt))
    gt[query] = gt[query] + gt[query][:1]
    gt_path.write_text(json.dumps(gt, indent=1))
    assert main(["evaluate-predictions", "--gt", str(gt_path), "--pred", str(pred_path)]) == 2
    err = capsys.readouterr().err
    assert f"{gt_path}:2: item {len(gt[query]) - 1}: duplicate image_id {gt[query][0]}" in err  # line 2: the first key


def test_notes_on_the_prediction_file_go_to_stderr_and_the_metrics_to_stdout(tmp_path, capsys):
    gt, predictions, gt_path, pred_path = _files(tmp_path, seed=3)
    query = next(q for q, p in predictions.items() if len(p) > 1)
    predictions[query] = list(reversed(predictions[query]))  # lowest score first
    predictions[f"{query[:36]}-999000-999500"] = [[predictions[query][0][0], 0.5]]  # a clip with no ground truth
    pred_path.write_text(json.dumps(predictions))
    for quiet in ([], ["-q"]):  # notes are warnings: -q keeps them
        assert main([*quiet, "evaluate-predictions", "--gt", str(gt_path), "--pred", str(pred_path)]) == 0
        out, err = capsys.readouterr()
        assert set(_printed(out)) == {"rank-1", "rank-3", "rank-5", "rank-10", "mAP", "MRR"} and "note:" not in out
        assert err.splitlines() == [
            "note: 1 prediction key(s) are not in the ground truth and were ignored",
            f"note: 1 prediction list(s) are not sorted by score (first: {query}); the file order was used as the "
            "ranking",
        ]


def test_runs_as_a_command(tmp_path):
    _, _, gt_path, pred_path = _files(tmp_path, seed=2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "lpr_core.cli", "evaluate-predictions", "--gt", str(gt_path), "--pred", str(pred_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert set(_printed(proc.stdout)) == {"rank-1", "rank-3", "rank-5", "rank-10", "mAP", "MRR"}
