"""Gallery indexes: one faiss index per livestream, with its id map.

The LPR protocol ranks a query clip only against the shop images of its own livestream, so the
gallery is not one index but one per ``live_id``. Each index stores the L2-normalised image
embeddings and is searched by inner product (cosine similarity).

Index kinds (:class:`IndexSpec.kind`):

- ``"flat"`` (default): exact inner product (``IndexFlatIP``). A real LPR4M gallery holds ~600
  images: exact search is the right choice there.
- ``"ivf"``: inverted lists over exact vectors (``IndexIVFFlat``), ``nlist`` lists searched with
  ``nprobe`` probes. For large galleries (e.g. the 332k training images). ``nlist`` is lowered
  to ``ntotal // 39`` (at least 1) for small galleries, where k-means has too few points.
- ``"hnsw"``: a graph over exact vectors (``IndexHNSWFlat``), CPU only.

Every kind keeps the exact vectors, so :meth:`GalleryIndex.vectors` can give them back for exact
evaluation whatever the kind.

Device: ``"auto"`` puts flat and IVF indexes on the GPU when faiss has GPU support and a GPU is
present, on the CPU otherwise; ``"cpu"`` and ``"gpu"`` force one (``"gpu"`` fails when there is
none). Saved indexes are always CPU indexes; :func:`load_index` moves them as asked.

On disk (:func:`save_gallery_indexes`)::

    <directory>/
      manifest.json           {"format": 1, "spec": {...}, "livestreams": {live_id: {...}}}
      <live_id>/index.faiss   the faiss index (CPU form)
      <live_id>/image_ids.txt one image_id per line, in index order (row i of the index)
      <live_id>/meta.json     kind, ntotal, dim, spec, images left out for lack of an embedding

A livestream's directory is written under a temporary name and swapped into place
(:func:`lpr_core.io.atomic_dir`), and the manifest is written last, so an interrupted save never
leaves a half-written index under a final name. ``live_id`` is validated
(:func:`lpr_core.ids.parse_live_id`) before it becomes a path.

faiss is imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from lpr_core import io
from lpr_core.ids import UUID_RE, parse_image_id, parse_live_id

__all__ = [
    "INDEX_KINDS",
    "DEVICES",
    "IndexSpec",
    "GalleryIndex",
    "IndexFileError",
    "faiss_gpu_available",
    "build_index",
    "build_gallery_indexes",
    "save_index",
    "save_gallery_indexes",
    "load_index",
    "load_gallery_indexes",
    "search_predictions",
]

INDEX_KINDS = ("flat", "ivf", "hnsw")
DEVICES = ("auto", "cpu", "gpu")
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IDS_FILE = "image_ids.txt"
META_FILE = "meta.json"
#: k-means wants at least this many training points per IVF list (faiss warns below it).
MIN_POINTS_PER_LIST = 39


class IndexFileError(ValueError):
    """A saved gallery index is missing, inconsistent or unreadable."""


@dataclass(frozen=True)
class IndexSpec:
    """How to build a gallery index (the ``index_gallery`` section of params.yaml).

    Attributes:
        kind: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"``.
        nlist: IVF: number of inverted lists (lowered for small galleries, see module docs).
        nprobe: IVF: lists visited per search.
        hnsw_m: HNSW: neighbours per node.
        ef_construction: HNSW: candidate list size while building.
        ef_search: HNSW: candidate list size while searching.
        device: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        batch_size: vectors added to the index per call (one progress-bar step).
        train_size: IVF: at most this many vectors (a seeded sample) train the k-means.
        seed: IVF: seed of the training sample and of k-means.
    """

    kind: str = "flat"
    nlist: int = 1024
    nprobe: int = 32
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    device: str = field(default="auto", metadata={"runtime": True})
    batch_size: int = field(default=131072, metadata={"runtime": True})
    train_size: int = 262144
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        if self.device not in DEVICES:
            raise ValueError(f"index device must be one of {DEVICES}, got {self.device!r}")
        for name in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search", "batch_size", "train_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"index {name} must be a positive int, got {value!r}")
        if self.kind == "hnsw" and self.device == "gpu":
            raise ValueError("faiss has no GPU HNSW index: use device 'cpu' or 'auto' with kind 'hnsw'")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> IndexSpec:
        """Build a spec from a params mapping, rejecting unknown keys (a typo is an error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown index parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(params))

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict (JSON-serialisable)."""
        return asdict(self)


@dataclass
class GalleryIndex:
    """The index of one livestream's gallery.

    Attributes:
        live_id: the livestream.
        image_ids: image ids in index order: row ``i`` of the index is ``image_ids[i]``.
        index: the faiss index (CPU or GPU).
        spec: how it was built.
        on_gpu: whether ``index`` lives on a GPU.
        nlist: IVF: the number of lists actually used (0 for other kinds).
        missing_image_ids: gallery images left out because they had no embedding.
    """

    live_id: str
    image_ids: tuple[str, ...]
    index: Any
    spec: IndexSpec
    on_gpu: bool = False
    nlist: int = 0
    missing_image_ids: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.index.d)

    def __len__(self) -> int:
        return self.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Search the gallery.

        Results are ordered by descending score, ties by ascending index position (the
        evaluation's tie rule, also at the k-th place: a flat index gives exactly the
        evaluation's top k). With IVF or HNSW the result is approximate; the tie rule then
        applies among the results found.

        Args:
            queries: ``(m, d)`` query embeddings.
            k: results per query (at most ``ntotal`` come back).

        Returns:
            ``scores`` ``(m, k')`` float32 and, per query, the ``k'`` image ids, best first
            (fewer ids than ``k'`` where an approximate index found fewer; their scores are -inf).
        """
        x = _as_matrix(queries, "queries", dim=self.dim)
        n = self.ntotal
        k = min(int(k), n)
        m = x.shape[0]
        if k <= 0 or m == 0:
            return np.empty((m, 0), np.float32), [[] for _ in range(m)]
        scores = np.empty((m, k), np.float32)
        labels = np.empty((m, k), np.int64)
        # faiss keeps an arbitrary part of a tie at the k-th score. Fetch a margin more, and
        # widen it for the rows whose tie runs to the end of what was fetched, so that every
        # equal score is there to be ordered by index position.
        rows = np.arange(m)
        fetch = min(n, k + 16)
        while len(rows):
            s, lab = self.index.search(x[rows], fetch)
            lab = lab.astype(np.int64, copy=False)
            found = lab >= 0
            s = np.where(found, s, -np.inf).astype(np.float32)
            done = (fetch >= n) | ~found[:, -1] | (s[:, -1] != s[:, k - 1])
            order = np.lexsort((np.where(found, lab, np.iinfo(np.int64).max), -s), axis=1)[:, :k]
            scores[rows[done]] = np.take_along_axis(s, order, axis=1)[done]
            labels[rows[done]] = np.take_along_axis(lab, order, axis=1)[done]
            rows = rows[~done]
            fetch = min(n, 2 * fetch)
        ids = [[self.image_ids[j] for j in row if j >= 0] for row in labels]
        return scores, ids

    def vectors(self) -> np.ndarray:
        """The exact stored vectors, ``(ntotal, d)`` float32, in index order."""
        index = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        if self.spec.kind == "ivf":
            ivf = faiss.extract_index_ivf(index)
            ivf.make_direct_map()
        if self.ntotal == 0:
            return np.empty((0, self.dim), np.float32)
        return np.ascontiguousarray(index.reconstruct_n(0, self.ntotal), dtype=np.float32)

    def to_cpu(self) -> GalleryIndex:
        """A CPU copy (``self`` when already on the CPU)."""
        if not self.on_gpu:
            return self
        return GalleryIndex(
            self.live_id,
            self.image_ids,
            faiss.index_gpu_to_cpu(self.index),
            self.spec,
            False,
            self.nlist,
            self.missing_image_ids,
        )


