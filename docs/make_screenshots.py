"""Screenshots of the MLflow UI for the docs: ``python docs/make_screenshots.py [--out docs/img]``.

Fills a throwaway store with two pipeline runs that differ in the encoder's learning rate (one
MLflow run per stage, tied by ``lpr.pipeline_run_id`` as the stages do), serves it with
``lpr ui`` on loopback and captures the compare-runs view of the two ``train_encoder`` runs with
headless Chromium (Debian's ``chromium`` or ``chromium-headless-shell``).

The browser functions are also used by the test suite's browser check.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

#: executables looked up on PATH, in this order
BROWSER_NAMES = ("chromium", "chromium-headless-shell")
#: two pipeline runs: the encoder's learning rate differs
PIPELINES = {"pipe-lr3e-4": 3e-4, "pipe-lr1e-3": 1e-3}
STAGES = ("download", "validate", "prepare", "train_detector", "train_encoder", "index_gallery", "evaluate")
WINDOW = (1600, 1000)


def find_browser() -> str | None:
    """The first headless-capable Chromium on PATH, or None."""
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _browser_flags(user_data_dir: str | Path) -> list[str]:
    # --no-sandbox: containers and CI run the browser as root, where the sandbox cannot start
    return ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}"]


def dump_dom(browser: str, url: str, budget_ms: int = 30000, timeout_s: float = 180.0) -> str:
    """The DOM of ``url`` after the page ran for ``budget_ms`` of virtual time (its fetches included)."""
    with tempfile.TemporaryDirectory(prefix="lpr-chromium-") as profile:
        out = subprocess.run([browser, *_browser_flags(profile), f"--virtual-time-budget={budget_ms}",
                              "--dump-dom", url], capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"{browser} --dump-dom {url} exited with {out.returncode}:\n{out.stderr[-2000:]}")
    return out.stdout


def runs_page_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table."""
    return f"{base}/#/experiments/{experiment_id}/runs"


def compare_url(base: str, run_ids: Sequence[str], experiment_ids: Sequence[str]) -> str:
    """The compare-runs view of MLflow 3's UI (``#/compare-runs?runs=[..]&experiments=[..]``)."""
    def as_json(values: Sequence[str]) -> str:
        return urllib.parse.quote(json.dumps(list(values), separators=(",", ":")))

    query = f"runs={as_json(run_ids)}&experiments={as_json(sorted(experiment_ids))}"
    return f"{base}/#/compare-runs?{query}"


