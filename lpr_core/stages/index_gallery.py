"""DVC stage ``index_gallery``: embed the test gallery images, one faiss index per livestream.

    python -m lpr_core.stages.index_gallery --prepared DIR --download DIR --encoder DIR --out DIR
        [--params params.yaml]

Reads ``<prepared>/test_gallery.parquet`` (``live_id, image_id``, in gallery order), the test
image manifest of the download, and ``<encoder>/encoder.pt``. Every distinct gallery image that
was downloaded is embedded once (L2-normalised, the encoder's evaluation transform); each
livestream's gallery becomes a faiss index (:mod:`lpr_core.index`, exact inner product by
default). Writes to ``--out``, replaced as a whole (built in a temporary sibling directory, then
renamed)::

    manifest.json, <live_id>/...    the indexes and their id maps (lpr_core.index.save_gallery_indexes)
    gallery_embeddings.npy          (N, d) float32, row i belongs to row i of gallery_images.parquet
    gallery_images.parquet          image_id: the embedded images, each once
    index_summary.json              counts, images left out (not downloaded), encoder hash, timings

Reads the ``index_gallery`` section of params.yaml (:class:`IndexGalleryParams`) and logs it, the
counts, the timings and the images left out to MLflow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lpr_core.index.gallery import IndexSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

    from lpr_core.data.datasets import ManifestImages
    from lpr_core.index.gallery import GalleryIndex
    from lpr_core.models.encoder import RiceModel

__all__ = [
    "ENCODER_FILE",
    "EMBEDDINGS_FILE",
    "IMAGES_FILE",
    "SUMMARY_FILE",
    "EmbedParams",
    "IndexGalleryParams",
    "GalleryIndexResult",
    "StageInputError",
    "usable_cores",
    "resolve_device",
    "file_sha256",
    "read_galleries",
    "load_encoder_checkpoint",
    "eval_transform",
    "embed_gallery_images",
    "embed_dataset",
    "index_gallery",
    "write_index_outputs",
    "load_gallery_embeddings",
    "replace_dir",
    "fresh_tmp_dir",
    "add_arguments",
    "run",
    "main",
]

#: The encoder checkpoint inside ``--encoder`` (written by the train_encoder stage).
ENCODER_FILE = "encoder.pt"
EMBEDDINGS_FILE = "gallery_embeddings.npy"
IMAGES_FILE = "gallery_images.parquet"
SUMMARY_FILE = "index_summary.json"


class StageInputError(ValueError):
    """A stage input (prepared table, index directory, checkpoint) is missing or malformed."""


@dataclass(frozen=True)
class EmbedParams:
    """How a stage runs the encoder over images or clips.

    Attributes:
        batch_size: images (or clips) per forward pass.
        num_workers: DataLoader worker processes that read and decode JPEGs (0: the main process).
        prefetch_factor: batches each worker prepares ahead.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: ``auto`` (bf16 autocast on CUDA, full precision on CPU), ``bf16`` or ``off`` (YAML
            reads a bare ``off`` as false, ``on`` as true: both are understood).
    """

    batch_size: int = field(default=64, metadata={"runtime": True})
    num_workers: int = field(default=1, metadata={"runtime": True})
    prefetch_factor: int = field(default=4, metadata={"runtime": True})
    device: str = field(default="auto", metadata={"runtime": True})
    amp: str | bool = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_workers < 0 or self.prefetch_factor < 1:
            raise ValueError("batch_size and prefetch_factor must be >= 1, num_workers >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto|cpu|cuda, got {self.device!r}")
        if isinstance(self.amp, bool):
            object.__setattr__(self, "amp", "bf16" if self.amp else "off")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be auto|bf16|off, got {self.amp!r}")


@dataclass(frozen=True)
class IndexGalleryParams:
    """The ``index_gallery`` section of params.yaml.

    Attributes:
        index: how each livestream's index is built (:class:`lpr_core.index.IndexSpec`:
            ``kind`` flat|ivf|hnsw, ``nlist``, ``nprobe``, ``hnsw_m``, ``ef_construction``,
            ``ef_search``, ``device``, ``batch_size``, ``train_size``, ``seed``).
        embed: how the gallery images are embedded.
        skip_missing: leave gallery images that were not downloaded out of the index (recorded
            in the summary and the index meta); false makes one an error.
    """

    index: IndexSpec = field(default_factory=IndexSpec)
    embed: EmbedParams = field(default_factory=EmbedParams)
    skip_missing: bool = True


@dataclass
class GalleryIndexResult:
    """What :func:`index_gallery` returns.

    Attributes:
        indexes: ``live_id -> GalleryIndex``, in gallery-table order.
        image_ids: the ``N`` embedded images, row order of ``embeddings``.
        embeddings: ``(N, d)`` float32, L2-normalised.
        missing_image_ids: gallery images that were not downloaded (left out).
        summary: JSON-ready counts, timings and provenance.
    """

    indexes: dict[str, GalleryIndex]
    image_ids: list[str]
    embeddings: np.ndarray
    missing_image_ids: list[str]
    summary: dict[str, Any]


# --------------------------------------------------------------------------------------- helpers


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_device(params: EmbedParams) -> tuple[torch.device, bool]:
    """The torch device and whether to autocast to bf16; uses every usable core on the CPU."""
    import torch

    from lpr_core.training.distributed import resolve_device as _resolve

    device = _resolve(params.device)
    if device.type == "cpu":
        torch.set_num_threads(usable_cores())
    amp = params.amp == "bf16" or (params.amp == "auto" and device.type == "cuda")
    return device, amp


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_parquet(path: Path, columns: list[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise StageInputError(f"{path}: missing (run the prepare stage)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise StageInputError(f"{path}: unreadable Parquet ({exc})") from None
    absent = [c for c in columns if c not in table.column_names]
    if absent:
        raise StageInputError(f"{path}: missing column(s) {absent} (has {table.column_names})")
    return table


def read_galleries(prepared: str | os.PathLike[str]) -> dict[str, list[str]]:
    """``live_id -> [image_id, ...]`` from ``<prepared>/test_gallery.parquet``, in table order.

    Raises:
        StageInputError: the table is missing, or a row holds an invalid id (named with its row)
            or lists an image twice in one gallery.
    """
    from lpr_core.ids import parse_image_id, parse_live_id

    path = Path(prepared) / "test_gallery.parquet"
    table = _read_parquet(path, ["live_id", "image_id"])
    galleries: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for row, (live_id, image_id) in enumerate(
        zip(table.column("live_id").to_pylist(), table.column("image_id").to_pylist())
    ):
        try:
            parse_live_id(live_id)
            parse_image_id(image_id)
        except ValueError as exc:
            raise StageInputError(f"{path}: row {row}: {exc}") from None
        if (live_id, image_id) in seen:
            raise StageInputError(
                f"{path}: row {row}: image_id {image_id} listed twice in the gallery of {live_id}"
            )
        seen.add((live_id, image_id))
        galleries.setdefault(live_id, []).append(image_id)
    return galleries


def load_encoder_checkpoint(
    encoder_dir: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[RiceModel, Path]:
    """The encoder of ``<encoder_dir>/encoder.pt`` in eval mode on ``device``, and its path."""
    from lpr_core.models.encoder import load_encoder

    path = Path(encoder_dir) / ENCODER_FILE
    if not path.is_file():
        raise StageInputError(f"{path}: encoder checkpoint missing (run the train_encoder stage)")
    return load_encoder(path).to(device).eval(), path


def eval_transform(model: RiceModel):
    """The encoder's evaluation transform (its input size and normalisation)."""
    from lpr_core.training.tasks import TrainEncoderParams, encoder_eval_transform

    return encoder_eval_transform(TrainEncoderParams(model=model.config), model)


