"""The download stage's resumable state: where img2dataset works, and how the result is published.

``download`` is an ordinary DVC stage (no ``persist: true``): ``dvc repro`` deletes ``data/download``
before it runs the stage, and records the finished run in its run cache like every other stage, so a
downstream pod in a fresh checkout restores it (``dvc repro --pull``) instead of downloading again.
The partial work of an interrupted run therefore lives in the stage's state folder
(:mod:`lpr_core.state`), keyed by its inputs (the sha256 of the four URL lists) and its
result-bearing params (``processes``, ``thread_count`` and ``distributor`` are runtime settings)::

    <LPR_STATE_URL or .lpr/state>/download/<key>/run_params.json   the identity of the run
    <LPR_STATE_URL or .lpr/state>/download/<key>/work/             what --out will hold

:func:`download_resumable` runs :func:`lpr_core.data.download.download_all` on ``work/`` (img2dataset's
incremental mode skips complete shards; the retry pass keeps the samples its journal lists), then
publishes ``work/`` as ``--out`` in one step (:func:`lpr_core.io.publish_dir`): every file is a hard
link to the state's copy (a copy where the two are on different file systems), so publishing 25 TB
costs no second 25 TB, and nothing in it is ever rewritten in place (every writer renames a new
file over the old). The state is kept after success: a rerun for another reason (a changed
annotation file, changed code) finds every shard complete and only rebuilds the manifests. Remove
``<root>/download/<key>`` to reclaim its space.

With an object store as the root (``LPR_STATE_URL=s3://...``), img2dataset works in a local copy
(``.lpr/work/download/<key>/work``) and :class:`ShardUploader` uploads, while it runs and at the end:

- every complete shard: its ``NNNNN.parquet``, its images (``NNNNN/`` or ``NNNNN.tar``), then its
  ``NNNNN_stats.json`` last, the marker img2dataset itself writes last: a shard in the store is
  complete exactly when its marker is there;
- the retry pass's recovered samples (``retried/<id>.jpg``), then its journal
  (``retried/_journal.parquet``) last.

A pod that starts on the same key first downloads every complete shard and the journal's samples
(markers last, so a shard cut short by a kill is never taken for complete), then continues. What
resumes across pods: complete shards and the recovered samples of a finished retry pass. What does
not: a shard in progress when the pod died (img2dataset downloads it again, whole), the samples of an
unfinished retry pass (fetched again), the manifests and the summary (rebuilt from the shards, in
seconds). Shards are uploaded within ``interval`` seconds of completing, so a kill loses at most the
shards in progress and those that completed in the last interval.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lpr_core import io
from lpr_core.data.download import DownloadParams, download_all, find_url_lists
from lpr_core.runtime_params import result_bearing
from lpr_core.state import StageState, fingerprint, open_state

__all__ = ["STAGE", "WORK_DIR", "ATTEMPT_SETTINGS", "download_identity", "ShardUploader", "restore_shards", "link_tree",
           "download_resumable"]

#: Where the messages go unless a caller passes its own ``log`` (the process's logging set-up decides).
logger = logging.getLogger(__name__)

STAGE = "download"
#: The folder of the state that becomes ``--out``.
WORK_DIR = "work"
STAMP_FILE = "run_params.json"
#: ``<list>/<shard>.parquet|.tar|_stats.json`` or ``<list>/<shard>/<file>`` (relative to ``work/``)
_SHARD_FILE = re.compile(r"^(?P<list>[^/]+)/(?P<shard>\d+)(?P<rest>\.parquet|\.tar|_stats\.json|/.+)$")
_RETRIED_FILE = re.compile(r"^(?P<list>[^/]+)/retried/(?P<name>[^/]+)$")
_JOURNAL = "_journal.parquet"


#: The ``download`` settings marked :data:`lpr_core.data.download.ATTEMPT`: they decide only which
#: fetch attempts succeed, not what a stored sample is, so the state is not keyed by them. A run with
#: new values keeps every sample already stored and gives each failed one (a timeout, a refusal of the
#: fetch guard) to the retry pass under the new values: loosening the guard or raising the timeout
#: fetches what it refused, without downloading the rest again. (Tightening them does not re-vet
#: stored samples: remove the state folder for that.)
ATTEMPT_SETTINGS = tuple(f.name for f in dataclasses.fields(DownloadParams) if f.metadata.get("attempt"))


def download_identity(urls_dir: str | Path, params: Any) -> dict[str, Any]:
    """What the download's state folder is keyed by: the sha256 of each URL list found in
    ``urls_dir`` and the result-bearing ``download`` params that shape a stored sample (all but
    :data:`ATTEMPT_SETTINGS`)."""
    lists = {name: path for name, path in find_url_lists(urls_dir).items() if path is not None}
    shaping = {k: v for k, v in result_bearing(params).items() if k not in ATTEMPT_SETTINGS}
    return {"inputs": fingerprint(lists), "params": shaping}


def _marker(folder: str, shard: str) -> str:
    return f"{WORK_DIR}/{folder}/{shard}_stats.json"


def _complete_in(files: list[str]) -> tuple[dict[tuple[str, str], list[str]], dict[str, list[str]]]:
    """Group state-relative paths into complete shards ``{(list, shard): data files}`` (those whose
    marker is present) and retried samples ``{list: files}`` (lists whose journal is present)."""
    shards: dict[tuple[str, str], list[str]] = {}
    markers: set[tuple[str, str]] = set()
    retried: dict[str, list[str]] = {}
    journals: set[str] = set()
    prefix = f"{WORK_DIR}/"
    for rel in files:
        if not rel.startswith(prefix):
            continue
        inner = rel[len(prefix):]
        m = _RETRIED_FILE.match(inner)
        if m:
            if m.group("name") == _JOURNAL:
                journals.add(m.group("list"))
            elif not m.group("name").startswith("."):
                retried.setdefault(m.group("list"), []).append(rel)
            continue
        m = _SHARD_FILE.match(inner)
        if not m or os.path.basename(inner).startswith("."):
            continue
        key = (m.group("list"), m.group("shard"))
        if m.group("rest") == "_stats.json":
            markers.add(key)
        else:
            shards.setdefault(key, []).append(rel)
    complete = {key: sorted(shards.get(key, [])) for key in markers}
    return complete, {name: sorted(files) for name, files in retried.items() if name in journals}


def _local_files(state: StageState) -> list[str]:
    work = state.local / WORK_DIR
    if not work.is_dir():
        return []
    return sorted(p.relative_to(state.local).as_posix() for p in work.rglob("*") if p.is_file())


class ShardUploader:
    """Upload the complete shards and recovered samples of the local ``work/`` to an object store,
    every ``interval`` seconds in a background thread and once more at :meth:`close`.

    Args:
        state: the download's state folder (nothing happens unless it is in an object store).
        interval: seconds between scans.
        log: where a failed background upload is reported (the final one raises).
    """

    def __init__(self, state: StageState, interval: float = 2.0, log: Callable[[str], None] = logger.info) -> None:
        self.state, self.interval, self.log = state, interval, log
        self.uploaded: set[str] = set()
        self._journals: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.shards = 0

    def seed(self, rels: list[str]) -> None:
        """Files the store already holds (not uploaded again)."""
        self.uploaded |= set(rels)

    def sync(self) -> int:
        """Upload what completed since the last call; returns the number of shards uploaded."""
        if not self.state.remote:
            return 0
        with self._lock:
            complete, retried = _complete_in(_local_files(self.state))
            done = 0
            for (folder, shard), files in sorted(complete.items()):
                marker = _marker(folder, shard)
                if marker in self.uploaded:
                    continue
                self.state.upload_many([f for f in files if f not in self.uploaded])
                self.state.upload(marker)  # last: the shard is complete in the store from now on
                self.uploaded |= {*files, marker}
                done += 1
            for folder, files in sorted(retried.items()):
                journal = f"{WORK_DIR}/{folder}/retried/{_JOURNAL}"
                stamp = (self.state.local / journal).stat().st_mtime_ns
                if self._journals.get(journal) == stamp:
                    continue
                self.state.upload_many([f for f in files if f not in self.uploaded])
                self.state.upload(journal)
                self.uploaded |= set(files)
                self._journals[journal] = stamp
            self.shards += done
            return done

    def _loop(self) -> None:
        failed = False
        while not self._stop.wait(self.interval):
            try:
                self.sync()
                failed = False
            except Exception as exc:  # noqa: BLE001 - retried at the next scan; the final sync raises
                if not failed:
                    self.log(f"uploading shards to {self.state.url} failed, will retry: {exc}")
                failed = True

    def __enter__(self) -> ShardUploader:
        if self.state.remote:
            self._thread = threading.Thread(target=self._loop, name="lpr-shard-upload", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the background scans and upload what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sync()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self._stop.set()  # a failed run: upload what completed, but let the run's error through
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.sync()
        except Exception as upload_error:  # noqa: BLE001
            self.log(f"could not upload the complete shards to {self.state.url}: {upload_error}")


def restore_shards(state: StageState, log: Callable[[str], None] = logger.info) -> list[str]:
    """Bring the store's complete shards and recovered samples into the local ``work/`` (object
    store roots only): data files first, each marker last.

    Returns:
        The store's files (to :meth:`ShardUploader.seed`).
    """
    if not state.remote:
        return []
    stored = state.list(WORK_DIR)
    complete, retried = _complete_in(stored)
    local_complete, local_retried = _complete_in(_local_files(state))
    fetched = 0
    for (folder, shard), files in sorted(complete.items()):
        if (folder, shard) in local_complete:
            continue
        state.download_many(files)
        state.download(_marker(folder, shard))
        fetched += 1
    for folder, files in sorted(retried.items()):
        state.download_many([f for f in files if not (state.local / f).is_file()])
        state.download(f"{WORK_DIR}/{folder}/retried/{_JOURNAL}")
    if complete:
        log(f"{len(complete)} complete shard(s) in {state.url} ({fetched} fetched, "
            f"{len(complete) - fetched} already here)")
    return stored


def link_tree(src: str | Path, dst: str | Path) -> int:
    """Make ``dst`` (new) hold the files of ``src``, hard-linked (copied where linking fails).

    Returns:
        The number of files copied instead of linked.
    """
    src, dst = Path(src), Path(dst)
    copied = 0
    for dirpath, _dirs, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            a, b = Path(dirpath) / name, dst / rel / name
            try:
                os.link(a, b)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(a, b)
                copied += 1
    return copied


def download_resumable(urls_dir: str | Path, out_dir: str | Path, params: Any, *, progress: bool = True,
                       log: Callable[[str], None] = logger.info, root: str | None = None,
                       upload_interval: float = 2.0) -> dict[str, Any]:
    """Download into the stage's state folder, then publish it as ``out_dir`` (see the module docstring).

    Args:
        urls_dir: the directory holding the LPR4M URL files.
        out_dir: the stage's output directory (replaced whole, at the end).
        params: the ``download`` parameters.
        progress: show progress bars.
        log: where messages go.
        root: the state root (default ``$LPR_STATE_URL``, else ``.lpr/state``).
        upload_interval: seconds between uploads of complete shards to an object store.

    Returns:
        The summary :func:`lpr_core.data.download.download_all` returns (also in ``<out_dir>``).
    """
    identity = download_identity(urls_dir, params)
    state = open_state(STAGE, identity, root)
    work = state.local / WORK_DIR
    stamp = {"stage": STAGE, **identity}
    if state.read_json(STAMP_FILE) != stamp:
        state.write_json(STAMP_FILE, stamp)
    state.write_latest({**stamp, "key": state.key})
    log(f"working in {state.url}")
    stored = restore_shards(state, log)
    with ShardUploader(state, upload_interval, log) as uploader:
        uploader.seed(stored)
        summary = download_all(urls_dir, work, params, progress=progress, log=log)
    if state.remote and uploader.shards:
        log(f"{uploader.shards} shard(s) uploaded to {state.url}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    io.clean_leftovers(out_dir)
    tmp = io.tmp_sibling(out_dir)
    try:
        copied = link_tree(work, tmp)
        # the files are img2dataset's own (linked, not rewritten): their bytes are as durable as it
        # left them, and fsyncing hundreds of millions of them here would cost hours
        io.publish_dir(tmp, out_dir, fsync=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    io.fsync_dir(out_dir.parent)
    if copied:
        log(f"{copied} file(s) copied into {out_dir} (the state is on another file system)")
    return summary
