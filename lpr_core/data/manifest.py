"""Download manifests: one Parquet table per URL list, built from img2dataset's shards.

img2dataset writes, per shard ``NNNNN``, a ``NNNNN.parquet`` with one row per input URL (its
``key`` is the shard + index, not an LPR id), the samples (``NNNNN/<key>.jpg`` in ``files``
format, members ``<key>.jpg`` of ``NNNNN.tar`` in ``webdataset`` format) and, last,
``NNNNN_stats.json``. Only shards with their stats file are complete and read here.

The manifest maps every input URL back to its LPR id through the ``url`` column
(:func:`lpr_core.ids.parse_frame_url` / :func:`~lpr_core.ids.parse_image_url`), and lists it
exactly once, with :data:`~lpr_core.formats.schema.FRAME_MANIFEST_SCHEMA` or
:data:`~lpr_core.formats.schema.IMAGE_MANIFEST_SCHEMA`:

- ``path`` is relative to the download output directory; ``tar_member`` is set only for a sample
  inside a webdataset tar (a sample recovered by the retry pass is a plain file,
  ``<split>_<kind>/retried/<id>.jpg``, in both formats).
- ``status`` is ``success`` or ``failed``; ``error`` of a failed row reads ``<reason>: <detail>``,
  ``reason`` one of :data:`REASONS` (``http_404``, ``timeout``, ``decode``...). A fetch the
  download's guard refused is never a success; its reason is one of :data:`REFUSAL_REASONS`.
- ``sha256`` is img2dataset's: the hash of the bytes as the server sent them (before resizing).
- ``width`` / ``height`` are the stored JPEG's, ``original_*`` the source's (for box mapping,
  see :mod:`lpr_core.data.boxes`).

Integrity: img2dataset decodes every image with OpenCV, which refuses truncated and garbage
bodies (they come back as failed shard rows and go to the retry pass). What it stored is then
checked here (:func:`verify_stored`): the file or tar member exists, starts with SOI, ends with
EOI and its frame header holds the recorded size. A stored sample that fails the check is marked
failed (reason ``corrupt_output``) and retried, never reported as a success.
"""

from __future__ import annotations

import os
import re
import tarfile
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from lpr_core import ids
from lpr_core.formats.schema import FRAME_MANIFEST_SCHEMA, IMAGE_MANIFEST_SCHEMA

__all__ = [
    "ManifestError",
    "Outcome",
    "REASONS",
    "REFUSAL_REASONS",
    "SHARD_COLUMNS",
    "classify_error",
    "format_error",
    "error_reason",
    "complete_shards",
    "read_shards",
    "url_to_id",
    "jpeg_size",
    "check_jpeg",
    "verify_stored",
    "build_manifest",
    "manifest_schema",
    "write_table_atomic",
    "read_manifest",
    "count_outcomes",
]

#: img2dataset's shard columns the manifest needs.
SHARD_COLUMNS = (
    "url",
    "key",
    "status",
    "error_message",
    "width",
    "height",
    "original_width",
    "original_height",
    "sha256",
)
#: Reasons of a failed row (the part of ``error`` before the first colon).
REASONS = (
    "http_<status>",
    "timeout",
    "connection",
    "incomplete",
    "decode",
    "disallowed",
    "filtered",
    "corrupt_output",
    "missing",
    "refused_private_address",
    "too_large",
    "too_slow",
    "other",
)
#: Reasons of a fetch the download's guard refused (:mod:`lpr_core.data.fetch_guard`): a
#: destination in a private, loopback or link-local range, a response over the size cap, a fetch
#: over the time cap. Counted apart from ordinary failures and not retried while they stand.
REFUSAL_REASONS = ("refused_private_address", "too_large", "too_slow")
_SHARD_RE = re.compile(r"^(\d+)\.parquet$")
_HTTP_RE = re.compile(r"HTTP Error (\d{3})")


class ManifestError(ValueError):
    """Shards or outcomes that cannot be turned into a manifest (the message names the file)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one URL.

    Attributes:
        url: the input URL.
        status: ``"success"`` or ``"failed"``.
        path: the stored JPEG (or tar) relative to the output directory; None when failed.
        tar_member: the JPEG's name inside the tar (webdataset), else None.
        width, height: stored size; original_width, original_height: source size.
        error: ``"<reason>: <detail>"`` for a failed URL.
        sha256: hash of the bytes the server sent.
        source: ``"img2dataset"``, ``"retry"`` (recovered or last failed by the retry pass) or
            ``"none"`` (never attempted).
    """

    url: str
    status: str
    path: str | None = None
    tar_member: str | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    error: str | None = None
    sha256: str | None = None
    source: str = "img2dataset"

    @property
    def ok(self) -> bool:
        return self.status == "success"