def faiss_gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees at least one GPU."""
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return False
    return faiss.get_num_gpus() > 0


_GPU_RESOURCES: list[Any] = []


def _gpu_resources() -> Any:
    # One StandardGpuResources per process (it owns scratch memory); created on first GPU use.
    if not _GPU_RESOURCES:
        _GPU_RESOURCES.append(faiss.StandardGpuResources())
    return _GPU_RESOURCES[0]


def _use_gpu(spec: IndexSpec) -> bool:
    if spec.device == "cpu" or spec.kind == "hnsw":
        return False
    available = faiss_gpu_available()
    if spec.device == "gpu" and not available:
        raise RuntimeError("index device 'gpu' asked for, but faiss has no GPU support or sees no GPU")
    return available


def _as_matrix(x: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (n, d) array, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{what} have dimension {arr.shape[1]}, the index has {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise ValueError(f"{what} row {bad} holds a non-finite value (nan or inf)")
    return arr


def _check_image_ids(live_id: str, image_ids: Sequence[str]) -> tuple[str, ...]:
    ids = tuple(image_ids)
    for image_id in ids:
        if not (isinstance(image_id, str) and UUID_RE.match(image_id)):
            parse_image_id(image_id)  # raises, naming the id
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for image_id in ids:
            if image_id in seen:
                raise ValueError(f"gallery of live_id {live_id}: image_id {image_id} appears twice")
            seen.add(image_id)
    return ids


def _empty_index(spec: IndexSpec, dim: int, n: int) -> tuple[Any, int]:
    if spec.kind == "flat":
        return faiss.IndexFlatIP(dim), 0
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
        return index, 0
    nlist = max(1, min(spec.nlist, n // MIN_POINTS_PER_LIST))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = min(spec.nprobe, nlist)
    index.cp.seed = spec.seed
    return index, nlist


def build_index(
    live_id: str,
    image_ids: Sequence[str],
    embeddings: np.ndarray,
    spec: IndexSpec | None = None,
    *,
    progress: bool | Callable[[int], object] = False,
    missing_image_ids: Sequence[str] = (),
) -> GalleryIndex:
    """Build the index of one livestream's gallery.

    Args:
        live_id: the livestream (validated: it later names a directory).
        image_ids: ``n`` distinct image ids; row ``i`` of ``embeddings`` belongs to ``image_ids[i]``.
        embeddings: ``(n, d)`` float32 image embeddings, L2-normalised by the caller (inner
            product is then cosine similarity). Must be finite.
        spec: how to build it (default: exact flat index, device auto).
        progress: ``True`` shows a progress bar over the vectors added; a callable is called
            with the number of vectors of each batch added (to drive an outer bar).
        missing_image_ids: gallery images the caller left out (recorded in the index's meta).

    Returns:
        The :class:`GalleryIndex`, on the GPU when the spec's device resolves to one.
    """
    spec = spec or IndexSpec()
    live_id = parse_live_id(live_id)
    ids = _check_image_ids(live_id, image_ids)
    x = _as_matrix(embeddings, f"embeddings of live_id {live_id}")
    if x.shape[0] != len(ids):
        raise ValueError(f"live_id {live_id}: {len(ids)} image ids but {x.shape[0]} embedding rows")
    n, dim = x.shape
    if dim == 0:
        raise ValueError(f"live_id {live_id}: embeddings have dimension 0")
    index, nlist = _empty_index(spec, dim, n)
    on_gpu = _use_gpu(spec)
    if on_gpu:
        index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    if spec.kind == "ivf" and n:
        rng = np.random.default_rng(spec.seed)
        train = x if n <= spec.train_size else x[np.sort(rng.choice(n, spec.train_size, replace=False))]
        index.train(train)
    bar = None
    if progress is True:
        bar = tqdm(total=n, unit="vec", desc=f"index {live_id[:8]}", leave=False)
    try:
        for start in range(0, n, spec.batch_size):
            batch = x[start : start + spec.batch_size]
            index.add(batch)
            if bar is not None:
                bar.update(len(batch))
            elif callable(progress):
                progress(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return GalleryIndex(live_id, ids, index, spec, on_gpu, nlist, tuple(missing_image_ids))


def build_gallery_indexes(
    galleries: Mapping[str, Sequence[str]],
    image_ids: Sequence[str],
    embeddings: np.ndarray,
    spec: IndexSpec | None = None,
    *,
    skip_missing: bool = False,
    progress: bool = True,
) -> dict[str, GalleryIndex]:
    """Build one index per livestream from a table of image embeddings.

    Args:
        galleries: ``live_id -> [image_id, ...]`` (the content of ``test_liveid_to_gallery``);
            the list order is the index order, which breaks score ties.
        image_ids: ``N`` distinct image ids, one per row of ``embeddings``.
        embeddings: ``(N, d)`` float32 embeddings (L2-normalised) of ``image_ids``.
        spec: how to build each index.
        skip_missing: a gallery image without an embedding (e.g. its download failed) is an
            error by default; with ``True`` it is left out and recorded in the index's
            ``missing_image_ids``.
        progress: show one progress bar over all vectors.

    Returns:
        ``live_id -> GalleryIndex``, in the order of ``galleries``.
    """
    spec = spec or IndexSpec()
    x = _as_matrix(embeddings, "gallery embeddings")
    if x.shape[0] != len(image_ids):
        raise ValueError(f"{len(image_ids)} image ids but {x.shape[0]} embedding rows")
    row_of: dict[str, int] = {}
    for row, image_id in enumerate(image_ids):
        if image_id in row_of:
            raise ValueError(f"image_id {image_id} has two embedding rows ({row_of[image_id]} and {row})")
        row_of[image_id] = row
    plans: list[tuple[str, list[str], np.ndarray, list[str]]] = []
    for live_id, members in galleries.items():
        parse_live_id(live_id)
        present = [m for m in members if m in row_of]
        missing = [m for m in members if m not in row_of]
        if missing and not skip_missing:
            raise ValueError(
                f"live_id {live_id}: {len(missing)} gallery image(s) have no embedding, "
                f"first {missing[0]} (pass skip_missing=True to leave them out)"
            )
        rows = np.fromiter((row_of[m] for m in present), dtype=np.int64, count=len(present))
        plans.append((live_id, present, rows, missing))
    total = sum(len(rows) for _, _, rows, _ in plans)
    bar = None
    if progress:
        bar = tqdm(total=total, unit="vec", desc="gallery indexes")
    try:
        out: dict[str, GalleryIndex] = {}
        for live_id, present, rows, missing in plans:
            out[live_id] = build_index(
                live_id,
                present,
                x[rows],
                spec,
                progress=bar.update if bar is not None else False,
                missing_image_ids=missing,
            )
        return out
    finally:
        if bar is not None:
            bar.close()


def _meta(gallery: GalleryIndex) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "live_id": gallery.live_id,
        "kind": gallery.spec.kind,
        "ntotal": gallery.ntotal,
        "dim": gallery.dim,
        "nlist": gallery.nlist,
        "spec": gallery.spec.to_dict(),
        "missing_image_ids": list(gallery.missing_image_ids),
        "faiss_version": faiss.__version__,
    }


def save_index(gallery: GalleryIndex, directory: str | os.PathLike[str]) -> Path:
    """Save one livestream's index under ``directory/<live_id>/`` (replacing an older one).

    Returns:
        The livestream's directory.
    """
    live_id = parse_live_id(gallery.live_id)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / live_id
    with io.atomic_dir(final) as tmp:
        cpu = gallery.to_cpu()
        faiss.write_index(cpu.index, str(tmp / INDEX_FILE))
        (tmp / IDS_FILE).write_text("".join(f"{i}\n" for i in cpu.image_ids), encoding="utf-8")
        (tmp / META_FILE).write_text(json.dumps(_meta(cpu), indent=1) + "\n", encoding="utf-8")
    return final


def save_gallery_indexes(indexes: Mapping[str, GalleryIndex], directory: str | os.PathLike[str]) -> Path:
    """Save every livestream's index and then ``manifest.json`` (written last, atomically).

    Livestream directories of an earlier save that are not in ``indexes`` are left alone but
    no longer listed in the manifest, so :func:`load_gallery_indexes` ignores them.

    Returns:
        The path of the manifest.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    listing: dict[str, Any] = {}
    specs = set()
    for live_id, gallery in indexes.items():
        if live_id != gallery.live_id:
            raise ValueError(f"index stored under key {live_id} belongs to live_id {gallery.live_id}")
        save_index(gallery, root)
        listing[live_id] = {"ntotal": gallery.ntotal, "dim": gallery.dim, "kind": gallery.spec.kind}
        specs.add(json.dumps(gallery.spec.to_dict(), sort_keys=True))
    manifest = {
        "format": FORMAT_VERSION,
        "spec": json.loads(specs.pop()) if len(specs) == 1 else None,
        "livestreams": listing,
    }
    path = root / MANIFEST
    io.atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFileError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise IndexFileError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def load_index(directory: str | os.PathLike[str], live_id: str, *, device: str = "auto") -> GalleryIndex:
    """Load the index of ``live_id`` saved under ``directory`` by :func:`save_index`.

    Args:
        directory: the directory holding ``<live_id>/``.
        live_id: the livestream (validated before it becomes a path).
        device: ``"auto"``, ``"cpu"`` or ``"gpu"``, as in :class:`IndexSpec`.

    Raises:
        IndexFileError: a file is missing or the index, its id map and its meta disagree.
    """
    live_id = parse_live_id(live_id)
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    where = Path(directory) / live_id
    meta = _read_json(where / META_FILE)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise IndexFileError(f"{where / META_FILE}: unknown format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    if meta.get("live_id") != live_id:
        raise IndexFileError(f"{where / META_FILE}: belongs to live_id {meta.get('live_id')!r}, not {live_id}")
    try:
        spec_params = dict(meta["spec"])
        spec_params["device"] = device
        spec = IndexSpec.from_dict(spec_params)
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFileError(f"{where / META_FILE}: bad spec: {exc}") from None
    ids_path = where / IDS_FILE
    try:
        lines = ids_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise IndexFileError(f"{ids_path}: missing") from None
    for lineno, image_id in enumerate(lines, 1):
        try:
            parse_image_id(image_id)
        except ValueError as exc:
            raise IndexFileError(f"{ids_path} line {lineno}: {exc}") from None
    index_path = where / INDEX_FILE
    if not index_path.is_file():
        raise IndexFileError(f"{index_path}: missing")
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as exc:
        raise IndexFileError(f"{index_path}: unreadable faiss index: {str(exc).splitlines()[0]}") from None
    if index.ntotal != len(lines) or index.ntotal != meta.get("ntotal") or index.d != meta.get("dim"):
        raise IndexFileError(
            f"{where}: index holds {index.ntotal} vectors of dimension {index.d}, "
            f"{IDS_FILE} lists {len(lines)} ids, {META_FILE} says {meta.get('ntotal')} x {meta.get('dim')}"
        )
    # Search parameters go on the CPU index; index_cpu_to_gpu carries them over.
    if spec.kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = min(spec.nprobe, int(meta.get("nlist") or spec.nprobe))
    elif spec.kind == "hnsw":
        index.hnsw.efSearch = spec.ef_search
    on_gpu = _use_gpu(spec)
    if on_gpu:
        index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    return GalleryIndex(
        live_id,
        tuple(lines),
        index,
        spec,
        on_gpu,
        int(meta.get("nlist") or 0),
        tuple(meta.get("missing_image_ids") or ()),
    )


def load_gallery_indexes(directory: str | os.PathLike[str], *, device: str = "auto") -> dict[str, GalleryIndex]:
    """Load every index listed in ``directory/manifest.json``.

    Returns:
        ``live_id -> GalleryIndex`` in manifest order.
    """
    root = Path(directory)
    manifest = _read_json(root / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise IndexFileError(f"{root / MANIFEST}: not a gallery index manifest of format {FORMAT_VERSION}")
    listing = manifest.get("livestreams")
    if not isinstance(listing, dict):
        raise IndexFileError(f"{root / MANIFEST}: 'livestreams' must be an object")
    out = {}
    for live_id in listing:
        try:
            parse_live_id(live_id)
        except ValueError as exc:
            raise IndexFileError(f"{root / MANIFEST}: {exc}") from None
        out[live_id] = load_index(root, live_id, device=device)
    return out


def search_predictions(
    indexes: Mapping[str, GalleryIndex],
    query_ids: Sequence[str],
    query_live_ids: Sequence[str],
    query_embeddings: np.ndarray,
    k: int,
) -> dict[str, list[tuple[str, float]]]:
    """Search each query in its own livestream's index: predictions in the official format.

    Args:
        indexes: ``live_id -> GalleryIndex``.
        query_ids: ``m`` query (clip) ids.
        query_live_ids: the livestream of each query.
        query_embeddings: ``(m, d)`` float32 query embeddings.
        k: results per query.

    Returns:
        ``query_id -> [(image_id, score), ...]`` best first (the format that
        :func:`lpr_core.evaluation.score_predictions` scores). A query whose livestream has no
        index gets no entry.
    """
    x = _as_matrix(query_embeddings, "query embeddings")
    if not (len(query_ids) == len(query_live_ids) == x.shape[0]):
        raise ValueError(
            f"{len(query_ids)} query ids, {len(query_live_ids)} live ids, {x.shape[0]} embedding rows"
        )
    by_live: dict[str, list[int]] = {}
    for row, live_id in enumerate(query_live_ids):
        by_live.setdefault(live_id, []).append(row)
    out: dict[str, list[tuple[str, float]]] = {}
    for live_id, rows in by_live.items():
        gallery = indexes.get(live_id)
        if gallery is None:
            continue
        scores, ids = gallery.search(x[rows], k)
        for row, row_scores, row_ids in zip(rows, scores, ids):
            out[query_ids[row]] = [(image_id, float(s)) for image_id, s in zip(row_ids, row_scores)]
    return out
