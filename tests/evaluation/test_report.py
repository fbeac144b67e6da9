"""Render a sample report from random data and tiny generated images; check its structure."""

from __future__ import annotations

import math
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from lpr_core.evaluation import (
    FailureExample,
    make_examples,
    metric_cis,
    rank_k_curve,
    render_report,
    select_examples,
    slice_metrics,
    summarize,
    top_k_predictions,
    write_report,
)

from .helpers import synthetic_results


class _Tree(HTMLParser):
    """Collects tags with attributes, and the classes of each example block."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.examples: list[list[tuple[str, dict]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "div" and attrs.get("class") == "example":
            self.examples.append([])
        elif self.examples:
            self.examples[-1].append((tag, attrs))

    def handle_data(self, data):
        self.text.append(data)


def _image(path, color, size=(24, 32)):
    Image.new("RGB", size, color).save(path)
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    results, gt, query_ids, x, galleries = synthetic_results(4)
    rng = np.random.default_rng(0)
    image_paths = {}
    for gallery in galleries.values():
        for image_id in gallery.image_ids:
            image_paths[image_id] = _image(root / f"{image_id}.jpg", tuple(int(c) for c in rng.integers(0, 255, 3)))
    frame_paths = {}
    for query_id in query_ids:
        frame_paths[query_id] = [root / f"{query_id}-{i:04d}.jpg" for i in range(12)]
    predictions = top_k_predictions(query_ids, x, galleries, 5)
    random_ids, worst_ids = select_examples(results, n_random=4, n_worst=3, seed=1)
    # the best image of the first example is referenced but absent on disk: it must show as missing
    absent = predictions[random_ids[0]][0][0]
    image_paths[absent].unlink()
    for query_id in random_ids + worst_ids:
        for i, path in enumerate(frame_paths[query_id]):
            _image(path, (10 * i, 100, 200), size=(32, 24))
    n = len(results)
    labels = {
        "category": rng.choice(["shoes", "snacks", "makeup"], n).tolist(),
        "scale_type": rng.choice(["small", "medium", "large"], n).tolist(),
        "duration_type": rng.choice(["short", "medium", "long"], n).tolist(),
        "number_type": rng.choice(["single", "multiple"], n).tolist(),
    }
    summary = summarize(results)
    html = render_report(
        summary=summary,
        ci=metric_cis(results, n_boot=100),
        curve=rank_k_curve(results, 20),
        slices=slice_metrics(results, labels, n_boot=100),
        examples=make_examples(random_ids, results, predictions, gt, frame_paths),
        worst_examples=make_examples(worst_ids, results, predictions, gt, frame_paths),
        image_paths=image_paths,
        title="LPR evaluation <sample>",
        info={"model": "encoder v1", "data": "synthetic"},
        max_frames=8,
    )
    path = write_report(root / "report.html", html)
    tree = _Tree()
    tree.feed(path.read_text())
    return {"tree": tree, "html": html, "summary": summary, "gt": gt, "predictions": predictions,
            "ids": random_ids + worst_ids, "results": results, "path": path, "absent": absent}


def test_self_contained(sample):
    tree = sample["tree"]
    srcs = [a.get("src", "") for t, a in tree.tags if t == "img"]
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert not [t for t, a in tree.tags if t in ("link", "script", "iframe")]
    assert "&lt;sample&gt;" in sample["html"]  # text is escaped


def test_sections_and_summary(sample):
    tree = sample["tree"]
    text = " ".join(tree.text)
    for heading in ("Summary", "Rank-k curve", "Slices (rank1)", "Retrieval examples (random)", "Worst queries"):
        assert heading in text
    for column in ("category", "scale_type", "duration_type", "number_type", "livestream"):
        assert f"by {column}" in text
    assert f"{100 * sample['summary']['rank1']:.2f}" in text
    charts = [a for t, a in tree.tags if t == "img" and a.get("src", "").startswith("data:image/png")]
    assert len(charts) == 1 + 5  # curve + one bar chart per slice column


def test_examples_show_frames_top5_and_highlight_hits(sample):
    tree = sample["tree"]
    assert len(tree.examples) == len(sample["ids"])
    for query_id, block in zip(sample["ids"], tree.examples):
        figures = [a.get("class", "") for t, a in block if t == "figure"]
        top = [i for i, _ in sample["predictions"][query_id][:5]]
        gt = set(sample["gt"][query_id])
        hits = sum(1 for i in top if i in gt)
        assert sum(1 for c in figures if c.split()[-1] == "gt") == hits
        truth = sum(1 for c in figures if c.split()[-1] == "truth")
        assert truth == (0 if hits else 1)
        assert len(figures) == 8 + 5 + truth  # 12 frames sampled down to 8


def test_missing_images_are_marked_not_fatal(sample):
    shown = sum(
        1 for q in sample["ids"] for i, _ in sample["predictions"][q][:5] if i == sample["absent"]
    )
    assert shown >= 1
    placeholders = sample["html"].count('<div class="missing"')
    assert placeholders >= shown
    assert f"{placeholders} image(s) could not be read" in sample["html"]


def test_worst_queries_come_first_by_rank(sample):
    results = sample["results"]
    rank = dict(zip(results.query_ids.tolist(), results.rank.tolist()))
    worst = sample["ids"][4:]
    assert [rank[q] for q in worst] == sorted((rank[q] for q in worst), reverse=True)
    assert rank[worst[0]] == results.rank.max()


def test_no_error_analysis_without_failure_counts(sample):
    assert "Misses by failure kind" not in sample["html"] and "example failure" not in sample["html"]


def test_error_analysis_shows_each_kind_with_its_misses(tmp_path):
    frame = _image(tmp_path / "frame.jpg", (0, 0, 200), size=(40, 30))
    wrong = _image(tmp_path / "wrong.jpg", (200, 0, 0))
    right = _image(tmp_path / "right.jpg", (0, 200, 0))
    examples = {
        "wrong_box": [
            FailureExample("<clip>-1-2", 4.0, ((frame, "0003 IoU 0.12"), (frame, "0007 IoU 0.31")), ("w", 0.9), "r"),
            FailureExample("c-3-4", math.inf, ((frame, "0001 no box"),), ("w", 0.8), "r"),
        ],
        "no_frames": [FailureExample("c-5-6", math.inf, (), None, "r")],
    }
    counts = {"no_frames": 1, "no_box": 0, "wrong_box": 3, "right_box_wrong_image": 0}
    html = render_report(
        summary={"rank1": 0.5, "num_queries": 8},
        image_paths={"w": wrong, "r": right},
        failure_counts=counts,
        failure_examples=examples,
        failure_note="crops: detector <boxes>",
    )
    tree = _Tree()
    tree.feed(html)
    text = " ".join(tree.text)
    assert "Misses by failure kind" in text and "crops: detector <boxes>" in text
    assert "&lt;clip&gt;-1-2" in html and "<clip>" not in html  # ids are text
    for kind, n in counts.items():  # every kind that applies has a row, even at 0
        assert f"<td class=\"l\">{kind}</td><td>{n}</td>" in html
    assert "75.0" in text  # 3 of 4 misses
    assert "wrong_box: 2 of 3" in text and "no_frames: 1 of 1" in text and "no_box: 0" not in text
    assert html.index("no_frames: 1 of 1") < html.index("wrong_box: 2 of 3")  # in the counts' order
    blocks = html.split('<div class="example failure">')[1:]
    assert len(blocks) == 3
    assert "no frames" in blocks[0] and "no prediction" in blocks[0]
    first = blocks[1]
    assert first.count("<figure") == 2 + 2 and "0007 IoU 0.31" in first and "rank 4" in first
    assert 'class="thumb truth"' in first and "#1 0.900" in first
    assert "not retrieved" in blocks[2]
    srcs = [a.get("src", "") for t, a in tree.tags if t == "img"]
    assert len(srcs) == 2 + 2 + 1 + 2 + 1 and all(s.startswith("data:image/jpeg;base64,") for s in srcs)


@pytest.mark.integration
def test_renders_in_a_headless_browser(sample, tmp_path):
    import shutil
    import subprocess

    browser = next(
        (shutil.which(b) for b in ("chromium", "chromium-headless-shell", "google-chrome") if shutil.which(b)), None
    )
    if browser is None:
        pytest.skip("no headless chromium installed")
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1300,3000",
         f"--screenshot={shot}", sample["path"].as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        colors = im.convert("RGB").resize((200, 460)).getcolors(maxcolors=200 * 460)
    assert colors is not None and len(colors) > 50  # charts and thumbnails drew, not a blank page