# ------------------------------------------------------------------------------------- errors


def classify_error(message: str | None) -> str:
    """The reason class of a download error message (img2dataset's or the retry pass's).

    Args:
        message: an error message, e.g. ``"HTTP Error 404: Not Found"`` or ``"timed out"``.

    Returns:
        ``http_<status>``, ``timeout``, ``connection``, ``incomplete``, ``decode``,
        ``disallowed``, ``filtered``, one of :data:`REFUSAL_REASONS` (the guard's messages start
        with their reason) or ``other``.
    """
    text = (message or "").strip()
    low = text.lower()
    refusal = low.split(":", 1)[0]
    if refusal in REFUSAL_REASONS and ":" in low:
        return refusal
    m = _HTTP_RE.search(text)
    if m:
        return f"http_{m.group(1)}"
    if "timed out" in low or "timeout" in low:
        return "timeout"
    if "incompleteread" in low or "incomplete read" in low:
        return "incomplete"
    if "x-robots-tag" in low:
        return "disallowed"
    if any(s in low for s in ("image too small", "aspect ratio too large", "image area too large")):
        return "filtered"
    if any(s in low for s in ("decod", "cannot identify image", "truncated", "not a jpeg", "broken data")):
        return "decode"
    if any(s in low for s in ("connection", "refused", "reset by peer", "remote end closed", "urlopen error",
                              "name or service", "network is unreachable", "badstatusline")):
        return "connection"
    return "other"


def format_error(message: str | None, reason: str | None = None) -> str:
    """``"<reason>: <message>"`` with the reason classified from the message when not given.

    A message that already starts with its reason (the fetch guard's) is not prefixed twice.
    """
    text = " ".join((message or "unknown error").split())
    reason = reason or classify_error(text)
    if reason in REFUSAL_REASONS and text.startswith(f"{reason}: "):
        return text
    return f"{reason}: {text}"


def error_reason(error: str | None) -> str:
    """The reason part of a manifest ``error`` (``"other"`` when there is none)."""
    if not error:
        return "other"
    return error.split(":", 1)[0].strip() or "other"


# ------------------------------------------------------------------------------------- shards


