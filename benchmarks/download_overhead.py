"""Benchmark: the download stage's overhead over plain img2dataset on the same URL list.

Serves a synthetic world with :class:`lpr_core.synth.ImageServer` (no faults) and times, on the
same URL list, with the same img2dataset settings (``img2dataset_kwargs`` of the repository's
``download`` parameters: processes, threads, shard size, image size...):

- baseline: the plain ``img2dataset`` command on the URL file;
- stage: ``python -m lpr_core.stages.download`` on a directory holding only that URL file
  (list validation, img2dataset, stored-JPEG checks, retry pass, manifest and summary).

Both run as fresh processes into fresh output directories, alternating over ``--repeats``; the
medians are compared. Goal: the stage adds at most 10% to img2dataset's own time.

Then the cost of the fetch guard alone (:mod:`lpr_core.data.fetch_guard`, through which both
img2dataset's fetches and the retry pass's go): ``--fetches`` sequential GETs of the same URLs
from one thread, in alternating blocks, with ``urllib.request.urlopen`` (what img2dataset uses
unguarded) and with ``guarded_get``; the medians of the blocks' per-fetch times are compared.

    python benchmarks/download_overhead.py [--size demo] [--list train_frame_urls] [--repeats 1]
                                           [--fetches 2000]

Last line: ``RESULT seconds=<stage> baseline_seconds=<img2dataset> overhead_pct=<p>
guard_fetch_ms=<guarded GET> urllib_fetch_ms=<plain GET>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lpr_core.config import load_section, to_mapping  # noqa: E402
from lpr_core.data.download import DownloadParams, img2dataset_kwargs  # noqa: E402
from lpr_core.formats.schema import FILE_PATTERNS, URL_LISTS  # noqa: E402


def cli_flags(kwargs: dict) -> list[str]:
    """img2dataset's command-line flags (python-fire syntax) for ``img2dataset.download`` kwargs."""
    out = []
    for key, value in kwargs.items():
        if isinstance(value, bool):
            text = str(value)
        elif isinstance(value, list | tuple):
            text = json.dumps(list(value))
        else:
            text = str(value)
        out.append(f"--{key}={text}")
    return out


def timed(cmd: list[str], log: Path, env: dict) -> float:
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    seconds = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"{' '.join(cmd[:4])}... failed with exit status {rc}; see {log}")
    return seconds