class _DevTools:
    """A minimal Chrome DevTools Protocol session over one page's websocket."""

    def __init__(self, ws_url: str):
        import websocket  # websocket-client, in the project's lock

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def _devtools(browser: str, timeout_s: float = 60.0) -> Iterator[_DevTools]:
    with tempfile.TemporaryDirectory(prefix="lpr-chromium-") as profile:
        proc = subprocess.Popen([browser, *_browser_flags(profile), "--remote-debugging-port=0", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout_s
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{browser} did not open its DevTools port (exit code {proc.poll()})")
                time.sleep(0.2)
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                pages = [t for t in json.load(resp) if t.get("type") == "page"]
            session = _DevTools(pages[0]["webSocketDebuggerUrl"])
            try:
                yield session
            finally:
                session.close()
        finally:
            _stop_group(proc)


def _wait_for(session: _DevTools, expression: str, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not session.evaluate(expression):
        if time.monotonic() > deadline:
            text = session.evaluate("document.body ? document.body.innerText.slice(0, 500) : ''")
            raise RuntimeError(f"the page never showed {what} within {timeout_s:.0f} s; it shows: {text!r}")
        time.sleep(0.5)


def _click(session: _DevTools, element_js: str) -> bool:
    """Click the middle of the element ``element_js`` evaluates to, as a mouse does; False when absent."""
    point = session.evaluate(f"""(() => {{ const e = {element_js}; if (!e) return null;
        const b = e.getBoundingClientRect(); return [b.x + b.width / 2, b.y + b.height / 2]; }})()""")
    if not point:
        return False
    for kind in ("mousePressed", "mouseReleased"):
        session.call("Input.dispatchMouseEvent", type=kind, x=point[0], y=point[1], button="left", clickCount=1)
    return True


ASSISTANT_CLOSE = "document.querySelector('[data-component-id=\"mlflow.assistant.chat_panel.close\"]')"


def screenshot_compare_view(browser: str, url: str, out: Path, run_ids: Sequence[str],
                            metrics: Sequence[str] = (), timeout_s: float = 120.0) -> Path:
    """Save a PNG of the compare-runs view at ``url`` once every run's id is on the page.

    ``metrics`` are added to the parallel-coordinates plot (the UI shows one metric by default).
    The UI opens its assistant panel on a first visit to a local server; it is closed, and the
    sidebar switched to "Model training", before the capture.
    """
    with _devtools(browser) as page:
        page.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1], deviceScaleFactor=1,
                  mobile=False)
        page.call("Page.navigate", url=url)
        ids = json.dumps(list(run_ids))
        _wait_for(page, f"{ids}.every(id => document.body && document.body.innerText.includes(id))",
                  "every compared run id", timeout_s)
        _wait_for(page, "document.querySelectorAll('.du-bois-light-select-selector').length >= 2",
                  "the plot's parameter and metric pickers", 30)
        _click(page, ASSISTANT_CLOSE)
        _click(page, "[...document.querySelectorAll('[role=button]')].find(b => b.innerText.trim() === "
                     "'Model training')")
        _wait_for(page, f"!{ASSISTANT_CLOSE}", "the assistant panel closed", 20)
        time.sleep(1)  # the layout settles after the panel closed
        picker = "document.querySelectorAll('.du-bois-light-select-selector')[1]"
        for name in metrics:
            option = f"document.querySelector('.du-bois-light-select-item-option[title={json.dumps(name)}]')"
            shown = f"(() => {{ const e = {option}; return !!e && e.offsetParent !== null; }})()"
            chosen = f"{picker}.innerText.includes({json.dumps(name)})"
            for _ in range(5):
                if page.evaluate(chosen):  # a second click on a chosen option would drop it
                    break
                if not page.evaluate(shown):
                    _click(page, picker)
                    _wait_for(page, shown, f"the metric {name!r} in the metric picker", 20)
                    time.sleep(0.5)  # the drop-down slides in
                _click(page, option)
                time.sleep(0.5)
            if not page.evaluate(chosen):
                raise RuntimeError(f"could not add the metric {name!r} to the plot")
        if metrics:
            page.call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape",
                      windowsVirtualKeyCode=27)
            _click(page, "[...document.querySelectorAll('h1, h2')].find(e => e.innerText.includes('Comparing'))")
        _wait_for(page, "document.querySelectorAll('svg path').length > 0", "a plot", 30)
        time.sleep(2)  # let the plot finish its transitions
        png = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    return out


def fill_pipeline_runs(project_root: Path, pipelines: Mapping[str, float] = PIPELINES) -> dict[str, dict[str, str]]:
    """Log one run per stage for each pipeline run (its id -> encoder lr), as the stages do.

    Metrics are made up but shaped like the real ones: training loss curves per step, and test
    retrieval scores that improve with the better learning rate. Returns
    ``{pipeline_run_id: {stage: run_id}}``. The store is ``$MLFLOW_TRACKING_URI`` or the project's.
    """
    from lpr_core.tracking import lineage
    from lpr_core.tracking.run import stage_run

    saved = os.environ.get(lineage.PIPELINE_RUN_ENV)
    runs: dict[str, dict[str, str]] = {}
    try:
        for i, (pipeline_id, lr) in enumerate(pipelines.items()):
            os.environ[lineage.PIPELINE_RUN_ENV] = pipeline_id
            runs[pipeline_id] = {}
            quality = 1.0 - abs(math.log10(lr) - math.log10(5e-4))  # the better lr scores higher
            for stage in STAGES:
                params, metrics, curve = _stage_record(stage, lr, quality, seed=i)
                with stage_run(stage, params, project_root=project_root) as run:
                    for step, values in enumerate(curve):
                        run.log_metrics(values, step=step * 10)
                    run.log_metrics(metrics)
                runs[pipeline_id][stage] = run.run_id
    finally:
        if saved is None:
            os.environ.pop(lineage.PIPELINE_RUN_ENV, None)
        else:
            os.environ[lineage.PIPELINE_RUN_ENV] = saved
    return runs


