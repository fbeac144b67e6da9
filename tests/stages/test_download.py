"""The ``download`` stage end to end: real img2dataset against the synthetic world's image server.

The integration tests run ``python -m lpr_core.stages.download`` as a subprocess with the
repository's ``download`` parameters shrunk (short timeout, small shards), against
:class:`lpr_core.synth.ImageServer` with injected faults, and check the manifests against
:func:`lpr_core.synth.fault_for`, which predicts every id's fault. One test SIGKILLs the stage
during img2dataset and checks that a rerun finishes without downloading complete shards again.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from lpr_core import ids
from lpr_core.config import load_section, to_mapping
from lpr_core.data.boxes import keep_ratio_size
from lpr_core.data.download import DownloadParams, RetryPassParams
from lpr_core.data.manifest import check_jpeg, complete_shards, manifest_schema
from lpr_core.formats.schema import FILE_PATTERNS, URL_LISTS
from lpr_core.stages.download import main

REPO = Path(__file__).resolve().parents[2]


def shrunk_params(**changes) -> DownloadParams:
    """The repository's download parameters, shrunk for a test."""
    base = load_section(DownloadParams, "download", REPO / "params.yaml")
    defaults = dict(processes=1, thread_count=8, timeout=1.0, number_sample_per_shard=40,
                    retry_pass=RetryPassParams(attempts=3, backoff=0.05))
    return dataclasses.replace(base, **{**defaults, **changes})


def write_params(path: Path, params: DownloadParams) -> Path:
    path.write_text(yaml.safe_dump({"download": to_mapping(params)}), encoding="utf-8")
    return path


def url_file(world: Path, name: str) -> Path:
    (path,) = sorted(world.glob(FILE_PATTERNS[name]))
    return path


def copy_urls(world: Path, names: list[str], dest: Path, prefix: str) -> dict[str, list[str]]:
    """Copy URL lists into ``dest`` pointing at ``prefix``; returns their URLs."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        src = url_file(world, name)
        stems = [line.rsplit("/", 1)[1] for line in src.read_text().split()]
        out[name] = [prefix + s for s in stems]
        (dest / src.name).write_text("".join(u + "\n" for u in out[name]))
    return out


STAGE = [sys.executable, "-m", "lpr_core.stages.download"]


def run_stage(urls: Path, out: Path, params: Path, log: Path, env: dict[str, str | None] | None = None,
              launcher: list[str] = STAGE) -> subprocess.Popen:
    """Start the stage; ``env`` adds variables to the environment (None: removes one).

    Every process of the run inherits ``LPR_TEST_STAGE=<out>`` (see :func:`processes_of_a_download_run`).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1", "LPR_TEST_STAGE": str(out),
           **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [*launcher, "--urls", str(urls), "--out", str(out), "--params", str(params), "--no-progress"],
            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )


def item_id(url: str) -> str:
    return url.rsplit("/", 1)[1][:-4]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from lpr_core.synth import generate_world

    return generate_world(tmp_path_factory.mktemp("world") / "tiny", size="tiny", seed=0).out_dir


# ------------------------------------------------------------------------ fast error paths