def embed_gallery_images(
    model: RiceModel,
    image_ids: list[str],
    images: ManifestImages,
    params: EmbedParams,
    device: torch.device,
    amp: bool,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Embed shop images with the encoder.

    Args:
        model: the encoder (eval mode).
        image_ids: the images to embed (distinct).
        images: reader of the image manifest.
        params: batch size and loader settings.
        device: where the encoder runs.
        amp: bf16 autocast.

    Returns:
        ``(embedded_ids, embeddings (n, d) float32, missing_ids)``: images that were not
        downloaded are left out and listed in ``missing_ids``.
    """
    from lpr_core.data.datasets import GalleryImageDataset
    from lpr_core.models.encoder import embed_images

    dataset = GalleryImageDataset(image_ids, images, transform=eval_transform(model))
    emb = embed_dataset(model, dataset, embed_images, params, device, amp)
    return list(dataset.image_ids), emb, list(dataset.missing)


def embed_dataset(
    model: RiceModel,
    dataset: Any,
    embed: Callable[..., np.ndarray],
    params: EmbedParams,
    device: torch.device,
    amp: bool,
) -> np.ndarray:
    """``(len(dataset), d)`` float32 embeddings of a dataset, in order: the loader of
    ``params`` (batch size, workers, prefetch) fed to ``embed`` (``embed_images`` or
    ``embed_clips`` of :mod:`lpr_core.models.encoder`). Shared by ``index_gallery`` (shop
    images) and ``evaluate`` (query clips)."""
    import numpy as np

    from lpr_core.data.datasets import build_dataloader

    if len(dataset) == 0:
        return np.zeros((0, model.config.embed_dim), np.float32)
    loader = build_dataloader(
        dataset,
        batch_size=params.batch_size,
        num_workers=params.num_workers,
        device=str(device),
        prefetch_factor=params.prefetch_factor,
        persistent_workers=False,
    )
    return np.ascontiguousarray(embed(model, loader, device=device, amp=amp), dtype=np.float32)


# --------------------------------------------------------------------------------------- the stage


def index_gallery(
    prepared: str | os.PathLike[str],
    download: str | os.PathLike[str],
    encoder_dir: str | os.PathLike[str],
    params: IndexGalleryParams = IndexGalleryParams(),
    *,
    progress: bool = True,
) -> GalleryIndexResult:
    """Embed the test gallery and build one index per livestream (see the module docstring).

    Raises:
        StageInputError: a missing or malformed input.
        ValueError: a gallery image was not downloaded and ``params.skip_missing`` is false.
    """
    from lpr_core.data.datasets import ManifestImages
    from lpr_core.index.gallery import build_gallery_indexes

    start = time.perf_counter()
    galleries = read_galleries(prepared)
    images = ManifestImages.from_download(download, "test", "images")
    device, amp = resolve_device(params.embed)
    model, encoder_path = load_encoder_checkpoint(encoder_dir, device)
    distinct = list(dict.fromkeys(i for members in galleries.values() for i in members))
    not_downloaded = [i for i in distinct if i not in images]
    if not_downloaded and not params.skip_missing:
        raise ValueError(
            f"{len(not_downloaded)} gallery image(s) were not downloaded, first {not_downloaded[0]} "
            "(set index_gallery.skip_missing: true to leave them out)"
        )
    t0 = time.perf_counter()
    load_s = t0 - start  # inputs, encoder (and the imports of torch and torchvision)
    image_ids, embeddings, missing = embed_gallery_images(model, distinct, images, params.embed, device, amp)
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    indexes = build_gallery_indexes(
        galleries, image_ids, embeddings, params.index, skip_missing=True, progress=progress
    )
    index_s = time.perf_counter() - t0
    summary = {
        "num_livestreams": len(indexes),
        "num_gallery_entries": sum(len(m) for m in galleries.values()),
        "num_images": len(distinct),
        "num_embedded": len(image_ids),
        "num_missing_images": len(missing),
        "missing_image_ids": missing,
        "embedding_dim": int(embeddings.shape[1]),
        "index": params.index.to_dict(),
        "index_on_gpu": any(g.on_gpu for g in indexes.values()),
        "embed_device": str(device),
        "amp_bf16": amp,
        "encoder": str(encoder_path),
        "encoder_sha256": file_sha256(encoder_path),
        "timings_s": {
            "load": load_s,
            "embed": embed_s,
            "index": index_s,
            "total": time.perf_counter() - start,
        },
    }
    return GalleryIndexResult(indexes, image_ids, embeddings, missing, summary)


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished directory ``tmp`` to ``out``, replacing an older ``out`` (two renames:
    a reader never finds ``out`` half written)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.{uuid.uuid4().hex}.old")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fresh_tmp_dir(out: Path) -> Path:
    """An empty temporary sibling of ``out`` (a leftover of an interrupted run is removed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def write_index_outputs(result: GalleryIndexResult, out: str | os.PathLike[str]) -> Path:
    """Write the indexes, the gallery embeddings and the summary; ``out`` is replaced at once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lpr_core.index.gallery import save_gallery_indexes

    out = Path(out)
    tmp = fresh_tmp_dir(out)
    try:
        save_gallery_indexes(result.indexes, tmp)
        np.save(tmp / EMBEDDINGS_FILE, result.embeddings)
        pq.write_table(pa.table({"image_id": pa.array(result.image_ids, pa.string())}), tmp / IMAGES_FILE)
        (tmp / SUMMARY_FILE).write_text(json.dumps(result.summary, indent=1) + "\n", encoding="utf-8")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_gallery_embeddings(index_dir: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """The gallery embeddings written by this stage: ``(image_ids, (N, d) float32)``.

    Raises:
        StageInputError: a file is missing or the two files disagree.
    """
    import numpy as np

    from lpr_core.ids import parse_image_id

    root = Path(index_dir)
    table = _read_parquet(root / IMAGES_FILE, ["image_id"])
    ids = table.column("image_id").to_pylist()
    for row, image_id in enumerate(ids):
        try:
            parse_image_id(image_id)
        except ValueError as exc:
            raise StageInputError(f"{root / IMAGES_FILE}: row {row}: {exc}") from None
    path = root / EMBEDDINGS_FILE
    if not path.is_file():
        raise StageInputError(f"{path}: missing (run the index_gallery stage)")
    try:
        emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StageInputError(f"{path}: unreadable ({exc})") from None
    if emb.ndim != 2 or emb.shape[0] != len(ids):
        raise StageInputError(
            f"{path}: shape {emb.shape} does not fit the {len(ids)} ids of {root / IMAGES_FILE}"
        )
    return ids, np.ascontiguousarray(emb, dtype=np.float32)


def _mlflow_params(params: IndexGalleryParams) -> dict[str, Any]:
    from lpr_core.config import to_mapping

    return {"index_gallery": to_mapping(params)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stage's command-line options."""
    parser.add_argument("--prepared", required=True, type=Path, help="output directory of the prepare stage")
    parser.add_argument("--download", required=True, type=Path, help="output directory of the download stage")
    parser.add_argument("--encoder", required=True, type=Path, help=f"directory holding {ENCODER_FILE}")
    parser.add_argument("--out", required=True, type=Path, help="output directory (replaced atomically)")
    parser.add_argument("--params", default=Path("params.yaml"), type=Path, help="parameter file")


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit status (1 with a message on bad input)."""
    from lpr_core.config import ConfigError, load_section
    from lpr_core.index.gallery import IndexFileError
    from lpr_core.tracking.run import stage_run

    try:
        params = load_section(IndexGalleryParams, "index_gallery", args.params)
    except ConfigError as exc:
        print(f"index_gallery: error: {exc}", file=sys.stderr)
        return 1
    try:
        with stage_run("index_gallery", _mlflow_params(params)) as tracker:
            result = index_gallery(args.prepared, args.download, args.encoder, params)
            write_index_outputs(result, args.out)
            s = result.summary
            tracker.log_metrics(
                {
                    "index_gallery/num_livestreams": s["num_livestreams"],
                    "index_gallery/num_images": s["num_images"],
                    "index_gallery/num_embedded": s["num_embedded"],
                    "index_gallery/num_missing_images": s["num_missing_images"],
                    **{f"index_gallery/time_{k}_s": v for k, v in s["timings_s"].items()},
                }
            )
            tracker.set_tags({"lpr.encoder_sha256": s["encoder_sha256"]})
            tracker.log_artifact(Path(args.out) / SUMMARY_FILE)
    except (StageInputError, IndexFileError, FileNotFoundError, ValueError) as exc:
        print(f"index_gallery: error: {exc}", file=sys.stderr)
        return 1
    s = result.summary
    print(
        f"index_gallery: {s['num_embedded']} images in {s['num_livestreams']} livestream indexes "
        f"({s['index']['kind']}, dim {s['embedding_dim']}), {s['num_missing_images']} missing, "
        f"{s['timings_s']['total']:.1f} s -> {args.out}"
    )
    if s["missing_image_ids"]:
        print(
            f"  not downloaded, left out: {', '.join(s['missing_image_ids'][:5])}"
            + (" ..." if s["num_missing_images"] > 5 else "")
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lpr_core.stages.index_gallery``."""
    parser = argparse.ArgumentParser(
        prog="python -m lpr_core.stages.index_gallery", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