def _stage_record(stage: str, lr: float, quality: float, seed: int):
    """(params, final metrics, per-step metrics) of one made-up stage run."""
    curve: list[dict[str, float]] = []
    if stage == "train_encoder":
        params = {"train_encoder": {"model": {"backbone": "resnet50"}, "train": {"batch_size": 16, "lr": lr}}}
        for s in range(30):
            loss = 4.2 * math.exp(-s * lr * 300) + 0.35 + 0.04 * math.sin(s + seed)
            curve.append({"train/loss": loss, "train/lr": lr * min(1.0, (s + 1) / 3)})
        val_rank1 = 0.25 + 0.12 * quality
        metrics = {"encoder/val_rank1": val_rank1, "encoder/val_rank5": val_rank1 + 0.23,
                   "encoder/val_mAP": val_rank1 + 0.08, "encoder/train_loss": curve[-1]["train/loss"]}
    elif stage == "train_detector":
        params = {"train_detector": {"train": {"lr": 1e-3, "batch_size": 8, "max_steps": 100}}}
        for s in range(10):
            curve.append({"train/loss": 1.8 * math.exp(-s / 4) + 0.3 + 0.02 * seed})
        metrics = {"train_detector/val_map50": 0.62 + 0.01 * seed}
    elif stage == "evaluate":
        params = {"evaluate": {"top_k": 10, "crops": "detector"}}
        rank1 = 0.22 + 0.12 * quality
        metrics = {"test/rank1": rank1, "test/rank5": rank1 + 0.21, "test/rank10": rank1 + 0.3,
                   "test/scale_type/small/rank1": rank1 - 0.06, "test/scale_type/large/rank1": rank1 + 0.05}
    elif stage == "index_gallery":
        params = {"index_gallery": {"batch_size": 64}}
        metrics = {"index_gallery/images": 2000.0, "index_gallery/time_s": 41.0 + seed}
    else:
        params = {stage: {"seed": 0}}
        metrics = {f"{stage}/rows": 12000.0}
    return params, metrics, curve


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def lpr_ui(project_root: Path, port: int, log: Path, timeout_s: float = 240.0) -> Iterator[str]:
    """Run ``lpr ui`` on ``port`` in ``project_root`` until it answers; yield its base URL, stop it after."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lpr_core.cli", "ui", "--port", str(port)], cwd=project_root,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"lpr ui exited with {proc.returncode}; log {log}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"lpr ui did not answer within {timeout_s:.0f} s; log {log}:\n"
                                   f"{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        _stop_group(proc)


def make_compare_screenshot(out: Path, workdir: Path, browser: str) -> Path:
    """Build the store in ``workdir``, serve it with ``lpr ui`` and capture the compare view to ``out``."""
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    runs = fill_pipeline_runs(workdir)
    from mlflow.tracking import MlflowClient

    compared = [r["train_encoder"] for r in runs.values()]
    experiment_id = MlflowClient().get_run(compared[0]).info.experiment_id
    with lpr_ui(workdir, free_port(), workdir / "ui.log") as base:
        return screenshot_compare_view(browser, compare_url(base, compared, [experiment_id]), out, compared,
                                       metrics=("encoder/val_rank1", "encoder/val_rank5"))


def main(argv: list[str] | None = None) -> int:
    """Write ``mlflow-compare.png`` into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "img")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print(f"no browser: install Debian's chromium (one of {', '.join(BROWSER_NAMES)} on PATH)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lpr-screens-") as tmp:
        path = make_compare_screenshot(args.out / "mlflow-compare.png", Path(tmp), browser)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
