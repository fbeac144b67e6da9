"""Download LPR4M URL lists with img2dataset, retry failed samples, write the manifests.

For each of the four URL lists (``FILE_PATTERNS`` / ``URL_LISTS``: train/test x frames/images)
found in the URL directory, :func:`download_all`:

1. reads and validates the list (every line a well-formed LPR4M URL, else an error naming file
   and line; duplicate URLs are dropped and counted) and writes it as ``_urls.parquet`` into the
   list's own img2dataset folder ``<out>/<split>_<kind>/``;
2. runs img2dataset once on it through its Python API (``img2dataset.download``), in
   ``incremental`` mode with ``resize_mode="keep_ratio"``: a rerun skips complete shards, and
   when every shard is complete img2dataset is not started at all. With the ``multiprocessing``
   distributor its worker and logger processes fork from one server per run that has imported
   img2dataset once (:mod:`lpr_core.data.download_workers`), instead of each spawned process
   importing it again (4-5 CPU seconds each, three per list);
3. reads the shards' Parquet files, maps every row back to its LPR id through the ``url`` column
   and checks each stored JPEG (:func:`lpr_core.data.manifest.verify_stored`);
4. retries every URL that failed, per sample (img2dataset only retries whole shards): a small
   threaded urllib client with ``retry_pass.attempts`` and exponential ``retry_pass.backoff``,
   a strict decode, then img2dataset's own ``Resizer`` with the same settings, so a recovered
   sample is resized and encoded exactly as img2dataset would have; it is written, temp then
   rename, to ``<out>/<split>_<kind>/retried/<id>.jpg``. A URL the fetch guard refused is not
   retried while its refusal stands under the current settings;
5. writes ``<out>/manifests/<split>_<kind>.parquet`` (temp then rename) listing every input URL
   once, and ``<out>/download_summary.json``.

Safety: every fetch, img2dataset's (in its worker processes, whatever the distributor) and the
retry pass's, goes through :mod:`lpr_core.data.fetch_guard`: destinations outside the public
internet are refused unless ``allow_private_networks`` allows them (checked for every resolved
address and again after each redirect), a response is capped at ``max_response_bytes`` and one
fetch at ``max_fetch_seconds``. Refused URLs are failed rows with their own reasons
(``refused_private_address``, ``too_large``, ``too_slow``), counted apart in the summary.

Restartable: every file this module writes is written to a temporary name and renamed; shards
come from img2dataset's incremental mode. If the stage process is killed (even ``SIGKILL``), a
small guard process kills the img2dataset worker processes (and their server, and a Spark
session's JVM and workers) it left behind, so a rerun never races with orphans writing the same
shard. The output directory is locked against a second concurrent run.

Scale: ``distributor: multiprocessing`` runs img2dataset's workers on this machine. For many
machines, ``pyspark`` runs each shard as a Spark task on the run's SparkSession
(:mod:`lpr_core.data.download_spark`: the caller's active session, else one on the master the
environment names, else ``local[processes]``); failed shards are retried by img2dataset. ``ray``
runs shards as Ray tasks (``ray.init`` / ``RAY_ADDRESS`` first; img2dataset ignores failed shards
there, the retry pass then fetches their URLs one by one). Either way every worker must see the
output directory at the same path, because the manifest is built from the shard files; see
``docs/kubernetes.md`` for a cluster.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from lpr_core.config import to_mapping
from lpr_core.data.download_spark import DownloadSpark
from lpr_core.data.download_workers import WorkerServer, forked_workers
from lpr_core.data.fetch_guard import (
    Disallowed,
    FetchPolicy,
    FetchRefused,
    guarded_distributors,
    guarded_get,
    refusal_stands,
)
from lpr_core.data.manifest import (
    REFUSAL_REASONS,
    Outcome,
    build_manifest,
    check_jpeg,
    classify_error,
    complete_shards,
    count_outcomes,
    error_reason,
    format_error,
    read_shards,
    url_to_id,
    verify_stored,
    write_table_atomic,
)
from lpr_core.formats.discovery import DiscoveryError, find_lpr4m_files
from lpr_core.formats.readers import read_kind
from lpr_core.formats.schema import FILE_PATTERNS, URL_LISTS
from lpr_core.formats.writers import atomic_write_text

if TYPE_CHECKING:
    from lpr_core.data.download_spark import DownloadSpark
    from lpr_core.data.download_workers import WorkerServer

__all__ = [
    "DownloadError",
    "RetryPassParams",
    "DownloadParams",
    "UrlList",
    "USER_AGENT",
    "find_url_lists",
    "read_url_list",
    "prepare_input",
    "img2dataset_kwargs",
    "run_img2dataset",
    "fetch",
    "make_resizer",
    "process_image",
    "retry_pass",
    "download_list",
    "download_all",
    "format_summary",
    "orphan_guard",
]

#: Where the messages go unless a caller passes its own ``log`` (the process's logging set-up decides).
logger = logging.getLogger(__name__)

#: The User-Agent img2dataset sends (the retry pass sends the same).
USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
#: img2dataset's shard-name width (``oom_shard_count``).
SHARD_DIGITS = 5
INPUT_FILE = "_urls.parquet"
RETRIED_DIR = "retried"
JOURNAL_FILE = "_journal.parquet"
MANIFEST_DIR = "manifests"
SUMMARY_FILE = "download_summary.json"
_FINGERPRINT_KEY = b"lpr_download_fingerprint"
_GUARD_ENV = "LPR_DOWNLOAD_RUN"
_SCHEMES = ("http://", "https://")


class DownloadError(RuntimeError):
    """A download that cannot proceed (the message says which file or directory and why)."""


@dataclass(frozen=True)
class RetryPassParams:
    """The per-sample retry pass after img2dataset.

    Attributes:
        attempts: fetches per failed URL (0 disables the pass).
        backoff: seconds before the second attempt, doubled before each later one.
    """

    attempts: int = 3
    backoff: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError(f"retry_pass.attempts must be >= 0, got {self.attempts}")
        if self.backoff < 0:
            raise ValueError(f"retry_pass.backoff must be >= 0, got {self.backoff}")


#: Field metadata of a ``download`` setting that decides only which fetch attempts succeed (a
#: timeout, a retry, the fetch guard), not what a stored sample is: result-bearing for DVC, but
#: the download's resumable state is not keyed by it (:mod:`lpr_core.data.download_state`).
ATTEMPT = {"attempt": True}


@dataclass(frozen=True)
class DownloadParams:
    """The ``download`` section of ``params.yaml``.

    Attributes:
        image_size: the smaller side after resizing (img2dataset ``image_size``).
        resize_mode: only ``keep_ratio``: the boxes are mapped with its scale factors.
        resize_only_if_bigger: keep images whose smaller side is already <= ``image_size``.
        output_format: ``files`` (one JPEG per sample) or ``webdataset`` (tar shards).
        processes: img2dataset worker processes.
        thread_count: download threads per process (and of the retry pass).
        timeout: seconds before a request gives up (img2dataset and the retry pass).
        retries: img2dataset's own immediate retries of a failed URL.
        number_sample_per_shard: URLs per img2dataset shard (the unit of restart).
        distributor: ``multiprocessing`` (one machine), ``pyspark`` or ``ray`` (many machines).
        encode_quality: JPEG quality of the stored samples.
        disallowed_header_directives: X-Robots-Tag directives that make img2dataset skip an
            image; empty so that server or CDN headers do not drop LPR4M samples.
        allow_private_networks: destinations outside the public internet (loopback, private,
            link-local...) that fetches may reach: ``False`` none (real data), ``True`` all (the
            demo's loopback server), or a list of networks (``["127.0.0.0/8"]``). Checked on
            every connection, redirects included (:mod:`lpr_core.data.fetch_guard`). No default:
            the section says it (the demo's ``true`` is no default for real data).
        max_response_bytes: a larger response is refused (reason ``too_large``).
        max_fetch_seconds: one fetch (connects, redirects, every read) taking longer is cut off
            (reason ``too_slow``); at least ``timeout``.
        retry_pass: the per-sample retry pass.
        verify_stored: check every stored JPEG (SOI/EOI markers, size) before trusting it.
    """

    image_size: int = 128
    resize_mode: Literal["keep_ratio"] = "keep_ratio"
    resize_only_if_bigger: bool = True
    output_format: Literal["files", "webdataset"] = "files"
    processes: int = field(default=2, metadata={"runtime": True})
    thread_count: int = field(default=16, metadata={"runtime": True})
    timeout: float = field(default=10.0, metadata=ATTEMPT)
    retries: int = field(default=0, metadata=ATTEMPT)
    number_sample_per_shard: int = 1000
    distributor: Literal["multiprocessing", "pyspark", "ray"] = field(default="multiprocessing", metadata={"runtime": True})
    encode_quality: int = 95
    disallowed_header_directives: tuple[str, ...] = ()
    allow_private_networks: bool | tuple[str, ...] = field(kw_only=True, metadata=ATTEMPT)  # no default: say it
    max_response_bytes: int = field(default=16 << 20, metadata=ATTEMPT)
    max_fetch_seconds: float = field(default=60.0, metadata=ATTEMPT)
    retry_pass: RetryPassParams = field(default_factory=RetryPassParams, metadata=ATTEMPT)
    verify_stored: bool = True

    def __post_init__(self) -> None:
        for name in ("image_size", "processes", "thread_count", "number_sample_per_shard"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if not 0 <= self.encode_quality <= 100:
            raise ValueError(f"encode_quality must be in [0, 100], got {self.encode_quality}")
        if self.max_fetch_seconds < self.timeout:
            raise ValueError(f"max_fetch_seconds ({self.max_fetch_seconds:g}) must be >= timeout ({self.timeout:g}): "
                             "one fetch may wait a whole timeout")
        self.fetch_policy  # noqa: B018 - checks the guard's settings (a bad network is a ValueError)

    @functools.cached_property
    def fetch_policy(self) -> FetchPolicy:
        """The fetch guard's settings."""
        return FetchPolicy(self.allow_private_networks, self.max_response_bytes, self.max_fetch_seconds)


# ----------------------------------------------------------------------------------- URL lists


@dataclass(frozen=True)
class UrlList:
    """One validated LPR4M URL list.

    Attributes:
        name: the ``URL_LISTS`` key, e.g. ``train_frame_urls``.
        split: ``train`` or ``test``; kind: ``frames`` or ``images``.
        path: the list file.
        urls: unique URLs in file order.
        duplicates: repeated lines dropped.
    """

    name: str
    split: str
    kind: str
    path: Path
    urls: tuple[str, ...]
    duplicates: int = 0

    @property
    def folder_name(self) -> str:
        """``<split>_<kind>``: the img2dataset folder and the manifest's name."""
        return f"{self.split}_{self.kind}"


def find_url_lists(urls_dir: str | Path) -> dict[str, Path | None]:
    """The file of each of the four URL lists under ``urls_dir`` (None when absent).

    The files are found as every stage finds them (:func:`lpr_core.formats.discovery.find_lpr4m_files`:
    sub-folders searched, two candidates for one list refused).

    Raises:
        DownloadError: when ``urls_dir`` is not a directory or holds two candidates for one list.
    """
    urls_dir = Path(urls_dir)
    if not urls_dir.is_dir():
        raise DownloadError(f"--urls {urls_dir}: not a directory")
    try:
        files = find_lpr4m_files(urls_dir)
    except DiscoveryError as exc:
        raise DownloadError(str(exc)) from None
    return {name: files[name][0] if name in files else None for name in URL_LISTS}


def read_url_list(path: str | Path, name: str) -> UrlList:
    """Read and validate one URL list (one URL per line; blank lines ignored).

    Args:
        path: the list file.
        name: its ``URL_LISTS`` key.

    Returns:
        The :class:`UrlList`, duplicates dropped.

    Raises:
        lpr_core.formats.report.FormatError: at the first line that is not a valid LPR4M URL of
            that kind, naming the file and line.
        DownloadError: at the first URL that is not http(s), naming the file and line.
    """
    split, kind = URL_LISTS[name]
    table = read_kind(name, path, strict=True).table
    urls = table.column("url").to_pylist()
    if not all(u.startswith(_SCHEMES) for u in urls):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip() and not line.strip().startswith(_SCHEMES):
                    raise DownloadError(f"{path}:{lineno}: not an http(s) URL: {line.strip()[:200]!r}")
    unique = tuple(dict.fromkeys(urls))
    return UrlList(name, split, kind, Path(path), unique, len(urls) - len(unique))


# ------------------------------------------------------------------------------- img2dataset


def _fingerprint(url_list: UrlList, params: DownloadParams) -> dict[str, Any]:
    digest = hashlib.sha256("\n".join(url_list.urls).encode()).hexdigest()
    shaping = {k: getattr(params, k) for k in ("image_size", "resize_mode", "resize_only_if_bigger",
                                                "encode_quality", "output_format", "number_sample_per_shard")}
    return {"source": url_list.path.name, "urls": len(url_list.urls), "urls_sha256": digest, "img2dataset": shaping}


def prepare_input(url_list: UrlList, folder: str | Path, params: DownloadParams) -> Path:
    """Write the validated URL list as img2dataset's input, ``<folder>/_urls.parquet``.

    The file records a fingerprint of the URLs and of the settings that shape the shards; a
    rerun with the same list and settings keeps it (so incremental mode finds the same shards).

    Raises:
        DownloadError: when ``folder`` holds shards made from another list or other settings.
    """
    folder = Path(folder)
    path = folder / INPUT_FILE
    fp = _fingerprint(url_list, params)
    if path.exists():
        try:
            meta = pq.read_schema(path).metadata or {}
            old = json.loads(meta.get(_FINGERPRINT_KEY, b"null"))
        except (OSError, ValueError, pa.ArrowException):
            old = None
        if old == fp:
            return path
        if complete_shards(folder):
            raise DownloadError(
                f"{folder} holds shards of a different URL list or settings (was {old}, now {fp}); "
                f"remove {folder} to download {url_list.path.name} again"
            )
    schema = pa.schema([("url", pa.string())], metadata={_FINGERPRINT_KEY: json.dumps(fp).encode()})
    write_table_atomic(pa.table({"url": list(url_list.urls)}, schema=schema), path)
    return path


def img2dataset_kwargs(input_path: str | Path, folder: str | Path, params: DownloadParams) -> dict[str, Any]:
    """The arguments of ``img2dataset.download`` (also its command-line flags) for one list."""
    return {
        "url_list": str(input_path),
        "input_format": "parquet",
        "url_col": "url",
        "output_folder": str(folder),
        "output_format": params.output_format,
        "image_size": params.image_size,
        "resize_mode": params.resize_mode,
        "resize_only_if_bigger": params.resize_only_if_bigger,
        "encode_format": "jpg",
        "encode_quality": params.encode_quality,
        "processes_count": params.processes,
        "thread_count": params.thread_count,
        "timeout": params.timeout,
        "retries": params.retries,
        "number_sample_per_shard": params.number_sample_per_shard,
        "oom_shard_count": SHARD_DIGITS,
        "distributor": params.distributor,
        "incremental_mode": "incremental",
        "compute_hash": "sha256",
        "extract_exif": False,
        "enable_wandb": False,
        # an empty list turns the X-Robots-Tag check off (None would mean img2dataset's defaults)
        "disallowed_header_directives": list(params.disallowed_header_directives),
    }


def _check_distributor(name: str) -> None:
    # without ray installed, img2dataset's ray distributor silently downloads nothing
    module = {"pyspark": "pyspark", "ray": "ray"}.get(name)
    if module is None:
        return
    try:
        __import__(module)
    except ImportError:
        raise DownloadError(f"distributor {name!r} needs the {module} package installed") from None


def run_img2dataset(input_path: str | Path, folder: str | Path, n_urls: int, params: DownloadParams,
                    log: Callable[[str], None] = logger.info, workers: WorkerServer | None = None,
                    spark: DownloadSpark | None = None) -> float:
    """Run img2dataset on one list unless all its shards are complete.

    Every fetch of img2dataset's workers goes through the fetch guard
    (:func:`lpr_core.data.fetch_guard.guarded_distributors`, ``params.fetch_policy``). Must run
    in the main thread (img2dataset installs a SIGINT handler; it is restored after).

    Args:
        workers: start img2dataset's logger process and, with the ``multiprocessing``
            distributor, its pool workers from this server (:mod:`lpr_core.data.download_workers`:
            img2dataset is imported once per server, not once per process); None: img2dataset
            spawns them.
        spark: with the ``pyspark`` distributor, the run's session
            (:class:`lpr_core.data.download_spark.DownloadSpark`); None: one made and stopped
            for this call.

    Returns:
        img2dataset's wall time in seconds (0 when skipped).

    Raises:
        KeyboardInterrupt: when img2dataset was interrupted (it would otherwise exit with 0).
        DownloadError: when the distributor's package or Spark session is unavailable.
    """
    folder = Path(folder)
    expected = math.ceil(n_urls / params.number_sample_per_shard)
    done = {shard for shard, _ in complete_shards(folder)}
    if n_urls == 0 or all(i in done for i in range(expected)):
        log(f"{folder.name}: all {expected} shard(s) complete, img2dataset not needed")
        return 0.0
    _check_distributor(params.distributor)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no update check (no network)
    forked = workers is not None and params.distributor in ("multiprocessing", "pyspark")
    if forked:
        workers.start()  # type: ignore[union-attr]  # the server imports img2dataset meanwhile
    import img2dataset


    folder.mkdir(parents=True, exist_ok=True)
    log(f"{folder.name}: img2dataset on {n_urls} URLs ({expected - len(done & set(range(expected)))} "
        f"of {expected} shard(s) to do)")
    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.getsignal(signal.SIGINT) if main_thread else None
    t0 = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            if params.distributor == "pyspark":
                from lpr_core.data.download_spark import DownloadSpark, SparkSessionError

                if spark is None:
                    spark = DownloadSpark(params.processes, log=log)
                    stack.callback(spark.stop)
                try:
                    spark.get()  # img2dataset's distributor runs on the active session
                except SparkSessionError as exc:
                    raise DownloadError(f"{folder.name}: {exc}") from None
            if forked:
                stack.enter_context(forked_workers(workers))  # type: ignore[arg-type]
            stack.enter_context(guarded_distributors(params.fetch_policy))
            img2dataset.download(**img2dataset_kwargs(input_path, folder, params))
    except SystemExit:
        # img2dataset's SIGINT handler calls sys.exit(0): an interrupt must not look like success
        raise KeyboardInterrupt("img2dataset was interrupted") from None
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, old_handler)
    return time.perf_counter() - t0


# -------------------------------------------------------------------------------- retry pass


def fetch(url: str, timeout: float, disallowed: tuple[str, ...] = (),
          policy: FetchPolicy = FetchPolicy()) -> tuple[bytes | None, str | None]:
    """GET one URL like img2dataset does (same User-Agent and X-Robots-Tag rule), through the guard.

    Args:
        url: the URL.
        timeout: seconds any one socket operation may wait.
        disallowed: X-Robots-Tag directives that refuse the image.
        policy: the fetch guard's settings (:attr:`DownloadParams.fetch_policy`); the default
            refuses every non-public destination.

    Returns:
        ``(body, None)`` or ``(None, "<reason>: <message>")``; a refusal's reason is one of
        :data:`~lpr_core.data.manifest.REFUSAL_REASONS`.
    """
    if not url.startswith(_SCHEMES):
        return None, format_error(f"unsupported URL scheme in {url!r}", "other")
    if disallowed:
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # importing img2dataset imports it
    try:
        return guarded_get(url, policy, timeout, USER_AGENT, {d.strip().lower() for d in disallowed} or None), None
    except FetchRefused as exc:
        return None, format_error(str(exc), exc.reason)
    except Disallowed as exc:
        return None, format_error(str(exc))
    except urllib.error.HTTPError as exc:
        return None, format_error(f"HTTP Error {exc.code}: {exc.reason}", f"http_{exc.code}")
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, none may escape a worker
        message = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            return None, format_error(message, "timeout")
        if "IncompleteRead" in type(exc).__name__:
            return None, format_error(f"IncompleteRead: {message}", "incomplete")
        return None, format_error(message)


def make_resizer(params: DownloadParams):
    """img2dataset's ``Resizer`` with the same settings ``img2dataset.download`` builds it with."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset.resizer import Resizer

    return Resizer(
        image_size=params.image_size,
        resize_mode=params.resize_mode,
        resize_only_if_bigger=params.resize_only_if_bigger,
        encode_quality=params.encode_quality,
        encode_format="jpg",
    )


# img2dataset's Resizer silences C-level output by swapping file descriptors 1 and 2 with dup2:
# two threads inside it at once can leave stdout redirected for good. One at a time.
_RESIZE_LOCK = threading.Lock()
_OBJECT_AT = re.compile(r" at 0x[0-9a-fA-F]+>")


def process_image(data: bytes, resizer) -> tuple[bytes, int, int, int, int] | str:
    """Strictly decode a fetched image, then resize and encode it with img2dataset's resizer.

    Args:
        data: the bytes the server sent.
        resizer: from :func:`make_resizer`.

    Returns:
        ``(jpeg, width, height, original_width, original_height)`` or an error string
        ``"<reason>: <message>"`` (a truncated or corrupt body is a ``decode`` error).
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a full decode: a truncated JPEG raises here
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
        # without the object's address ("<_io.BytesIO object at 0x...>"): manifests must not vary
        return format_error(f"{type(exc).__name__}: {_OBJECT_AT.sub('>', str(exc))}", "decode")
    with _RESIZE_LOCK:
        img, width, height, original_width, original_height, err = resizer(io.BytesIO(data))
    if err is not None or img is None:
        reason = classify_error(err)
        return format_error(err or "resize failed", reason if reason != "other" else "decode")
    why = check_jpeg(img, width, height)
    if why is not None:
        return format_error(f"re-encoded JPEG is invalid: {why}", "decode")
    return img, int(width), int(height), int(original_width), int(original_height)


def _retryable(error: str | None) -> bool:
    reason = error_reason(error)
    if reason.startswith("http_"):
        code = int(reason[5:]) if reason[5:].isdigit() else 0
        return code >= 500 or code in (408, 425, 429)
    return reason not in ("disallowed", "filtered", *REFUSAL_REASONS)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _recover(url: str, item_id: str, folder: Path, rel: str, params: DownloadParams, resizer) -> Outcome:
    rp = params.retry_pass
    error = "other: not attempted"
    for attempt in range(1, rp.attempts + 1):
        if attempt > 1:
            time.sleep(rp.backoff * 2 ** (attempt - 2))
        data, error = fetch(url, params.timeout, params.disallowed_header_directives, params.fetch_policy)
        if data is not None:
            result = process_image(data, resizer)
            if isinstance(result, str):
                error = result
            else:
                img, width, height, ow, oh = result
                _write_atomic(folder / RETRIED_DIR / f"{item_id}.jpg", img)
                return Outcome(url, "success", f"{rel}/{RETRIED_DIR}/{item_id}.jpg", None, width, height, ow, oh,
                               None, hashlib.sha256(data).hexdigest(), "retry")
        if not _retryable(error):
            break
    return Outcome(url, "failed", error=error, source="retry")


_JOURNAL_COLUMNS = ("url", "status", "path", "width", "height", "original_width", "original_height", "error",
                    "sha256")


def _read_journal(path: Path, out_root: Path) -> dict[str, Outcome]:
    if not path.exists():
        return {}
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception:  # noqa: BLE001 - a bad journal only costs a refetch
        return {}
    kept = {}
    for r in rows:
        if r.get("status") != "success" or not r.get("path"):
            continue
        try:
            data = (out_root / r["path"]).read_bytes()
        except OSError:
            continue
        if check_jpeg(data, r["width"], r["height"]) is None:
            kept[r["url"]] = Outcome(r["url"], "success", r["path"], None, r["width"], r["height"],
                                     r["original_width"], r["original_height"], None, r["sha256"], "retry")
    return kept


def _write_journal(path: Path, outcomes: dict[str, Outcome]) -> None:
    schema = pa.schema([("url", pa.string()), ("status", pa.string()), ("path", pa.string()),
                        ("width", pa.int32()), ("height", pa.int32()), ("original_width", pa.int32()),
                        ("original_height", pa.int32()), ("error", pa.string()), ("sha256", pa.string())])
    rows = [{c: getattr(o, c) for c in _JOURNAL_COLUMNS} for o in outcomes.values()]
    write_table_atomic(pa.Table.from_pylist(rows, schema=schema), path)


def retry_pass(
    failed: list[tuple[str, str]],
    folder: str | Path,
    out_root: str | Path,
    params: DownloadParams,
    progress: bool = False,
) -> dict[str, Outcome]:
    """Re-fetch failed URLs one by one and store the recovered samples.

    Samples recovered by an earlier, interrupted run (listed in ``retried/_journal.parquet`` and
    still intact) are kept without a new request.

    Args:
        failed: ``(url, id)`` pairs; ids are validated LPR ids (they become file names).
        folder: the list's img2dataset folder; recovered samples go to ``<folder>/retried/``.
        out_root: the download output directory (manifest paths are relative to it).
        params: the download parameters.
        progress: show a progress bar.

    Returns:
        ``{url: Outcome}`` with ``source="retry"`` for every URL of ``failed``.
    """
    folder, out_root = Path(folder), Path(out_root)
    rel = os.path.relpath(folder, out_root).replace(os.sep, "/")
    journal = folder / RETRIED_DIR / JOURNAL_FILE
    (folder / RETRIED_DIR).mkdir(parents=True, exist_ok=True)
    previous = _read_journal(journal, out_root)
    results = {url: previous[url] for url, _ in failed if url in previous}
    todo = [(url, item_id) for url, item_id in failed if url not in results]
    if todo:
        resizer = make_resizer(params)
        with ThreadPoolExecutor(max(1, min(params.thread_count, len(todo)))) as pool, \
                tqdm(total=len(todo), desc=f"retry {folder.name}", unit="url", disable=not progress,
                     leave=False) as bar:
            futures = [pool.submit(_recover, url, item_id, folder, rel, params, resizer) for url, item_id in todo]
            for fut in futures:
                o = fut.result()
                results[o.url] = o
                bar.update()
    _write_journal(journal, results)
    return results


# ------------------------------------------------------------------------------ orchestration


def download_list(url_list: UrlList, out_root: str | Path, params: DownloadParams, *, progress: bool = True,
                  log: Callable[[str], None] = logger.info, workers: WorkerServer | None = None,
                  spark: DownloadSpark | None = None) -> dict[str, Any]:
    """Download one URL list, retry its failures and write its manifest.

    ``workers``, ``spark``: see :func:`run_img2dataset`.

    Returns:
        The list's summary: counts (total, success, recovered_by_retry, failed, failed_by_reason,
        and of the failed, refused and refused_by_reason: the fetches the guard refused), timings
        and the manifest path relative to ``out_root``.
    """
    out_root = Path(out_root)
    folder = out_root / url_list.folder_name
    folder.mkdir(parents=True, exist_ok=True)
    input_path = prepare_input(url_list, folder, params)
    i2d_seconds = run_img2dataset(input_path, folder, len(url_list.urls), params, log, workers, spark)

    t0 = time.perf_counter()
    expected = dict.fromkeys(url_list.urls)
    outcomes = read_shards(folder, out_root, url_list.kind, params.output_format, expected)
    corrupt = {}
    if params.verify_stored:
        corrupt = verify_stored(out_root, outcomes.values(), params.thread_count, progress)
        for url, error in corrupt.items():
            outcomes[url] = Outcome(url, "failed", error=error, source="img2dataset")
    failed = [u for u in url_list.urls if not (u in outcomes and outcomes[u].ok)]
    # a URL the guard refused is not asked again while its refusal stands under these settings
    refused = {u for u in failed if u in outcomes and refusal_stands(outcomes[u].error, params.fetch_policy)}
    if refused:
        log(f"{url_list.folder_name}: {len(refused)} URL(s) refused by the fetch guard, not retried")
    todo = [(u, url_to_id(url_list.kind, u)) for u in failed if u not in refused]
    retried_count = 0
    if todo and params.retry_pass.attempts > 0:
        log(f"{url_list.folder_name}: retrying {len(todo)} failed URL(s) one by one")
        outcomes.update(retry_pass(todo, folder, out_root, params, progress))
        retried_count = len(todo)
    table = build_manifest(url_list.kind, url_list.urls, outcomes)
    manifest = write_table_atomic(table, out_root / MANIFEST_DIR / f"{url_list.folder_name}.parquet")
    post_seconds = time.perf_counter() - t0
    counts = count_outcomes(url_list.urls, outcomes)
    refused_by_reason = {r: n for r, n in counts["failed_by_reason"].items() if r in REFUSAL_REASONS}  # type: ignore[attr-defined]
    summary: dict[str, Any] = {
        "split": url_list.split,
        "kind": url_list.kind,
        "source": url_list.path.name,
        "manifest": manifest.relative_to(out_root).as_posix(),
        **counts,
        "refused": sum(refused_by_reason.values()),
        "refused_by_reason": refused_by_reason,
        "duplicates_dropped": url_list.duplicates,
        "stored_corrupt": len(corrupt),
        "retried": retried_count,
        "img2dataset_seconds": round(i2d_seconds, 3),
        "post_seconds": round(post_seconds, 3),
    }
    return summary


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(f"{out_dir} is in use by another download run") from None
        yield
    finally:
        os.close(fd)


# Runs in its own session, reading a pipe from the stage process. "done" on the pipe: the stage
# finished normally. End of file without it: the stage died (SIGKILL included) and every process
# whose environment carries this run's token (img2dataset's workers, its logger) is killed.
_GUARD_CODE = r"""
import os, signal, sys
token = sys.argv[1]
if sys.stdin.buffer.read().startswith(b"done"):
    sys.exit(0)
needle = ("%s=" % sys.argv[2]).encode() + token.encode() + b"\0"
me = os.getpid()
try:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
except OSError:
    sys.exit(0)
for pid in pids:
    if pid == me:
        continue
    try:
        with open("/proc/%d/environ" % pid, "rb") as fh:
            env = b"\0" + fh.read()
        if b"\0" + needle in env:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


@contextlib.contextmanager
def orphan_guard() -> Iterator[str]:
    """Make sure no img2dataset worker outlives this process, even when it is SIGKILLed.

    Spawned processes inherit an environment token; a guard process in its own session waits on
    a pipe from this process and, if this process dies without saying ``done``, kills every
    process carrying the token (Linux ``/proc``; elsewhere the guard does nothing).

    Yields:
        The run's token.
    """
    token = secrets.token_hex(12)
    guard = subprocess.Popen(
        [sys.executable, "-S", "-E", "-c", _GUARD_CODE, token, _GUARD_ENV],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
    )
    old = os.environ.get(_GUARD_ENV)
    os.environ[_GUARD_ENV] = token
    try:
        yield token
    finally:
        if old is None:
            os.environ.pop(_GUARD_ENV, None)
        else:
            os.environ[_GUARD_ENV] = old
        try:
            guard.stdin.write(b"done")  # type: ignore[union-attr]
            guard.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            guard.wait(timeout=10)
        except subprocess.TimeoutExpired:
            guard.kill()
            guard.wait()


def download_all(urls_dir: str | Path, out_dir: str | Path, params: DownloadParams, *, progress: bool = True,
                 log: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Download every URL list of ``urls_dir`` into ``out_dir`` (see the module docstring).

    Every list is read and validated before anything is downloaded; a missing list is skipped
    with a message. Must run in the main thread.

    Args:
        urls_dir: the directory holding the LPR4M URL files.
        out_dir: the output directory (created; locked while the run lasts).
        params: the ``download`` parameters.
        progress: show progress bars.
        log: where messages go.

    Returns:
        The summary also written to ``<out_dir>/download_summary.json``.

    Raises:
        DownloadError: when no URL list is found, or an output folder belongs to another list.
        lpr_core.formats.report.FormatError: on a malformed URL list (file and line named).
        lpr_core.data.manifest.ManifestError: on a shard that cannot be mapped back to LPR ids.
    """
    t0 = time.perf_counter()
    urls_dir, out_dir = Path(urls_dir), Path(out_dir)
    found = find_url_lists(urls_dir)
    if not any(found.values()):
        patterns = ", ".join(FILE_PATTERNS[n] for n in URL_LISTS)
        raise DownloadError(f"--urls {urls_dir}: no URL list found (looked for {patterns})")
    lists: dict[str, UrlList] = {}
    summary: dict[str, Any] = {"params": to_mapping(params), "lists": {}}
    for name, path in found.items():
        if path is None:
            log(f"{name}: no {FILE_PATTERNS[name]} in {urls_dir}, skipped")
            summary["lists"][name] = {"skipped": f"no {FILE_PATTERNS[name]} file"}
            continue
        lists[name] = read_url_list(path, name)
        if lists[name].duplicates:
            log(f"{name}: {lists[name].duplicates} duplicate URL(s) in {path.name} dropped")
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir), orphan_guard():
        # img2dataset's processes of every list fork from one server started (lazily) in this
        # guard: they carry its token, and img2dataset is imported once, not thrice per list.
        # With pyspark, one session (started lazily, in the guard too) serves every list.
        workers = WorkerServer()
        spark = DownloadSpark(params.processes, progress=progress, log=log)
        try:
            for name, url_list in lists.items():
                summary["lists"][name] = download_list(url_list, out_dir, params, progress=progress, log=log,
                                                       workers=workers, spark=spark)
        finally:
            spark.stop()
            workers.stop()
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    atomic_write_text(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A readable table of a :func:`download_all` summary."""
    lines = [f"{'list':<18} {'total':>8} {'success':>8} {'recovered':>9} {'failed':>7} {'refused':>7}  "
             "failed by reason"]
    for name, s in summary["lists"].items():
        if "skipped" in s:
            lines.append(f"{name:<18} skipped: {s['skipped']}")
            continue
        reasons = ", ".join(f"{k} {v}" for k, v in s["failed_by_reason"].items()) or "-"
        lines.append(f"{name:<18} {s['total']:>8} {s['success']:>8} {s['recovered_by_retry']:>9} "
                     f"{s['failed']:>7} {s.get('refused', 0):>7}  {reasons}")
    if "seconds" in summary:
        lines.append(f"done in {summary['seconds']:.1f} s")
    return "\n".join(lines)