def test_unknown_parameter_is_reported(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("download:\n  image_sise: 64\n")
    assert main(["--urls", str(tmp_path), "--out", str(tmp_path / "o"), "--params", str(params)]) == 1
    assert "unknown key(s) 'image_sise'" in capsys.readouterr().err


def test_bad_url_list_is_reported_before_any_download(tmp_path, capsys):
    urls = tmp_path / "urls"
    urls.mkdir()
    good = "http://127.0.0.1:9/lpr/0a1b2c3d-0000-4000-8000-00000000abcd.jpg"
    (urls / "test_image_url_2.txt").write_text(f"{good}\nhttp://127.0.0.1:9/lpr/a b.jpg\n")
    (urls / "training_image_url_1.txt").write_text(f"{good}\n")
    params = write_params(tmp_path / "params.yaml", shrunk_params())
    out = tmp_path / "out"
    assert main(["--urls", str(urls), "--out", str(out), "--params", str(params)]) == 1
    assert "test_image_url_2.txt:2:" in capsys.readouterr().err
    assert not out.exists()  # the training list comes first, yet nothing was downloaded


def test_no_url_list_is_reported(tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml", shrunk_params())
    assert main(["--urls", str(tmp_path), "--out", str(tmp_path / "o"), "--params", str(params)]) == 1
    assert "no URL list found" in capsys.readouterr().err


# ---------------------------------------------------------------------------- integration


def fault_seed(urls: dict[str, list[str]], rate: float) -> int:
    """The first seed whose faults hit every fault kind in these lists."""
    from lpr_core.synth import FaultKind, fault_for

    every = [item_id(u) for us in urls.values() for u in us]
    for seed in range(200):
        if {fault_for(i, rate, seed) for i in every} >= set(FaultKind):
            return seed
    raise AssertionError("no seed gives every fault kind")


EXPECTED_REASON = {"NOT_FOUND": "http_404", "SERVER_ERROR": "http_500", "TRUNCATED": "decode", "CORRUPT": "decode"}


def check_manifests(out: Path, world: Path, urls: dict[str, list[str]], server, params: DownloadParams) -> dict:
    """Every URL once, each outcome as the fault predicts, stored samples as img2dataset makes them."""
    from lpr_core.data.download import make_resizer, process_image
    from lpr_core.synth import source_path

    resizer = make_resizer(params)
    summary = json.loads((out / "download_summary.json").read_text())
    seen_reasons = set()
    for name, list_urls in urls.items():
        split, kind = URL_LISTS[name]
        table = pq.read_table(out / "manifests" / f"{split}_{kind}.parquet")
        assert table.schema.equals(manifest_schema(kind))
        rows = table.to_pylist()
        assert sorted(r["url"] for r in rows) == sorted(list_urls)  # every input URL exactly once
        recovered = 0
        for r in rows:
            rid = r["frame_id"] if kind == "frames" else r["image_id"]
            assert rid == item_id(r["url"])
            if kind == "frames":
                assert r["clip_id"] == ids.parse_frame_id(rid).clip_id
            fault = server.fault_for(rid)
            if fault is None or fault.recoverable:
                assert r["status"] == "success", (rid, fault, r["error"])
                source = source_path(world, rid).read_bytes()
                assert r["sha256"] == hashlib.sha256(source).hexdigest()
                if r["tar_member"] is None:
                    stored = (out / r["path"]).read_bytes()
                else:
                    with tarfile.open(out / r["path"]) as tar:
                        stored = tar.extractfile(r["tar_member"]).read()
                # img2dataset's samples and the retry pass's are the same bytes for the same source
                img, w, h, ow, oh = process_image(source, resizer)
                assert stored == img and (r["width"], r["height"], r["original_width"], r["original_height"]) == (
                    w, h, ow, oh)
                assert check_jpeg(stored, w, h) is None
                ew, eh = keep_ratio_size(ow, oh, params.image_size, params.resize_only_if_bigger)
                assert (w, h) == (ew, eh)
                if fault is not None:
                    recovered += 1
                    assert r["path"] == f"{split}_{kind}/retried/{rid}.jpg" and r["tar_member"] is None
            else:
                reason = EXPECTED_REASON[fault.name]
                assert r["status"] == "failed" and r["error"].startswith(f"{reason}: "), (rid, fault, r["error"])
                assert r["path"] is None and r["sha256"] is None
                seen_reasons.add(fault.name)
        s = summary["lists"][name]
        assert s["total"] == len(list_urls) and s["recovered_by_retry"] == recovered
        assert s["success"] + s["failed"] == s["total"] == sum(1 for _ in rows)
        assert sum(s["failed_by_reason"].values()) == s["failed"]
    return {"summary": summary, "reasons": seen_reasons}


@pytest.mark.slow
@pytest.mark.integration
def test_stage_recovers_transient_faults_and_records_permanent_ones(world, tmp_path):
    from lpr_core.synth import ImageServer

    names = list(URL_LISTS)
    probe = copy_urls(world, names, tmp_path / "probe", "http://127.0.0.1:1/lpr/")
    seed = fault_seed(probe, 0.1)
    params = shrunk_params()
    with ImageServer(world, fault_rate=0.1, seed=seed, slow_seconds=3.0) as server:
        urls = copy_urls(world, names, tmp_path / "urls", server.url_prefix)
        out = tmp_path / "out"
        log = tmp_path / "stage.log"
        proc = run_stage(tmp_path / "urls", out, write_params(tmp_path / "params.yaml", params), log)
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
        result = check_manifests(out, world, urls, server, params)
        assert result["reasons"] == set(EXPECTED_REASON)
        # the retry pass asked again only for URLs that had failed
        for us in urls.values():
            for u in us:
                if server.fault_for(item_id(u)) is None:
                    assert server.request_count(item_id(u)) == 1
    text = log.read_text()
    assert "failed by reason" in text and "recovered" in text


@pytest.mark.slow
@pytest.mark.integration
def test_stage_webdataset_output_and_skipped_lists(world, tmp_path):
    from lpr_core.synth import ImageServer

    names = ["test_frame_urls"]
    probe = copy_urls(world, names, tmp_path / "probe", "http://127.0.0.1:1/lpr/")
    from lpr_core.synth import FaultKind, fault_for

    seed = next(s for s in range(500) if {fault_for(item_id(u), 0.15, s) for u in probe[names[0]]}
                >= {FaultKind.TRANSIENT, FaultKind.NOT_FOUND})
    params = shrunk_params(output_format="webdataset", number_sample_per_shard=25)
    with ImageServer(world, fault_rate=0.15, seed=seed, slow_seconds=3.0) as server:
        urls = copy_urls(world, names, tmp_path / "urls", server.url_prefix)
        out = tmp_path / "out"
        log = tmp_path / "stage.log"
        proc = run_stage(tmp_path / "urls", out, write_params(tmp_path / "params.yaml", params), log)
        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
        check_manifests(out, world, urls, server, params)
    rows = pq.read_table(out / "manifests" / "test_frames.parquet").to_pylist()
    assert {r["path"] for r in rows if r["tar_member"]} == {f"test_frames/{i:05d}.tar" for i in range(3)}
    summary = json.loads((out / "download_summary.json").read_text())
    for name in ("train_frame_urls", "train_image_urls", "test_image_urls"):
        assert "skipped" in summary["lists"][name]
        assert f"{name}: no {FILE_PATTERNS[name]}" in log.read_text()
    assert not (out / "manifests" / "train_frames.parquet").exists()


def live_processes() -> list[tuple[int, int, bytes]]:
    """``(pid, parent pid, environment)`` of every live (not zombie) process, from ``/proc``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except (OSError, IndexError):
            continue
        if stat[0] != "Z":
            out.append((int(entry), int(stat[1]), env))
    return out


def processes_of_a_download_run(out: Path) -> list[int]:
    """Live processes started by the download run of :func:`run_stage` into ``out`` (they carry the
    run's guard token and the test's mark in their environment; other runs on the machine do not)."""
    mark = b"\0LPR_TEST_STAGE=" + str(out).encode() + b"\0"
    return [pid for pid, _, env in live_processes() if b"LPR_DOWNLOAD_RUN=" in env and mark in b"\0" + env]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_stage_killed_during_img2dataset_resumes_without_redownloading(world, tmp_path, monkeypatch):
    from lpr_core.synth import FaultKind, ImageServer

    # img2dataset works in the stage's state folder (lpr_core.data.download_state), published as --out
    monkeypatch.setenv("LPR_STATE_URL", str(tmp_path / "state"))

    # every id's first answer stalls 0.15 s (under the timeout): a shard of 20 takes 3 s, time
    # enough to SIGKILL the stage while a worker is inside a shard
    params = shrunk_params(thread_count=1, number_sample_per_shard=20)
    name = "train_frame_urls"
    with ImageServer(world, fault_rate=1.0, seed=0, slow_seconds=0.15, kinds=(FaultKind.SLOW,)) as server:
        urls = copy_urls(world, [name], tmp_path / "urls", server.url_prefix)[name]
        n_shards = -(-len(urls) // params.number_sample_per_shard)
        out = tmp_path / "out"
        log = tmp_path / "stage.log"
        params_path = write_params(tmp_path / "params.yaml", params)
        proc = run_stage(tmp_path / "urls", out, params_path, log)
        deadline = time.monotonic() + 300
        while not list((tmp_path / "state").glob("download/*/work/train_frames")) and time.monotonic() < deadline:
            time.sleep(0.05)
        (folder,) = (tmp_path / "state").glob("download/*/work/train_frames")
        while len(complete_shards(folder)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the stage ended before it could be killed:\n" + log.read_text()[-3000:]
        assert processes_of_a_download_run(out), "img2dataset's workers should be running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # img2dataset's worker (inside a 3 s shard) and logger die with the stage, within a second
        deadline = time.monotonic() + 1.0
        while processes_of_a_download_run(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_of_a_download_run(out) == []
        done = {shard: path.stat().st_mtime_ns for shard, path in complete_shards(folder)}
        counts = server.request_counts()
        time.sleep(1.0)
        assert {shard for shard, _ in complete_shards(folder)} == set(done)
        assert server.request_counts() == counts
        assert 2 <= len(done) < n_shards
        assert not out.exists()  # nothing published before the run ends
        done_urls = set(pq.read_table(folder / f"{min(done):05d}.parquet").column("url").to_pylist())
        for shard in done:
            done_urls |= set(pq.read_table(folder / f"{shard:05d}.parquet").column("url").to_pylist())

        proc = run_stage(tmp_path / "urls", out, params_path, log)
        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
        # complete shards were neither downloaded nor rewritten again
        for u in done_urls:
            assert server.request_count(item_id(u)) == 1, u
        for shard, mtime in done.items():
            assert (folder / f"{shard:05d}.parquet").stat().st_mtime_ns == mtime
        rows = pq.read_table(out / "manifests" / "train_frames.parquet").to_pylist()
        assert sorted(r["url"] for r in rows) == sorted(urls)
        assert all(r["status"] == "success" for r in rows)
        assert len(complete_shards(folder)) == n_shards
        # --out holds the state's files linked, not a second copy
        assert (out / "train_frames" / f"{min(done):05d}.parquet").samefile(folder / f"{min(done):05d}.parquet")

        # a third run finds every shard complete and does not start img2dataset at all
        before = server.request_counts()
        t0 = time.monotonic()
        proc = run_stage(tmp_path / "urls", out, params_path, log)
        assert proc.wait(timeout=300) == 0
        assert server.request_counts() == before
        assert "img2dataset not needed" in log.read_text()
        assert time.monotonic() - t0 < 60


# --------------------------------------------------------------------------------- on Spark


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_stage_on_local_spark_writes_the_manifests_multiprocessing_writes(world, tmp_path):
    """``distributor: pyspark`` on ``local[2]`` against the same server and faults as
    ``multiprocessing``, twice: the stage's own session (no master in the environment,
    ``processes: 2``), and the stage as ``spark-submit``'s application, the way a Spark Operator
    ``SparkApplication`` runs it (spark-submit's master and settings stand)."""
    from lpr_core.synth import FaultKind, ImageServer, fault_for

    names = ["test_frame_urls", "test_image_urls"]  # two lists: one Spark session serves both
    probe = copy_urls(world, names, tmp_path / "probe", "http://127.0.0.1:1/lpr/")
    every = [item_id(u) for us in probe.values() for u in us]
    wanted = {FaultKind.NOT_FOUND, FaultKind.TRANSIENT, FaultKind.SLOW, FaultKind.CORRUPT}
    seed = next(s for s in range(500) if {fault_for(i, 0.2, s) for i in every} >= wanted)
    params = shrunk_params(processes=2, number_sample_per_shard=20, allow_private_networks=("127.0.0.1/32",))
    outs = {}
    with ImageServer(world, fault_rate=0.2, seed=seed, slow_seconds=3.0) as server:
        urls = copy_urls(world, names, tmp_path / "urls", server.url_prefix)
        # every 7th URL on another loopback address, outside the allow-list: the guard must refuse
        # it inside Spark's executors as it does in img2dataset's own processes
        refused = set()
        for name, list_urls in urls.items():
            for i in range(0, len(list_urls), 7):
                list_urls[i] = list_urls[i].replace(server.url_prefix, "http://127.0.0.2:9/lpr/")
                refused.add(list_urls[i])
            (tmp_path / "urls" / url_file(tmp_path / "urls", name).name).write_text(
                "".join(u + "\n" for u in list_urls))
        submit = [str(Path(sys.executable).with_name("spark-submit")), "--master", "local[2]",
                  "--conf", "spark.ui.enabled=false", str(REPO / "lpr_core" / "stages" / "download.py")]
        for run, launcher in (("multiprocessing", STAGE), ("pyspark", STAGE), ("spark-submit", submit)):
            server.reset_counts()  # the same faults again (TRANSIENT and SLOW fail first)
            out = tmp_path / run
            log = tmp_path / f"{run}.log"
            params_path = write_params(tmp_path / f"{run}.yaml", dataclasses.replace(
                params, distributor="multiprocessing" if run == "multiprocessing" else "pyspark"))
            env: dict[str, str | None] = {k: None for k in ("MASTER", "SPARK_CONF_DIR", "SPARK_REMOTE")}
            env["PYSPARK_SUBMIT_ARGS"] = "--conf spark.ui.enabled=false pyspark-shell"  # no UI port to bind
            env["PYSPARK_PYTHON"] = sys.executable if run == "spark-submit" else None
            # a state folder per run: the distributor does not change results, so one shared folder
            # would hand the later runs the first run's finished shards and nothing would be fetched
            env["LPR_STATE_URL"] = str(tmp_path / f"state-{run}")
            proc = run_stage(tmp_path / "urls", out, params_path, log, env, launcher)
            assert proc.wait(timeout=900) == 0, log.read_text()[-6000:]
            outs[run] = out
    text = (tmp_path / "pyspark.log").read_text()
    assert text.count("pyspark: starting a SparkSession on local[2] (from download.processes)") == 1
    text = (tmp_path / "spark-submit.log").read_text()
    assert "pyspark: starting a SparkSession on the master spark-submit set (from spark-submit)" in text
    deadline = time.monotonic() + 10  # the JVM exits when its driver's pipe closes
    while any(map(processes_of_a_download_run, outs.values())) and time.monotonic() < deadline:
        time.sleep(0.1)
    for out in outs.values():  # the JVM and its Python workers ended with the stage
        assert processes_of_a_download_run(out) == []
    reasons = set()
    for name in names:
        split, kind = URL_LISTS[name]
        tables = {d: pq.read_table(out / "manifests" / f"{split}_{kind}.parquet") for d, out in outs.items()}
        mp, spark = tables["multiprocessing"].to_pylist(), tables["pyspark"].to_pylist()
        assert [r["url"] for r in mp] == urls[name]
        assert spark == mp  # ids, paths, statuses, errors, sizes, sha256: row for row
        assert tables["spark-submit"].to_pylist() == mp
        reasons |= {r["error"].split(":")[0] for r in mp if r["status"] == "failed"}
        assert sum(r["status"] == "success" for r in mp) > len(mp) // 2
        for r in mp:
            assert (r["url"] in refused) == (r["error"] or "").startswith("refused_private_address: ")
        # the same shards, and the refusals came from img2dataset on Spark, not the retry pass
        folder = outs["pyspark"] / f"{split}_{kind}"
        assert _shard_rows(folder) == _shard_rows(outs["multiprocessing"] / f"{split}_{kind}")
        for r in _shard_rows(folder):
            if r["url"] in refused:
                assert r["error_message"].startswith("refused_private_address: 127.0.0.2 (loopback)")
        for r in spark:
            if r["status"] == "success" and r["tar_member"] is None:
                a, *others = ((o / r["path"]).read_bytes() for o in outs.values())
                assert others == [a, a]
    assert reasons >= {"http_404", "decode", "refused_private_address"}
    summaries = [json.loads((o / "download_summary.json").read_text())["lists"] for o in outs.values()]
    for name in names:
        for key in ("total", "success", "failed", "failed_by_reason", "refused", "recovered_by_retry"):
            assert summaries[0][name][key] == summaries[1][name][key] == summaries[2][name][key], (name, key)


# ------------------------------------------------------------------- img2dataset's processes


def _shard_rows(folder: Path) -> list[dict]:
    rows = []
    for _, path in complete_shards(folder):
        rows += pq.read_table(path).to_pylist()
    return sorted(rows, key=lambda r: r["key"])


def _server_children(pid: int) -> list[int]:
    return [child for child, parent, _ in live_processes() if parent == pid]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_forked_img2dataset_processes_store_what_spawned_ones_do(world, tmp_path):
    import img2dataset.distributor
    from img2dataset.logger import LoggerProcess

    from lpr_core.data.download import orphan_guard, prepare_input, read_url_list, run_img2dataset
    from lpr_core.data.download_workers import WorkerServer
    from lpr_core.synth import ImageServer

    name = "test_frame_urls"
    params = shrunk_params(processes=2, number_sample_per_shard=25)
    get_context, logger_popen = img2dataset.distributor.get_context, LoggerProcess._Popen
    with ImageServer(world) as server:
        copy_urls(world, [name], tmp_path / "urls", server.url_prefix)
        url_list = read_url_list(url_file(tmp_path / "urls", name), name)
        folders = {how: tmp_path / how / "test_frames" for how in ("spawned", "forked")}
        for folder in folders.values():
            folder.mkdir(parents=True)
            prepare_input(url_list, folder, params)
        run_img2dataset(folders["spawned"] / "_urls.parquet", folders["spawned"], len(url_list.urls), params)
        with orphan_guard() as token:
            workers = WorkerServer()
            try:
                run_img2dataset(folders["forked"] / "_urls.parquet", folders["forked"], len(url_list.urls), params,
                                workers=workers)
                pid = workers.pid
                # the server runs with the guard's token: so do the processes it forks
                assert f"LPR_DOWNLOAD_RUN={token}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
            finally:
                workers.stop()
    # the logger and both pool workers came from the server, which is gone with its processes
    assert workers.launched >= 3 and workers.pid is None
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    assert img2dataset.distributor.get_context is get_context and LoggerProcess._Popen is logger_popen
    spawned, forked = _shard_rows(folders["spawned"]), _shard_rows(folders["forked"])
    assert len(forked) == len(url_list.urls) and all(r["status"] == "success" for r in forked)
    assert forked == spawned
    for r in forked:
        rel = f"{r['key'][:5]}/{r['key']}.jpg"
        assert (folders["forked"] / rel).read_bytes() == (folders["spawned"] / rel).read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_worker_server_stop_kills_what_outlives_its_timeout():
    from lpr_core.data.download_workers import WorkerServer, _get_context, forked_workers

    workers = WorkerServer(preload=("lpr_core.data.download_workers",))
    try:
        with forked_workers(workers):
            stuck = _get_context().Process(target=time.sleep, args=(120,), daemon=True)
            stuck.start()
        assert _server_children(workers.pid) == [stuck.pid]  # forked by the server
        with pytest.raises(RuntimeError, match="outside forked_workers"):
            _get_context().Process(target=time.sleep, args=(1,)).start()
        t0 = time.monotonic()
        workers.stop(timeout=0.5)
        assert time.monotonic() - t0 < 5 and workers.pid is None
        stuck.join(5)
        assert stuck.exitcode is not None
        deadline = time.monotonic() + 2
        while Path(f"/proc/{stuck.pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # a killed orphan is reaped by init
        assert not Path(f"/proc/{stuck.pid}").exists()
    finally:
        workers.stop(timeout=0)


# ------------------------------------------------------------------ on a cluster (documented)

SPARK_SECTION = "## Downloading the full release on Spark"
SPARK_CRD = REPO / "components" / "schemas" / "sparkoperator.k8s.io_sparkapplications.yaml"


def _doc_yaml_blocks() -> list[str]:
    text = (REPO / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    section = text[text.index(SPARK_SECTION):]
    return [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]


def _spark_application() -> dict:
    (block,) = [b for b in _doc_yaml_blocks() if "kind: SparkApplication" in b]
    return yaml.safe_load(block)


def _strict(schema):
    """The schema refusing unknown fields, as ``kubectl apply --validate=strict`` does (a CRD's
    schema lists the known ones; the API server would prune the others silently)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _spark_application_schema() -> dict:
    (crd,) = [d for d in yaml.safe_load_all(SPARK_CRD.read_text()) if d]
    assert crd["spec"]["names"]["kind"] == "SparkApplication"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta2"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: the API server's own schema
    return schema


def test_documented_spark_application_is_valid_and_runs_the_stage():
    import jsonschema
    import pyspark

    from lpr_core.runner import parse_args
    from lpr_core.stages.download import STAGE, add_arguments

    app = _spark_application()
    schema = _spark_application_schema()
    jsonschema.validate(app, schema)
    spec = app["spec"]
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2" and spec["type"] == "Python"
    assert spec["sparkVersion"] == pyspark.__version__  # the driver's pyspark is the lock's
    # the application file is the stage's module, at its place in the image (/opt/lpr)
    main_file = spec["mainApplicationFile"].removeprefix("local://")
    assert (REPO / Path(main_file).relative_to("/opt/lpr")).is_file()
    assert main_file.endswith("lpr_core/stages/download.py")
    args = parse_args(STAGE, None, add_arguments, spec["arguments"])  # the stage's own command line
    # the output folder is on the volume that the driver and every executor mount at the same path
    mounts = {m["mountPath"]: m["name"] for m in spec["driver"]["volumeMounts"]}
    executor_mounts = {m["mountPath"]: m["name"] for m in spec["executor"]["volumeMounts"]}
    assert mounts[str(args.out)] == executor_mounts[str(args.out)]
    claim = next(v for v in spec["volumes"] if v["name"] == mounts[str(args.out)])["persistentVolumeClaim"]
    assert not claim.get("readOnly")
    assert str(args.urls) in mounts and str(args.params).startswith("/opt/lpr/")
    # the schema is strict enough to catch a mistake in it
    bad = copy.deepcopy(app)
    bad["spec"]["executor"]["instances"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = copy.deepcopy(app)
    bad["spec"]["mode"] = "driver-in-pod"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = copy.deepcopy(app)
    bad["spec"]["executors"] = bad["spec"].pop("executor")  # a misspelt field is not dropped silently
    with pytest.raises(jsonschema.ValidationError, match="executors"):
        jsonschema.validate(bad, schema)


def test_documented_driver_environment_is_a_valid_container_env():
    import kubernetes_validate

    from lpr_core.data.download_spark import resolve_master

    (block,) = [b for b in _doc_yaml_blocks() if b.startswith("env:")]
    env = yaml.safe_load(block)["env"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lpr-download"},
           "spec": {"containers": [{"name": "stage", "image": "lpr-spark:dev", "env": env}]}}
    kubernetes_validate.validate(pod, "1.32.0", strict=True)
    values = {e["name"]: e.get("value") for e in env}
    assert values["PYSPARK_SUBMIT_ARGS"].endswith(" pyspark-shell")
    assert "spark.driver.host=$(POD_IP)" in values["PYSPARK_SUBMIT_ARGS"]
    assert [e["name"] for e in env].index("POD_IP") < [e["name"] for e in env].index("PYSPARK_SUBMIT_ARGS")
    assert resolve_master(values, 2) == ("spark://spark-master.lpr:7077", "MASTER")
