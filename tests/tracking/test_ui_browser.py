"""A browser check of ``lpr ui``: the MLflow UI, served on loopback, lists the pipeline's runs.

Drives headless Chromium (Debian's ``chromium`` or ``chromium-headless-shell``) through the
functions of ``docs/make_screenshots.py``, so the docs' screenshot tool is exercised too.
"""

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tracking.helpers import REPO, free_port, tracking_uri_restored

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _load_screens():
    spec = importlib.util.spec_from_file_location("make_screenshots", REPO / "docs" / "make_screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


screens = _load_screens()


@dataclass(frozen=True)
class UI:
    base: str
    runs: dict
    experiment_id: str
    root: Path


def page_text(dom: str) -> str:
    """The visible text of a dumped DOM (scripts and styles dropped, whitespace collapsed)."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


@pytest.fixture(scope="module")
def browser():
    path = screens.find_browser()
    if path is None:
        pytest.skip(f"no headless Chromium on PATH (looked for {', '.join(screens.BROWSER_NAMES)}): "
                    "install Debian's chromium or chromium-headless-shell")
    return path


@pytest.fixture(scope="module")
def ui(browser, tmp_path_factory):
    """Two pipeline runs (one MLflow run per stage) in a fresh store, served by ``lpr ui``."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("lpr-ui")
    with tracking_uri_restored(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        runs = screens.fill_pipeline_runs(root)
        any_run = next(iter(runs.values()))["evaluate"]
        experiment_id = MlflowClient().get_run(any_run).info.experiment_id
        with screens.lpr_ui(root, free_port(), root / "ui.log") as base:
            yield UI(base, runs, experiment_id, root)


def test_runs_page_lists_every_stage_run_of_the_pipelines(ui, browser):
    text = page_text(screens.dump_dom(browser, screens.runs_page_url(ui.base, ui.experiment_id)))
    assert "lpr-pipeline" in text, text[:1000]
    n_runs = sum(len(stages) for stages in ui.runs.values())
    assert f"{n_runs} matching runs" in text, text[:2000]
    for stage in screens.STAGES:
        assert text.count(f" {stage} ") >= len(ui.runs), f"{stage} is not listed twice: {text[:2000]}"


def test_run_page_shows_the_pipeline_lineage_tag(ui, browser):
    pipeline_id, stages = next(iter(ui.runs.items()))
    url = f"{ui.base}/#/experiments/{ui.experiment_id}/runs/{stages['train_encoder']}"
    text = page_text(screens.dump_dom(browser, url))
    assert "train_encoder" in text and "train_encoder.train.lr" in text, text[:2000]
    assert "lpr.pipeline_run_id" in text and pipeline_id in text, text[:3000]


def test_compare_view_screenshot_shows_the_compared_runs(ui, browser, tmp_path):
    from PIL import Image

    compared = [stages["train_encoder"] for stages in ui.runs.values()]
    url = screens.compare_url(ui.base, compared, [ui.experiment_id])
    text = page_text(screens.dump_dom(browser, url))
    assert f"Comparing {len(compared)} Runs" in text and all(r in text for r in compared), text[:2000]

    png = screens.screenshot_compare_view(browser, url, tmp_path / "compare.png", compared,
                                          metrics=("encoder/val_rank1",))
    with Image.open(png) as img:
        assert img.size == screens.WINDOW
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "the screenshot is (nearly) blank"
