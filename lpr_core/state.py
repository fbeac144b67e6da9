"""Resumable state of the stages, outside DVC's outputs: where a killed stage's successor resumes.

``dvc repro`` deletes a stage's outputs before it runs the stage, and a retried Kubernetes pod
starts in a fresh workspace: neither may hold the work a killed run leaves behind (a training
checkpoint, the finished shards of a download). That work lives here instead, in one folder per
stage run identity::

    <root>/<stage>/<key>/         the state folder of one (stage, inputs, result-bearing params)
    <root>/<stage>/latest.json    the identity of the stage's last run (to say why a run starts fresh)

``key`` (:func:`state_key`) hashes the identity a stage gives: its name, a fingerprint of its
inputs (:func:`fingerprint`) and its result-bearing params (:func:`lpr_core.runtime_params.result_bearing`;
training adds the world size). A change to any of them is another folder, so a stale checkpoint is
never resumed, two experiments with different params never share one, and a change of a runtime
setting (``num_workers``, ``device``...) keeps the same folder.

The root, in order of precedence:

1. the ``root`` argument of :func:`open_state` (configuration passed in by a caller);
2. ``LPR_STATE_URL``: an fsspec URL (``s3://bucket/lpr-state``; the credentials and endpoint come
   from the usual ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL``
   variables, the same secret DVC's S3 remote reads) or a local path (a shared volume);
3. ``.lpr/state`` under the working directory (the project, where ``dvc repro`` runs; git-ignored).

With a local root a stage works in its state folder directly. With an object store it works in a
local copy (``.lpr/work/<stage>/<key>`` under the working directory) and uploads what it needs to
resume; every upload is one object written whole (S3 ``PUT``: readers see the old object or the new
one, never a part), and files are written locally through :mod:`lpr_core.io` first, so a state file
is never torn on either side. A retried pod in a new workspace with the same ``LPR_STATE_URL`` and
the same inputs and params computes the same key and finds the folder its predecessor left.

Inputs are fingerprinted cheaply enough for LPR4M: a stage hashes the small files that describe its
data (the URL lists for ``download``; the prepared Parquet tables and the download manifests, which
carry each image's sha256, for training), never the images themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from lpr_core import io

__all__ = [
    "STATE_ENV",
    "DEFAULT_ROOT",
    "WORK_ROOT",
    "LATEST_FILE",
    "state_root",
    "is_remote",
    "file_sha256",
    "fingerprint",
    "local_files",
    "state_key",
    "StageState",
    "open_state",
]

#: The environment variable naming the state root (fsspec URL or local path).
STATE_ENV = "LPR_STATE_URL"
#: The default root, relative to the working directory.
DEFAULT_ROOT = Path(".lpr") / "state"
#: Where a stage works locally when the root is an object store, relative to the working directory.
WORK_ROOT = Path(".lpr") / "work"
#: ``<root>/<stage>/latest.json``: the identity of the stage's last run.
LATEST_FILE = "latest.json"
#: Object stores whose single-object writes are atomic (a reader never sees a partial object).
_ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})
_CHUNK = 4 << 20


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def is_remote(url: str) -> bool:
    """True when ``url`` is not a local path (``file://`` URLs and plain paths are local)."""
    return _protocol(url) not in ("file", "local")


def state_root(root: str | os.PathLike | None = None) -> str:
    """The state root: ``root``, else ``$LPR_STATE_URL``, else ``<cwd>/.lpr/state``.

    A local root is returned as an absolute path; a URL without its trailing slash.
    """
    value = str(root) if root else os.environ.get(STATE_ENV, "").strip() or str(Path.cwd() / DEFAULT_ROOT)
    if not is_remote(value):
        if value.startswith("file://"):
            value = value[len("file://"):]
        return str(Path(value).expanduser().resolve())
    return value.rstrip("/")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(inputs: Mapping[str, str | Path] | Iterable[str | Path]) -> dict[str, str]:
    """The SHA-256 of each input file: ``{name: sha256}``.

    Args:
        inputs: ``{name: path}`` or paths (named by their file name). A directory stands for the
            files under it (named ``<dir name>/<relative path>``): pass small ones only (a folder of
            Parquet tables), never a folder of images.

    Raises:
        FileNotFoundError: an input does not exist (named).
        ValueError: two inputs get the same name.
    """
    if isinstance(inputs, Mapping):
        named = dict(inputs)
    else:
        paths = [Path(p) for p in inputs]
        named = {p.name: p for p in paths}
        if len(named) != len(paths):
            raise ValueError(f"inputs with the same file name: {sorted(map(str, paths))}")
    out: dict[str, str] = {}
    for name, path in named.items():
        path = Path(path)
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                out[f"{name}/{f.relative_to(path).as_posix()}"] = file_sha256(f)
        elif path.is_file():
            out[str(name)] = file_sha256(path)
        else:
            raise FileNotFoundError(f"input {path} not found")
    return dict(sorted(out.items()))


def local_files(candidates: Mapping[str, str | os.PathLike | None]) -> dict[str, Path]:
    """The candidates that name an existing local file (e.g. a ``weights:`` setting that may also be
    ``none`` or the tag of a cache): their content is an input, not only their name."""
    return {name: Path(value) for name, value in candidates.items()
            if value and str(value) != "none" and Path(value).is_file()}


def state_key(identity: Mapping[str, Any]) -> str:
    """A short hash of an identity mapping (canonical JSON): the name of its state folder."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _fs(url: str):
    return fsspec.core.url_to_fs(url)


@dataclass(frozen=True)
class StageState:
    """The state folder of one stage run identity, and its local working copy.

    Paths given to the methods are relative to the folder, ``/``-separated. With a local root
    :attr:`url` and :attr:`local` are the same folder and uploads and downloads do nothing.

    Attributes:
        stage: the stage's name.
        key: the identity's hash (:func:`state_key`).
        root: the state root (:func:`state_root`).
        local: the folder the stage reads and writes.
    """

    stage: str
    key: str
    root: str
    local: Path

    @property
    def url(self) -> str:
        """The state folder in the store: ``<root>/<stage>/<key>``."""
        return f"{self.root}/{self.stage}/{self.key}"

    @property
    def remote(self) -> bool:
        """True when the store is not the local folder (an object store)."""
        return is_remote(self.root)

    def _remote(self, rel: str = "") -> tuple[Any, str]:
        fs, path = _fs(self.url)
        return fs, f"{path}/{rel}".rstrip("/") if rel else path

    # -- reading the store

    def exists(self, rel: str) -> bool:
        """Whether the store holds the file ``rel``."""
        if not self.remote:
            return (self.local / rel).is_file()
        fs, path = self._remote(rel)
        fs.invalidate_cache(path)
        return fs.isfile(path)

    def read_bytes(self, rel: str) -> bytes | None:
        """The bytes of ``rel`` in the store (None when absent)."""
        if not self.remote:
            try:
                return (self.local / rel).read_bytes()
            except FileNotFoundError:
                return None
        fs, path = self._remote(rel)
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            return None

    def read_json(self, rel: str) -> Any | None:
        """``rel`` parsed as JSON (None when absent or unreadable)."""
        data = self.read_bytes(rel)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    def list(self, prefix: str = "") -> list[str]:
        """The files under ``prefix`` in the store, relative to the folder, sorted."""
        if not self.remote:
            base = self.local / prefix if prefix else self.local
            if not base.is_dir():
                return []
            return sorted(p.relative_to(self.local).as_posix() for p in base.rglob("*") if p.is_file())
        fs, root = self._remote()
        path = f"{root}/{prefix}".rstrip("/") if prefix else root
        fs.invalidate_cache(root)
        try:
            found = fs.find(path)
        except FileNotFoundError:
            return []
        return sorted(f[len(root) + 1:] for f in found if f.startswith(root + "/"))

    # -- writing

    def upload(self, rel: str) -> None:
        """Copy the local file ``rel`` to the store as one whole object (no-op with a local root)."""
        if not self.remote:
            return
        src = self.local / rel
        fs, path = self._remote(rel)
        if _protocol(self.root) in _ATOMIC_PUT:
            fs.put_file(str(src), path)
        else:  # a file system where a partial file could be seen: a temporary name, then a move
            tmp = f"{path.rsplit('/', 1)[0]}/.{rel.rsplit('/', 1)[-1]}.tmp-{uuid.uuid4().hex[:8]}"
            fs.put_file(str(src), tmp)
            fs.mv(tmp, path)

    def upload_many(self, rels: Iterable[str]) -> None:
        """:meth:`upload` the local files ``rels``, concurrently where the store allows (each file
        is still one whole object). Upload a completion marker afterwards, with :meth:`upload`."""
        rels = list(rels)
        if not self.remote or not rels:
            return
        if _protocol(self.root) not in _ATOMIC_PUT:
            for rel in rels:
                self.upload(rel)
            return
        fs, base = self._remote()
        fs.put([str(self.local / r) for r in rels], [f"{base}/{r}" for r in rels])

    def download_many(self, rels: Iterable[str]) -> None:
        """Copy the files ``rels`` from the store into the local folder, concurrently. A file cut
        short by a kill may be left: download a completion marker afterwards, with :meth:`download`,
        so that only a whole set is ever marked complete."""
        rels = list(rels)
        if not self.remote or not rels:
            return
        fs, base = self._remote()
        for r in rels:
            (self.local / r).parent.mkdir(parents=True, exist_ok=True)
        fs.get([f"{base}/{r}" for r in rels], [str(self.local / r) for r in rels])

    def download(self, rel: str) -> bool:
        """Copy ``rel`` from the store over the local file (atomically); False when absent."""
        if not self.remote:
            return (self.local / rel).is_file()
        data = self.read_bytes(rel)
        if data is None:
            return False
        io.atomic_write_bytes(self.local / rel, data, fsync=False)
        return True

    def write_json(self, rel: str, obj: Any) -> None:
        """Write ``obj`` as JSON locally (atomically) and to the store."""
        io.atomic_write_json(self.local / rel, obj)
        self.upload(rel)

    def remove(self, rel: str) -> None:
        """Remove the file ``rel`` locally and from the store (absent is fine)."""
        (self.local / rel).unlink(missing_ok=True)
        if self.remote:
            fs, path = self._remote(rel)
            try:
                fs.rm_file(path)
            except FileNotFoundError:
                pass

    def clear(self) -> None:
        """Remove the state folder from the store and the local working copy."""
        if self.remote:
            fs, path = self._remote()
            fs.invalidate_cache(path)
            try:
                fs.rm(path, recursive=True)
            except FileNotFoundError:
                pass
        shutil.rmtree(self.local, ignore_errors=True)

    # -- the stage's last identity

    def _latest(self) -> tuple[Any, str] | Path:
        if self.remote:
            fs, path = _fs(f"{self.root}/{self.stage}/{LATEST_FILE}")
            return fs, path
        return Path(self.root) / self.stage / LATEST_FILE

    def read_latest(self) -> Any | None:
        """The stage's ``latest.json`` (written by the stage's last run, whatever its key)."""
        where = self._latest()
        try:
            if isinstance(where, Path):
                return json.loads(where.read_text(encoding="utf-8"))
            fs, path = where
            fs.invalidate_cache(path)
            return json.loads(fs.cat_file(path))
        except (FileNotFoundError, ValueError):
            return None

    def write_latest(self, obj: Any) -> None:
        """Record ``obj`` (this run's identity) as the stage's ``latest.json``."""
        where = self._latest()
        if isinstance(where, Path):
            io.atomic_write_json(where, obj)
            return
        fs, path = where
        fs.pipe_file(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def open_state(stage: str, identity: Mapping[str, Any], root: str | os.PathLike | None = None,
               work_root: str | os.PathLike | None = None) -> StageState:
    """The state folder of ``stage`` for ``identity`` (nothing is created or read).

    Args:
        stage: the stage's name (a folder name: letters, digits, ``_`` and ``-``).
        identity: what the state belongs to (inputs, result-bearing params...): hashed into the key.
        root: the state root; None: ``$LPR_STATE_URL``, else ``.lpr/state`` (see :func:`state_root`).
        work_root: where the local working copy goes with an object-store root (default
            ``.lpr/work`` under the working directory).
    """
    if not stage or not all(c.isalnum() or c in "_-" for c in stage):
        raise ValueError(f"stage name {stage!r} is not a plain folder name")
    root_url = state_root(root)
    key = state_key({"stage": stage, **identity})
    if is_remote(root_url):
        base = Path(work_root).resolve() if work_root else Path.cwd() / WORK_ROOT
        local = base / stage / key
    else:
        local = Path(root_url) / stage / key
    return StageState(stage, key, root_url, local)