def complete_shards(folder: str | Path) -> list[tuple[int, Path]]:
    """The complete shards of an img2dataset output folder: ``(shard_id, parquet path)``, sorted.

    A shard is complete when both ``NNNNN.parquet`` and ``NNNNN_stats.json`` exist (img2dataset
    writes the stats file last).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for entry in os.scandir(folder):
        m = _SHARD_RE.match(entry.name)
        if m and (folder / f"{m.group(1)}_stats.json").is_file():
            out.append((int(m.group(1)), Path(entry.path)))
    return sorted(out)


def _parser(kind: str) -> Callable[[str], str]:
    if kind == "frames":
        return lambda url: str(ids.parse_frame_url(url)[1])
    if kind == "images":
        return lambda url: ids.parse_image_url(url)[1]
    raise ValueError(f"kind must be 'frames' or 'images', got {kind!r}")


def url_to_id(kind: str, url: str) -> str:
    """The LPR id of a URL: the frame id (``kind="frames"``) or image id (``"images"``).

    Raises:
        lpr_core.ids.InvalidIdError: when ``url`` is not a valid LPR4M URL of that kind.
    """
    return _parser(kind)(url)


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def read_shards(
    folder: str | Path,
    out_root: str | Path,
    kind: str,
    output_format: str,
    expected_urls: Mapping[str, object] | None = None,
) -> dict[str, Outcome]:
    """Read every complete shard of an img2dataset output folder into outcomes by URL.

    Each shard URL is parsed as an LPR4M URL of ``kind``; the id is what the manifest records.

    Args:
        folder: the img2dataset output folder (``<out>/<split>_<kind>``).
        out_root: the download output directory (paths are made relative to it).
        kind: ``"frames"`` or ``"images"``.
        output_format: ``"files"`` or ``"webdataset"``.
        expected_urls: when given, a URL found in a shard but not in it is an error (a shard
            left over from another URL list).

    Returns:
        ``{url: Outcome}``; failed rows carry img2dataset's error as ``"<reason>: <message>"``.

    Raises:
        ManifestError: on an unreadable shard, a missing column, a URL that is not a valid
            LPR4M URL of ``kind``, an unexpected URL or a URL twice (naming file and row).
    """
    folder = Path(folder)
    rel = os.path.relpath(folder, out_root).replace(os.sep, "/")
    parse = _parser(kind)
    outcomes: dict[str, Outcome] = {}
    where: dict[str, str] = {}
    for _, path in complete_shards(folder):
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise ManifestError(f"{path}: unreadable img2dataset shard ({exc}); delete it and its "
                                f"_stats.json to download the shard again") from None
        missing = [c for c in SHARD_COLUMNS if c not in table.column_names]
        if missing:
            raise ManifestError(f"{path}: not an img2dataset shard (missing columns {', '.join(missing)})")
        cols = table.select(list(SHARD_COLUMNS)).to_pydict()
        shard_name = path.stem
        for row, url in enumerate(cols["url"]):
            at = f"{path}: row {row + 1}"
            try:
                parse(url)
            except ids.InvalidIdError as exc:
                raise ManifestError(f"{at}: {exc}") from None
            if expected_urls is not None and url not in expected_urls:
                raise ManifestError(f"{at}: URL {url!r} is not in the input URL list (a shard of another "
                                    f"list?); delete {folder} to download it again")
            if url in outcomes:
                raise ManifestError(f"{at}: URL {url!r} also in {where[url]}")
            where[url] = at
            key = cols["key"][row]
            if cols["status"][row] == "success":
                if output_format == "webdataset":
                    loc, member = f"{rel}/{shard_name}.tar", f"{key}.jpg"
                else:
                    loc, member = f"{rel}/{shard_name}/{key}.jpg", None
                outcomes[url] = Outcome(
                    url, "success", loc, member,
                    _int(cols["width"][row]), _int(cols["height"][row]),
                    _int(cols["original_width"][row]), _int(cols["original_height"][row]),
                    None, cols["sha256"][row], "img2dataset",
                )
            else:
                message = cols["error_message"][row] or cols["status"][row]
                outcomes[url] = Outcome(url, "failed", error=format_error(message), source="img2dataset")
    return outcomes


# ---------------------------------------------------------------------------------- integrity

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a JPEG's frame header, without decoding the image.

    Raises:
        ValueError: when ``data`` is not a JPEG or its headers are cut.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("no JPEG SOI marker")
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ValueError(f"no marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF:
            if i + 9 > n:
                break
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            raise ValueError("no frame header before the scan")
        i += 2 + length
    raise ValueError("JPEG headers are cut")


def check_jpeg(data: bytes, width: int | None = None, height: int | None = None) -> str | None:
    """Cheap integrity check of a stored JPEG: SOI, EOI, frame header and expected size.

    Args:
        data: the file's bytes.
        width, height: the size the shard recorded (checked when given).

    Returns:
        None when the JPEG looks whole, else why not.
    """
    if not data:
        return "empty file"
    try:
        size = jpeg_size(data)
    except ValueError as exc:
        return str(exc)
    if data[-2:] != b"\xff\xd9":
        return "no JPEG EOI marker (truncated)"
    if width is not None and height is not None and size != (width, height):
        return f"JPEG is {size[0]}x{size[1]}, the shard says {width}x{height}"
    return None


def verify_stored(out_root: str | Path, outcomes: Iterable[Outcome], threads: int = 8,
                  progress: bool = False) -> dict[str, str]:
    """Check every stored success with :func:`check_jpeg`.

    Args:
        out_root: the download output directory.
        outcomes: outcomes of one list (failed ones are skipped).
        threads: reader threads for plain files.
        progress: show a progress bar.

    Returns:
        ``{url: error}`` for the samples that fail, the error formatted as
        ``"corrupt_output: ..."``.
    """
    out_root = Path(out_root)
    bad: dict[str, str] = {}
    files: list[Outcome] = []
    tars: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if not o.ok:
            continue
        if o.tar_member is None:
            files.append(o)
        else:
            tars.setdefault(o.path, []).append(o)  # type: ignore[arg-type]

    root = str(out_root)

    def check_files(batch: list[Outcome]) -> list[tuple[str, str]]:
        found = []
        for o in batch:
            try:
                with open(f"{root}/{o.path}", "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                found.append((o.url, f"cannot read {o.path}: {exc.strerror or exc}"))
                continue
            why = check_jpeg(data, o.width, o.height)
            if why is not None:
                found.append((o.url, f"{o.path}: {why}"))
        return found

    total = len(files) + sum(map(len, tars.values()))
    with tqdm(total=total, desc="verify stored", unit="img", disable=not progress or total == 0,
              leave=False) as bar:
        # batches keep the thread overhead low on a local disk; threads pay off on network storage
        batches = [files[i:i + 512] for i in range(0, len(files), 512)]
        with ThreadPoolExecutor(max(1, min(threads, len(batches) or 1))) as pool:
            for batch, found in zip(batches, pool.map(check_files, batches)):
                for url, why in found:
                    bad[url] = format_error(why, "corrupt_output")
                bar.update(len(batch))
        for tar_path, members in tars.items():
            found: dict[str, bytes] = {}
            wanted = {o.tar_member for o in members}
            try:
                with tarfile.open(out_root / tar_path) as tar:
                    for info in tar:
                        if info.name in wanted and info.isfile():
                            fh = tar.extractfile(info)
                            found[info.name] = fh.read() if fh is not None else b""
            except (OSError, tarfile.TarError) as exc:
                found = {}
                tar_error: str | None = f"unreadable tar {tar_path}: {exc}"
            else:
                tar_error = None
            for o in members:
                data = found.get(o.tar_member)  # type: ignore[arg-type]
                if data is None:
                    why = tar_error or f"{o.tar_member} missing from {tar_path}"
                else:
                    why = check_jpeg(data, o.width, o.height)
                    why = None if why is None else f"{tar_path}:{o.tar_member}: {why}"
                if why is not None:
                    bad[o.url] = format_error(why, "corrupt_output")
                bar.update()
    return bad


# ----------------------------------------------------------------------------------- manifest


def manifest_schema(kind: str) -> pa.Schema:
    """The manifest schema of a URL list kind (``"frames"`` or ``"images"``)."""
    if kind == "frames":
        return FRAME_MANIFEST_SCHEMA
    if kind == "images":
        return IMAGE_MANIFEST_SCHEMA
    raise ValueError(f"kind must be 'frames' or 'images', got {kind!r}")


def build_manifest(kind: str, urls: Iterable[str], outcomes: Mapping[str, Outcome]) -> pa.Table:
    """The manifest table of one URL list: one row per input URL, in input order.

    Args:
        kind: ``"frames"`` or ``"images"``.
        urls: the input URLs (unique, already validated).
        outcomes: ``{url: Outcome}``; a URL without an outcome is a failed row with reason
            ``missing``.

    Returns:
        A table with exactly :func:`manifest_schema` ``(kind)``.

    Raises:
        ManifestError: when a URL is not a valid LPR4M URL of ``kind`` or appears twice.
    """
    schema = manifest_schema(kind)
    cols: dict[str, list] = {name: [] for name in schema.names}
    seen: set[str] = set()
    for n, url in enumerate(urls, 1):
        if url in seen:
            raise ManifestError(f"URL {url!r} twice in the manifest input (row {n})")
        seen.add(url)
        try:
            if kind == "frames":
                _, frame = ids.parse_frame_url(url)
                cols["frame_id"].append(str(frame))
                cols["clip_id"].append(frame.clip_id)
                cols["frame_index"].append(frame.index)
            elif kind == "images":
                cols["image_id"].append(ids.parse_image_url(url)[1])
            else:
                raise ValueError(f"kind must be 'frames' or 'images', got {kind!r}")
        except ids.InvalidIdError as exc:
            raise ManifestError(f"manifest input row {n}: {exc}") from None
        o = outcomes.get(url)
        if o is None:
            o = Outcome(url, "failed", error="missing: not in any complete img2dataset shard", source="none")
        ok = o.ok
        cols["url"].append(url)
        cols["path"].append(o.path if ok else None)
        cols["tar_member"].append(o.tar_member if ok else None)
        for c in ("width", "height", "original_width", "original_height"):
            cols[c].append(getattr(o, c) if ok else None)
        cols["status"].append("success" if ok else "failed")
        cols["error"].append(None if ok else (o.error or "other: unknown error"))
        cols["sha256"].append(o.sha256 if ok else None)
    return pa.Table.from_pydict(cols, schema=schema)


def write_table_atomic(table: pa.Table, path: str | Path) -> Path:
    """Write a Parquet table to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_manifest(path: str | Path, kind: str) -> pa.Table:
    """Read a manifest and check its schema.

    Raises:
        ManifestError: when the file is missing, unreadable or has another schema.
    """
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    schema = manifest_schema(kind)
    if not table.schema.remove_metadata().equals(schema):
        raise ManifestError(f"{path}: schema differs from the {kind} manifest schema:\n{table.schema}")
    return table


def count_outcomes(urls: Iterable[str], outcomes: Mapping[str, Outcome]) -> dict[str, object]:
    """Counts for the summary: total, success, recovered (by the retry pass), failed by reason."""
    total = success = recovered = 0
    failed: dict[str, int] = {}
    for url in urls:
        total += 1
        o = outcomes.get(url)
        if o is not None and o.ok:
            success += 1
            recovered += o.source == "retry"
        else:
            reason = "missing" if o is None else error_reason(o.error)
            failed[reason] = failed.get(reason, 0) + 1
    return {
        "total": total,
        "success": success,
        "recovered_by_retry": recovered,
        "failed": total - success,
        "failed_by_reason": dict(sorted(failed.items())),
    }