def fetch_cost(urls: list[str], fetches: int, params: DownloadParams, block: int = 100) -> tuple[float, float]:
    """Median milliseconds per GET over alternating blocks: ``(guarded, plain urllib)``."""
    import urllib.request

    from lpr_core.data.download import USER_AGENT
    from lpr_core.data.fetch_guard import guarded_get

    def plain(url: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=params.timeout) as response:  # noqa: S310 - loopback
            return response.read()

    def guarded(url: str) -> bytes:
        return guarded_get(url, params.fetch_policy, params.timeout, USER_AGENT)

    times: dict[str, list[float]] = {"guarded": [], "plain": []}
    for i in range(max(1, fetches // (2 * block))):
        for name, get in (("guarded", guarded), ("plain", plain))[:: 1 if i % 2 == 0 else -1]:
            t0 = time.perf_counter()
            for j in range(block):
                get(urls[(i * block + j) % len(urls)])
            times[name].append(1000 * (time.perf_counter() - t0) / block)
    return statistics.median(times["guarded"]), statistics.median(times["plain"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="demo", help="synthetic world size (default demo)")
    parser.add_argument("--world", type=Path, help="reuse this world directory (generated if absent)")
    parser.add_argument("--list", default="train_frame_urls", choices=list(URL_LISTS), help="the URL list")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each (default 1)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="download parameters")
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one, removed)")
    parser.add_argument("--fetches", type=int, default=2000, help="GETs for the guard's cost (0: skip)")
    args = parser.parse_args()

    from lpr_core.synth import ImageServer, generate_world

    work = Path(args.work or tempfile.mkdtemp(prefix="lpr-download-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    world = args.world or work / "world"
    if not (world / "_source").is_dir():
        print(f"generating a {args.size} world in {world} ...", flush=True)
        generate_world(world, size=args.size, seed=0)
    params = load_section(DownloadParams, "download", args.params)
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1"}
    img2dataset_cmd = Path(sys.executable).with_name("img2dataset")
    stage_times: list[float] = []
    base_times: list[float] = []
    inner: list[dict] = []
    try:
        with ImageServer(world, fault_rate=0.0) as server:
            (src,) = sorted(world.glob(FILE_PATTERNS[args.list]))
            urls_dir = work / "urls"
            shutil.rmtree(urls_dir, ignore_errors=True)
            urls_dir.mkdir()
            stems = [line.rsplit("/", 1)[1] for line in src.read_text().split()]
            url_file = urls_dir / src.name
            url_file.write_text("".join(server.url_prefix + s + "\n" for s in stems))
            params_file = work / "params.yaml"
            import yaml

            params_file.write_text(yaml.safe_dump({"download": to_mapping(params)}))
            split, kind = URL_LISTS[args.list]
            print(f"{len(stems)} URLs of {args.list}; processes={params.processes} threads={params.thread_count} "
                  f"shard={params.number_sample_per_shard} image_size={params.image_size}", flush=True)
            for rep in range(args.repeats):
                runs = ["baseline", "stage"] if rep % 2 == 0 else ["stage", "baseline"]
                for which in runs:
                    out = work / f"out-{which}-{rep}"
                    shutil.rmtree(out, ignore_errors=True)
                    if which == "baseline":
                        kw = img2dataset_kwargs(url_file, out / f"{split}_{kind}", params)
                        kw.update(url_list=str(url_file), input_format="txt")
                        kw.pop("url_col")
                        (out / f"{split}_{kind}").mkdir(parents=True)
                        cmd = [str(img2dataset_cmd), *cli_flags(kw)] if img2dataset_cmd.exists() else [
                            sys.executable, "-c", "from img2dataset.main import main; main()", *cli_flags(kw)]
                        base_times.append(timed(cmd, work / "baseline.log", env))
                        print(f"  img2dataset: {base_times[-1]:.1f} s", flush=True)
                    else:
                        cmd = [sys.executable, "-m", "lpr_core.stages.download", "--urls", str(urls_dir),
                               "--out", str(out), "--params", str(params_file), "--no-progress"]
                        stage_times.append(timed(cmd, work / "stage.log", env))
                        summary = json.loads((out / "download_summary.json").read_text())["lists"][args.list]
                        inner.append(summary)
                        if summary["success"] != len(stems):
                            sys.exit(f"stage downloaded {summary['success']} of {len(stems)} URLs; see {work}")
                        print(f"  stage:       {stage_times[-1]:.1f} s (img2dataset inside "
                              f"{summary['img2dataset_seconds']:.1f} s, after it {summary['post_seconds']:.2f} s)",
                              flush=True)
            guard_ms = plain_ms = float("nan")
            if args.fetches > 0:
                guard_ms, plain_ms = fetch_cost([server.url_prefix + s for s in stems], args.fetches, params)
                print(f"  one GET from one thread: {guard_ms:.3f} ms through the fetch guard, {plain_ms:.3f} ms "
                      "with urllib.request.urlopen", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    stage = statistics.median(stage_times)
    base = statistics.median(base_times)
    post = statistics.median(s["post_seconds"] for s in inner)
    overhead = 100.0 * (stage - base) / base
    print(f"median stage {stage:.2f} s, median img2dataset {base:.2f} s, stage work after img2dataset "
          f"{post:.2f} s ({100 * post / base:.1f}% of img2dataset)")
    print(f"RESULT seconds={stage:.2f} baseline_seconds={base:.2f} overhead_pct={overhead:.1f} "
          f"guard_fetch_ms={guard_ms:.3f} urllib_fetch_ms={plain_ms:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
