"""Torch datasets over the download manifests: training clip/image pairs, query clips, gallery
images and detection frames.

Images are read through a :class:`ManifestImages`, which resolves an id (``frame_id`` or
``image_id``) to its JPEG through a download manifest (``FRAME_MANIFEST_SCHEMA`` /
``IMAGE_MANIFEST_SCHEMA``): a file under the download directory, or a member of a webdataset tar.
Only rows with ``status == "success"`` are readable; the datasets drop clips whose shop image or
every frame failed to download and record how many in ``dropped``.

Boxes in the annotation tables are in pixels of the *original* frame; datasets map them to the
downloaded size with the sizes the manifest records.

Randomness (which frames of a clip, which augmentation) comes from a per-sample seed (see
:class:`lpr_core.data.samplers.ResumableSampler` with ``with_seeds=True``), so it does not
depend on DataLoader workers and is reproduced exactly after a resume.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from lpr_core.data.boxes import boxes_to_downloaded
from lpr_core.data.manifest import read_manifest
from lpr_core.data.transforms import crop_box, jitter_box, seeded, union_box
from lpr_core.formats.schema import FRAME_BOXES_SCHEMA
from lpr_core.ids import make_frame_id

if TYPE_CHECKING:
    import pyarrow as pa
    import torch
    from PIL import Image

__all__ = [
    "ManifestImages",
    "manifest_path",
    "sample_frame_positions",
    "videoinfo_frame_boxes",
    "frame_boxes_lookup",
    "ClipPairDataset",
    "QueryClipDataset",
    "GalleryImageDataset",
    "DetectionDataset",
    "detection_collate",
    "build_dataloader",
]

_REQUIRED = ("path", "tar_member", "width", "height", "original_width", "original_height", "status")


def manifest_path(download_dir: str | Path, split: str, kind: str) -> Path:
    """``<download_dir>/manifests/<split>_<kind>.parquet`` (kind ``frames`` or ``images``)."""
    if kind not in ("frames", "images"):
        raise ValueError(f"manifest kind must be 'frames' or 'images', got {kind!r}")
    return Path(download_dir) / "manifests" / f"{split}_{kind}.parquet"


class ManifestImages:
    """Read downloaded JPEGs by id through a download manifest.

    Args:
        root: the download directory (manifest paths are relative to it).
        manifest: a table with ``FRAME_MANIFEST_SCHEMA`` or ``IMAGE_MANIFEST_SCHEMA`` columns.
        id_column: ``"frame_id"`` or ``"image_id"``.
        source: where the manifest came from, named in error messages.
    """

    def __init__(self, root: str | Path, manifest: pa.Table, *, id_column: str, source: str = "manifest") -> None:
        missing = [c for c in (id_column, *_REQUIRED) if c not in manifest.column_names]
        if missing:
            raise ValueError(f"{source}: missing columns {missing} (has {manifest.column_names})")
        self.root = Path(root)
        self.source = source
        self.id_column = id_column
        cols = {c: manifest.column(c).to_pylist() for c in (id_column, *_REQUIRED)}
        self._clip_ids = manifest.column("clip_id").to_pylist() if "clip_id" in manifest.column_names else None
        self._frame_index = (
            manifest.column("frame_index").to_pylist() if "frame_index" in manifest.column_names else None
        )
        self._rows: dict[str, tuple[str, str | None, int, int, int, int]] = {}
        self._clip_frames: dict[str, list[int]] = defaultdict(list)
        self.num_failed = 0
        for i, key in enumerate(cols[id_column]):
            if cols["status"][i] != "success":
                self.num_failed += 1
                continue
            path = cols["path"][i]
            if not path or cols["width"][i] is None or cols["height"][i] is None:
                raise ValueError(f"{source}: row {i} ({id_column}={key}) is 'success' but has no path or size")
            ow = cols["original_width"][i] or cols["width"][i]
            oh = cols["original_height"][i] or cols["height"][i]
            self._rows[key] = (path, cols["tar_member"][i], cols["width"][i], cols["height"][i], ow, oh)
            if self._clip_ids is not None and self._frame_index is not None:
                self._clip_frames[self._clip_ids[i]].append(int(self._frame_index[i]))
        for frames in self._clip_frames.values():
            frames.sort()
        self._tars: dict[str, Any] = {}
        self._pid = os.getpid()

    @classmethod
    def from_download(cls, download_dir: str | Path, split: str, kind: str) -> ManifestImages:
        """Open ``<download_dir>/manifests/<split>_<kind>.parquet`` (schema checked by
        :func:`lpr_core.data.manifest.read_manifest`)."""
        path = manifest_path(download_dir, split, kind)
        if not path.exists():
            raise FileNotFoundError(f"download manifest not found: {path} (run the download stage)")
        id_column = "frame_id" if kind == "frames" else "image_id"
        return cls(download_dir, read_manifest(path, kind), id_column=id_column, source=str(path))

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    @property
    def ids(self) -> list[str]:
        """Ids of every successfully downloaded image, in manifest order."""
        return list(self._rows)

    def clip_frames(self, clip_id: str) -> list[int]:
        """Sorted frame indices of ``clip_id`` that were downloaded (frame manifests only)."""
        if self._clip_ids is None:
            raise TypeError(f"{self.source} is not a frame manifest (no clip_id column)")
        return self._clip_frames.get(clip_id, [])

    def _row(self, key: str) -> tuple[str, str | None, int, int, int, int]:
        try:
            return self._rows[key]
        except KeyError:
            raise KeyError(f"{self.id_column} {key!r} is not a downloaded image in {self.source}") from None

    def size(self, key: str) -> tuple[int, int]:
        """``(width, height)`` of the downloaded image."""
        row = self._row(key)
        return row[2], row[3]

    def original_size(self, key: str) -> tuple[int, int]:
        """``(width, height)`` of the image before download resizing."""
        row = self._row(key)
        return row[4], row[5]

    def to_downloaded(self, key: str, boxes: Sequence[Sequence[float]]) -> list[tuple[float, float, float, float]]:
        """Map boxes in original pixels of ``key`` to pixels of the downloaded image (clipped
        to it)."""
        if len(boxes) == 0:
            return []
        _, _, w, h, ow, oh = self._row(key)
        return [tuple(b) for b in boxes_to_downloaded(boxes, ow, oh, w, h).tolist()]

    def read_bytes(self, key: str) -> bytes:
        """The JPEG bytes of ``key`` (from its file or its tar member)."""
        path, member, *_ = self._row(key)
        full = self.root / path
        if member:
            if os.getpid() != self._pid:  # a forked DataLoader worker must not share tar handles
                self._tars, self._pid = {}, os.getpid()
            tar = self._tars.get(path)
            if tar is None:
                tar = self._tars[path] = tarfile.open(full)
            try:
                fh = tar.extractfile(member)
            except KeyError:
                raise FileNotFoundError(f"{self.source}: member {member!r} of {key} not in tar {full}") from None
            if fh is None:
                raise FileNotFoundError(f"{self.source}: member {member!r} of {key} in {full} is not a file")
            return fh.read()
        try:
            return full.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.source}: file of {key} missing: {full}") from None

    def open(self, key: str) -> Image.Image:
        """Decode ``key`` as an RGB PIL image."""
        data = self.read_bytes(key)
        try:
            image = Image.open(io.BytesIO(data))
            return image.convert("RGB")
        except Exception as exc:  # PIL raises several types for a corrupt file
            raise ValueError(f"{self.source}: cannot decode the image of {key}: {exc}") from exc

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tars"] = {}
        return state


def sample_frame_positions(num_available: int, num_frames: int, mode: str, rng: np.random.Generator | None = None) -> list[int]:
    """Choose ``min(num_frames, num_available)`` sorted positions out of ``num_available``.

    ``"uniform"`` takes the centre of each of ``num_frames`` equal segments (evaluation, no
    randomness); ``"random_segment"`` takes a random position inside each segment (training,
    TSN-style). With fewer frames than ``num_frames`` every frame is taken once.
    """
    if num_available <= 0:
        raise ValueError("a clip needs at least one frame")
    if num_available <= num_frames:
        return list(range(num_available))
    edges = np.linspace(0, num_available, num_frames + 1)
    if mode == "uniform":
        return [int((edges[i] + edges[i + 1]) / 2) for i in range(num_frames)]
    if mode == "random_segment":
        if rng is None:
            raise ValueError("random_segment sampling needs an rng")
        starts, ends = np.floor(edges[:-1]).astype(int), np.floor(edges[1:]).astype(int)
        return [int(rng.integers(s, max(e, s + 1))) for s, e in zip(starts, ends)]
    raise ValueError(f"unknown frame sampling mode {mode!r} (use 'uniform' or 'random_segment')")


def videoinfo_frame_boxes(clips: pa.Table) -> pa.Table:
    """Turn a ``VIDEOINFO_SCHEMA`` table into a ``FRAME_BOXES_SCHEMA`` table (one row per frame
    that carries boxes), boxes still in original pixels."""
    grouped: dict[tuple[str, int], list] = defaultdict(list)
    for clip_id, idxs, boxes in zip(
        clips.column("clip_id").to_pylist(),
        clips.column("box_frame_indices").to_pylist(),
        clips.column("boxes").to_pylist(),
    ):
        for idx, box in zip(idxs or [], boxes or []):
            grouped[(clip_id, int(idx))].append(box)
    keys = sorted(grouped)
    return pa.table(
        {
            "clip_id": [k[0] for k in keys],
            "frame_index": [k[1] for k in keys],
            "boxes": [grouped[k] for k in keys],
        },
        schema=FRAME_BOXES_SCHEMA,
    )


def frame_boxes_lookup(frame_boxes: pa.Table, frames: ManifestImages) -> dict[tuple[str, int], list]:
    """``(clip_id, frame_index) -> boxes in downloaded pixels`` from a ``FRAME_BOXES_SCHEMA``
    table in original pixels; frames that were not downloaded are skipped."""
    out: dict[tuple[str, int], list] = {}
    for clip_id, idx, boxes in zip(
        frame_boxes.column("clip_id").to_pylist(),
        frame_boxes.column("frame_index").to_pylist(),
        frame_boxes.column("boxes").to_pylist(),
    ):
        frame_id = make_frame_id(clip_id, int(idx))
        if frame_id in frames and boxes:
            out[(clip_id, int(idx))] = frames.to_downloaded(frame_id, boxes)
    return out


def _unpack_key(key: Any) -> tuple[int, int | None]:
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), None


class _ClipFrames:
    """Shared frame loading of the clip datasets: T frames, optional box crops, a padding mask."""

    frames: ManifestImages
    num_frames: int
    boxes: Mapping[tuple[str, int], list] | None
    box_padding: float
    box_jitter: float = 0.0

    def _load_frames(self, clip_id: str, available: list[int], positions: list[int], transform: Callable, seed: int | None):
        tensors = []
        for j, pos in enumerate(positions):
            idx = available[pos]
            image = self.frames.open(make_frame_id(clip_id, idx))
            if self.boxes is not None:
                box = union_box(self.boxes.get((clip_id, idx), []))
                if self.box_jitter > 0 and seed is not None:
                    box = jitter_box(box, self.box_jitter, np.random.default_rng((seed, 1 + j)))
                image = crop_box(image, box, self.box_padding)
            with seeded(None if seed is None else seed + 1 + j):
                tensors.append(transform(image))
        frames = torch.stack(tensors)
        mask = torch.zeros(self.num_frames, dtype=torch.bool)
        mask[: len(tensors)] = True
        if len(tensors) < self.num_frames:
            pad = frames.new_zeros((self.num_frames - len(tensors), *frames.shape[1:]))
            frames = torch.cat([frames, pad])
        return frames, mask


class ClipPairDataset(_ClipFrames):
    """Training pairs (clip, shop image) from a ``VIDEOINFO_SCHEMA`` table.

    A sample is a dict: ``frames`` ``[T, 3, S, S]`` float, ``frame_mask`` ``[T]`` bool (True for
    a real frame, False for padding when the clip has fewer than T downloaded frames), ``image``
    ``[3, S, S]``, ``label`` (index of the shop image in :attr:`image_ids`, so clips of the same
    product share it) and ``index``.

    Args:
        clips: the training clips (``VIDEOINFO_SCHEMA``; boxes in original pixels).
        frames: reader of the frame manifest.
        images: reader of the shop image manifest.
        num_frames: T.
        frame_transform: PIL -> tensor for frames.
        image_transform: PIL -> tensor for shop images.
        sampling: ``"random_segment"`` (training) or ``"uniform"`` (evaluation).
        crop_boxes: crop each frame to the union of its ground-truth boxes (full frame when it
            has none).
        box_padding: context kept around a box, as a fraction of its size.
        box_jitter: in seeded (training) samples, move and rescale each box at random by up to
            this share of its size (:func:`lpr_core.data.transforms.jitter_box`) before cropping.
    """

    def __init__(
        self,
        clips: pa.Table,
        frames: ManifestImages,
        images: ManifestImages,
        *,
        num_frames: int,
        frame_transform: Callable,
        image_transform: Callable,
        sampling: str = "random_segment",
        crop_boxes: bool = True,
        box_padding: float = 0.1,
        box_jitter: float = 0.0,
    ) -> None:
        self.frames, self.images = frames, images
        self.num_frames = num_frames
        self.frame_transform, self.image_transform = frame_transform, image_transform
        self.sampling = sampling
        self.box_padding, self.box_jitter = box_padding, box_jitter
        self.boxes = frame_boxes_lookup(videoinfo_frame_boxes(clips), frames) if crop_boxes else None
        self.dropped = {"image_missing": 0, "no_frames": 0}
        self.clip_ids: list[str] = []
        self.available: list[list[int]] = []
        pair_images: list[str] = []
        for clip_id, frame_indices, image_id in zip(
            clips.column("clip_id").to_pylist(),
            clips.column("frame_indices").to_pylist(),
            clips.column("image_id").to_pylist(),
        ):
            if image_id not in images:
                self.dropped["image_missing"] += 1
                continue
            available = [i for i in sorted(frame_indices or []) if make_frame_id(clip_id, int(i)) in frames]
            if not available:
                self.dropped["no_frames"] += 1
                continue
            self.clip_ids.append(clip_id)
            self.available.append(available)
            pair_images.append(image_id)
        if not self.clip_ids:
            raise ValueError(f"no usable training clip: {self.dropped} of {clips.num_rows} clips dropped")
        self.image_ids: list[str] = sorted(set(pair_images))
        label_of = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self.pair_image_ids = pair_images
        self.labels = [label_of[i] for i in pair_images]

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        index, seed = _unpack_key(key)
        clip_id, available = self.clip_ids[index], self.available[index]
        rng = np.random.default_rng(seed) if seed is not None else None
        mode = self.sampling if rng is not None else "uniform"
        positions = sample_frame_positions(len(available), self.num_frames, mode, rng)
        frames, mask = self._load_frames(clip_id, available, positions, self.frame_transform, seed)
        with seeded(seed):
            image = self.image_transform(self.images.open(self.pair_image_ids[index]))
        return {
            "frames": frames,
            "frame_mask": mask,
            "image": image,
            "label": torch.tensor(self.labels[index], dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
        }


class QueryClipDataset(_ClipFrames):
    """Query clips for evaluation: T uniformly spaced frames of each clip.

    Args:
        clip_ids: the query clips (e.g. the ``clip_id`` column of ``GT_IMAGES_SCHEMA``).
        frames: reader of the test frame manifest.
        num_frames: T.
        transform: PIL -> tensor.
        boxes: ``(clip_id, frame_index) -> boxes`` in downloaded pixels (ground truth via
            :func:`frame_boxes_lookup`, or detector output); frames are cropped to the union of
            their boxes. None: full frames.
        box_padding: context kept around a box.

    Clips without any downloaded frame cannot be embedded: they are left out and listed in
    :attr:`missing` (the evaluation counts them as misses).
    """

    def __init__(
        self,
        clip_ids: Sequence[str],
        frames: ManifestImages,
        *,
        num_frames: int,
        transform: Callable,
        boxes: Mapping[tuple[str, int], list] | None = None,
        box_padding: float = 0.1,
    ) -> None:
        self.frames, self.num_frames, self.transform = frames, num_frames, transform
        self.boxes, self.box_padding = boxes, box_padding
        self.clip_ids: list[str] = []
        self.available: list[list[int]] = []
        self.missing: list[str] = []
        for clip_id in clip_ids:
            available = frames.clip_frames(clip_id)
            if available:
                self.clip_ids.append(clip_id)
                self.available.append(available)
            else:
                self.missing.append(clip_id)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        index, _ = _unpack_key(key)
        available = self.available[index]
        positions = sample_frame_positions(len(available), self.num_frames, "uniform")
        frames, mask = self._load_frames(self.clip_ids[index], available, positions, self.transform, None)
        return {"frames": frames, "frame_mask": mask, "index": torch.tensor(index, dtype=torch.long)}


class GalleryImageDataset:
    """Shop images by id (gallery or training images): ``{"image", "index"}``.

    Images that were not downloaded are left out and listed in :attr:`missing`.
    """

    def __init__(self, image_ids: Sequence[str], images: ManifestImages, *, transform: Callable) -> None:
        self.images, self.transform = images, transform
        self.image_ids = [i for i in image_ids if i in images]
        self.missing = [i for i in image_ids if i not in images]

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        index, _ = _unpack_key(key)
        return {
            "image": self.transform(self.images.open(self.image_ids[index])),
            "index": torch.tensor(index, dtype=torch.long),
        }


class DetectionDataset:
    """Frames that carry product boxes, for the detector: ``(image [3,H,W] in [0,1], target)``.

    ``target`` holds ``boxes`` (``[N, 4]`` xyxy in downloaded pixels, a ``tv_tensors.BoundingBoxes``),
    ``labels`` (all 1: one class, "product") and ``frame_index`` of the dataset row.

    Args:
        frame_boxes: a ``FRAME_BOXES_SCHEMA`` table (boxes in original pixels); for training
            clips build it with :func:`videoinfo_frame_boxes`.
        frames: reader of the frame manifest.
        transform: a v2 transform of ``(image, target)``, e.g.
            :func:`lpr_core.data.transforms.build_detection_transform`.
    """

    def __init__(self, frame_boxes: pa.Table, frames: ManifestImages, *, transform: Callable) -> None:
        self.frames, self.transform = frames, transform
        lookup = frame_boxes_lookup(frame_boxes, frames)
        self.keys = sorted(lookup)
        self.boxes = [lookup[k] for k in self.keys]
        self.dropped = frame_boxes.num_rows - len(self.keys)
        if not self.keys:
            raise ValueError(f"no downloaded frame carries a box ({frame_boxes.num_rows} annotated frames)")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, key: Any):
        index, seed = _unpack_key(key)
        clip_id, idx = self.keys[index]
        frame_id = make_frame_id(clip_id, idx)
        image = self.frames.open(frame_id)
        w, h = image.size
        boxes = tv_tensors.BoundingBoxes(
            torch.tensor(self.boxes[index], dtype=torch.float32).reshape(-1, 4), format="XYXY", canvas_size=(h, w)
        )
        target = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64), "index": index}
        with seeded(seed):
            image, target = self.transform(image, target)
        return image, target


def detection_collate(batch: list) -> tuple[list, list]:
    """Collate detection samples into lists (torchvision detectors take lists of any size)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def build_dataloader(
    dataset: Any,
    *,
    batch_size: int,
    sampler: Any = None,
    num_workers: int = 0,
    device: str = "cpu",
    collate_fn: Callable | None = None,
    prefetch_factor: int = 4,
    persistent_workers: bool = True,
    drop_last: bool = False,
    generator: Any = None,
):
    """A DataLoader with the settings that keep a GPU fed, and safe CPU defaults.

    On CUDA: pinned memory; with workers, ``prefetch_factor`` batches per worker and persistent
    workers (no re-fork each epoch). ``num_workers=0`` loads in the main process. ``generator``
    seeds the workers' base seed (pass one so that creating the loader leaves torch's global RNG
    untouched).
    """
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["prefetch_factor"] = prefetch_factor
        kwargs["persistent_workers"] = persistent_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=str(device).startswith("cuda"),
        drop_last=drop_last,
        generator=generator,
        **kwargs,
    )
