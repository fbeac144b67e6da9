"""``download`` restarts the way users and pods run it, and shares its run like every other stage.

On copies of the session's tiny project, served by an image server of their own whose every image
answers slowly the first time (small shards, one thread: the run takes long enough to kill):

1. ``dvc repro download`` is SIGKILLed (``dvc`` and the stage) once two shards are complete in the
   stage's state folder; ``dvc repro download`` again fetches only what was missing (requests counted
   at the server) and ends with the manifests of an uninterrupted run in another workspace;
2. ``download`` is not ``persist``-ed, so DVC records it in the run cache: after ``dvc push
   --run-cache``, a fresh ``git clone`` (no ``dvc.lock``, an empty state root: a new pod) restores it
   with ``dvc repro --pull download`` without running it and without a single request.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from lpr_core.data.manifest import complete_shards
from lpr_core.formats.schema import URL_LISTS
from tests.pipeline.project import Outcome, TinyProject, fresh_copy, session

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MANIFESTS = [f"{split}_{kind}.parquet" for split, kind in URL_LISTS.values()]
SHARD = 10


def urls_of(project: TinyProject) -> list[str]:
    return [u for p in sorted((project.root / "data/lpr4m").glob("*_url_*.txt")) for u in p.read_text().split()]


def manifests(project: TinyProject) -> dict:
    return {name: pq.read_table(project.root / "data/download/manifests" / name) for name in MANIFESTS}


def item_id(url: str) -> str:
    return url.rsplit("/", 1)[1][:-4]


@dataclass
class Story:
    origin: TinyProject
    server: object
    state: Path
    shards_before_kill: dict[str, set[int]]
    urls_before_kill: set[str]
    counts_at_kill: dict[str, int]
    resumed: Outcome
    counts_after_resume: dict[str, int]
    reference: TinyProject


def _prepare(tmp_path_factory, request, name: str, prefix: str) -> TinyProject:
    from lpr_core.demo import point_world_at

    project = fresh_copy(tmp_path_factory, request, name, reproduced_state=False)
    point_world_at(project.root, project.root / "data/lpr4m", prefix)
    project.set_param("download.number_sample_per_shard", SHARD)  # result-bearing: committed below
    project.set_param("download.thread_count", 1)  # runtime: one image at a time
    project.git("commit", "-q", "-am", "download in small shards")
    return project


@pytest.fixture(scope="module")
def story(tmp_path_factory, request) -> Story:
    from lpr_core.synth import FaultKind, ImageServer

    mp = pytest.MonkeyPatch()
    request.addfinalizer(mp.undo)
    # the session template's world (only read), served by a server of our own: every image slow once
    world = session(tmp_path_factory, request).template.root / "data/lpr4m"
    server = ImageServer(world, fault_rate=1.0, seed=0, slow_seconds=0.25, kinds=(FaultKind.SLOW,)).start()
    request.addfinalizer(server.stop)

    origin = _prepare(tmp_path_factory, request, "download-origin", server.url_prefix)
    state = origin.root.parent / "state"
    mp.setenv("LPR_STATE_URL", str(state))
    log = origin.root.parent / "killed.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "download"], cwd=origin.root,
                                env=origin.env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)

    def shards() -> dict[str, set[int]]:
        return {folder.name: {s for s, _ in complete_shards(folder)}
                for folder in state.glob("download/*/work/*") if folder.is_dir()}

    deadline = time.monotonic() + 600
    while sum(map(len, shards().values())) < 2:
        assert proc.poll() is None, "dvc repro ended before it could be killed:\n" + log.read_text()[-4000:]
        assert time.monotonic() < deadline, log.read_text()[-4000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # the orphan guard stops img2dataset's workers
    before = shards()
    done_urls = set()
    for folder in state.glob("download/*/work/*"):
        for _, parquet in complete_shards(folder):
            done_urls |= set(pq.read_table(parquet).column("url").to_pylist())
    counts_at_kill = server.request_counts()
    assert not (origin.root / "data/download").exists()

    # the retried run may use more threads: a runtime setting, the same state folder
    origin.set_param("download.thread_count", 8)
    resumed = origin.dvc("repro", "download")
    counts_after = server.request_counts()

    reference = _prepare(tmp_path_factory, request, "download-reference", server.url_prefix)
    mp.setenv("LPR_STATE_URL", str(reference.root.parent / "state"))
    reference.dvc("repro", "download")
    return Story(origin, server, state, before, done_urls, counts_at_kill, resumed, counts_after, reference)


def test_a_killed_dvc_repro_download_resumes_where_it_stopped(story):
    total = urls_of(story.origin)
    asked = {i for i, n in story.counts_after_resume.items() if n > story.counts_at_kill.get(i, 0)}
    print(f"\nkilled with {sum(map(len, story.shards_before_kill.values()))} shard(s) complete "
          f"({len(story.urls_before_kill)} of {len(total)} URLs); the rerun fetched {len(asked)} URLs")
    assert story.resumed.ran == ["download"]
    assert 2 * SHARD <= len(story.urls_before_kill) < len(total)
    # the rerun asked only for what the killed run had not finished
    assert asked and not asked & {item_id(u) for u in story.urls_before_kill}
    assert len(asked) < len(total)
    assert asked | {item_id(u) for u in story.urls_before_kill} >= {item_id(u) for u in total} - set(
        story.counts_at_kill)


def test_the_resumed_download_has_the_manifests_of_an_uninterrupted_one(story):
    resumed, reference = manifests(story.origin), manifests(story.reference)
    for name in MANIFESTS:
        assert resumed[name].num_rows > 0
        assert resumed[name].equals(reference[name]), name
    # every URL once, all downloaded (slow answers only)
    rows = [r for t in resumed.values() for r in t.to_pylist()]
    assert sorted(r["url"] for r in rows) == sorted(urls_of(story.origin))
    assert {r["status"] for r in rows} == {"success"}


def test_download_is_in_the_run_cache_and_a_fresh_clone_restores_it_without_running(story, tmp_path, monkeypatch):
    outs = yaml.safe_load((story.origin.root / "dvc.yaml").read_text())["stages"]["download"]["outs"]
    assert outs == ["data/download"]  # no persist (DVC never records a persisted stage in its run cache)
    story.origin.dvc("push", "--run-cache")
    clone = story.origin.clone(tmp_path / "pod", story.server.url_prefix)
    assert not (clone.root / "dvc.lock").exists() and not (clone.root / "data/download").exists()
    monkeypatch.setenv("LPR_STATE_URL", str(tmp_path / "empty-state"))
    before = story.server.request_counts()
    repro = clone.dvc("repro", "--pull", "download")
    print(f"\ndvc repro --pull download in a fresh clone: {repro.seconds:.1f} s")
    assert repro.ran == [] and repro.restored == ["download"], repro.output[-3000:]
    assert story.server.request_counts() == before  # not one image fetched again
    assert not (tmp_path / "empty-state").exists()
    restored, origin = manifests(clone), manifests(story.origin)
    for name in MANIFESTS:
        assert restored[name].equals(origin[name]), name
    assert "up to date" in clone.dvc("status", "download").output
